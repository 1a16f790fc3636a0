"""bAbI in its original text format -> Story records with belief labels from the world model.

File format: numbered lines; numbering restarts at 1 with each story; a question line is
``N question?<TAB>answer<TAB>supporting line numbers``. Belief labels come from replaying the
statements (see world.py). Stories longer than ``max_sentences`` statements are cut into
consecutive windows that are replayed independently, so every label is determined by the text the
model sees; the gold QA answers stay bAbI's own.
"""

from __future__ import annotations

import re
from pathlib import Path

from nlprec.beliefs.qa import question_kind
from nlprec.beliefs.records import Question, Story, StoryError
from nlprec.beliefs.world import UnsupportedSentence, Vocabulary, replay

TASK_FILE = re.compile(r"^qa(?P<task>\d+)_(?P<name>[a-z-]+)_(?P<split>train|test|valid)\.txt$")
#: tasks whose statements the world model replays completely
SUPPORTED_TASKS = (1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13)


def read_raw_stories(path: Path) -> list[list[tuple[str, ...]]]:
    """Each story as a list of ("s", sentence) or ("q", question, answer) tuples."""
    stories: list[list[tuple[str, ...]]] = []
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        number, _, rest = line.partition(" ")
        if not number.isdigit():
            raise StoryError(f"{path}:{line_no}: line does not start with a sentence number")
        if number == "1" or not stories:
            stories.append([])
        if "\t" in rest:
            question, answer, *_ = rest.split("\t")
            stories[-1].append(("q", question.strip(), answer.strip()))
        else:
            stories[-1].append(("s", rest.strip()))
    return stories


def _question_vocab(questions: list[Question]) -> Vocabulary:
    """Entities a question names (e.g. a location never visited) also get propositions."""
    vocab = Vocabulary()
    for q in questions:
        parsed = question_kind(q.text)
        if parsed is None:
            continue
        slots = parsed[1]
        vocab.add(vocab.persons, slots.get("person"))
        vocab.add(vocab.locations, slots.get("loc"))
        vocab.add(vocab.objects, slots.get("obj"))
    return vocab


def build_story(story_id: str, items: list[tuple[str, ...]], meta: dict) -> Story:
    sentences: list[str] = []
    questions: list[Question] = []
    for item in items:
        if item[0] == "s":
            sentences.append(item[1])
        elif not sentences:
            raise StoryError(f"story {story_id!r}: question {item[1]!r} before any sentence")
        else:
            questions.append(Question(text=item[1], answer=item[2], breakpoint=len(sentences) - 1))
    if not sentences:
        raise StoryError(f"story {story_id!r}: empty story")
    try:
        _, propositions, labels, constraints = replay(sentences, _question_vocab(questions))
    except UnsupportedSentence as error:
        raise StoryError(f"story {story_id!r}: {error}") from error
    meta = {**meta, "length": len(sentences)}
    return Story(story_id, sentences, propositions, labels, constraints, questions, meta)


def _windows(items: list[tuple[str, ...]], max_sentences: int) -> list[list[tuple[str, ...]]]:
    windows: list[list[tuple[str, ...]]] = [[]]
    count = 0
    for item in items:
        if item[0] == "s" and count == max_sentences:
            windows.append([])
            count = 0
        windows[-1].append(item)
        count += item[0] == "s"
    return windows


def load_babi_file(path: Path, max_sentences: int = 60, limit: int | None = None) -> list[Story]:
    """Stories of one bAbI file; ids are ``qa<task>/<split>/<n>[.w<k>]``."""
    match = TASK_FILE.match(path.name)
    if match is None:
        raise StoryError(f"{path}: not a bAbI task file (expected qa<N>_<name>_<split>.txt)")
    task, split = int(match["task"]), match["split"]
    if task not in SUPPORTED_TASKS:
        raise StoryError(
            f"{path}: bAbI task {task} is not replayable by the world model "
            f"(supported: {', '.join(map(str, SUPPORTED_TASKS))})"
        )
    stories: list[Story] = []
    for n, items in enumerate(read_raw_stories(path)[:limit]):
        windows = _windows(items, max_sentences)
        for k, window in enumerate(windows):
            story_id = f"qa{task}/{split}/{n}" + (f".w{k}" if len(windows) > 1 else "")
            # windows of one story stay together in a validation carve (sources.py)
            meta = {"task": task, "split": split, "group": f"qa{task}/{split}/{n}"}
            stories.append(build_story(story_id, window, meta))
    return stories


def find_task_files(root: Path, split: str, tasks: list[int] | None = None) -> list[Path]:
    """Task files of ``split`` in a folder (or the one file given), filtered to ``tasks``."""
    if root.is_file():
        return [root]
    if not root.exists():
        raise FileNotFoundError(f"bAbI data not found at {root}")
    files = []
    for path in sorted(root.glob(f"qa*_{split}.txt")):
        match = TASK_FILE.match(path.name)
        if match and (tasks is None or int(match["task"]) in tasks):
            files.append(path)
    return sorted(files, key=lambda p: int(TASK_FILE.match(p.name)["task"]))


def load_babi(
    root: Path,
    split: str,
    tasks: list[int] | None = None,
    max_sentences: int = 60,
    limit_per_task: int | None = None,
) -> list[Story]:
    files = find_task_files(Path(root), split, tasks)
    if not files:
        raise FileNotFoundError(f"no bAbI {split} files for tasks {tasks} under {root}")
    stories: list[Story] = []
    for path in files:
        stories += load_babi_file(path, max_sentences, limit_per_task)
    return stories
