"""Find and load the stories a pipeline trains and evaluates on.

``data`` is "generated" (the embedded default), a bAbI folder or task file, a CLUTRR config folder
or CSV file, a TRIP trip_eval folder or file, or a JSONL file of story records. ``eval`` names a
folder or file to evaluate on; when empty, the test split found in ``data`` is used, or a held-out
part of the training stories when there is none (for TRIP, which has one file of dev pairs: the
pairs of a ``heldout_fraction`` of the story groups, see ``trip.split_pairs``).

``validation_fraction`` > 0 carves a validation set out of the training stories (none of the
datasets has one that settings could be chosen on): whole groups (``meta["group"]`` where a loader
sets one, e.g. TRIP's story groups, else the story) go to it, so no group straddles the two.
``task_hooks_path`` names the evaluation hooks of the dataset's task (tasks.py).
"""

from __future__ import annotations

import random
from pathlib import Path

from nlprec.beliefs.babi import TASK_FILE, load_babi
from nlprec.beliefs.generator import GeneratorConfig, generate_stories
from nlprec.beliefs.records import Story, StoryError
from pydantic import BaseModel, Field

EVAL_SEED_OFFSET = 1000


class SourceConfig(BaseModel):
    model_config = {"extra": "forbid"}
    data: str = "generated"
    eval: str = ""
    tasks: list[int] | None = Field(None, description="bAbI tasks to use (default: all replayable)")
    generator: GeneratorConfig = GeneratorConfig()
    eval_generator: GeneratorConfig | None = Field(
        None, description="generated eval stories (default: the train generator with another seed)"
    )
    max_sentences: int = Field(60, ge=1, description="longer bAbI stories are cut into windows")
    train_limit: int | None = Field(None, ge=1, description="use only the first N training stories")
    eval_limit: int | None = Field(None, ge=1, description="evaluate on the first N stories")
    heldout_fraction: float = Field(0.2, gt=0, lt=1)
    trip_unknown_keep: float = Field(
        1.0, gt=0, le=1, description="TRIP: score this fraction of the unknown training labels"
    )
    validation_fraction: float = Field(
        0.0, ge=0, lt=1, description="carve this fraction of the training groups as validation"
    )
    seed: int = 0


# The evaluation hooks of each dataset format whose task needs its own (tasks.TaskHooks).
TASK_HOOKS = {"trip": "nlprec.beliefs.trip_task:TripHooks"}


def task_hooks_path(cfg: SourceConfig) -> str | None:
    """The task hooks ("module:Class") for ``cfg.data``; None: the generic metrics only."""
    if cfg.data == "generated":
        return None
    from nlprec.core.data import dataset_path

    return TASK_HOOKS.get(detect_format(dataset_path(cfg.data)))


def carve_validation(
    stories: list[Story], fraction: float, seed: int
) -> tuple[list[Story], list[Story]]:
    """(train, validation): a ``fraction`` of the story groups, drawn with ``seed``; at least
    one group stays on each side (no carve with fewer than two groups)."""
    groups = sorted({str(s.meta.get("group", s.story_id)) for s in stories})
    if fraction <= 0 or len(groups) < 2:
        return stories, []
    random.Random(seed).shuffle(groups)
    n_held = min(len(groups) - 1, max(1, int(round(fraction * len(groups)))))
    held = set(groups[:n_held])
    validation = [s for s in stories if str(s.meta.get("group", s.story_id)) in held]
    return [s for s in stories if str(s.meta.get("group", s.story_id)) not in held], validation


def detect_format(path: Path) -> str:
    if path.is_file():
        if path.name.startswith("qa") and path.suffix == ".txt":
            return "babi"
        if path.suffix == ".csv":
            return "clutrr"
        if "cloze" in path.name and path.suffix == ".jsonl":
            return "trip"
        if path.suffix == ".jsonl":
            return "records"
    elif path.is_dir():
        if any(path.glob("qa*_*.txt")):
            return "babi"
        if any(path.glob("*.csv")):
            return "clutrr"
        if any(path.glob("*cloze*.jsonl")):
            return "trip"
    raise StoryError(f"{path}: not a bAbI, CLUTRR, TRIP or story-record dataset")


def file_split(path: Path) -> str:
    """The split a single file holds: from a bAbI name, "test" for test.csv, else "train"."""
    match = TASK_FILE.match(path.name)
    if match:
        return "test" if match["split"] == "test" else "train"
    return "test" if path.stem == "test" else "train"


def _load_split(path: Path, split: str, cfg: SourceConfig) -> list[Story] | None:
    """Stories of ``split`` at ``path``, or None when the dataset has no such split."""
    kind = detect_format(path)
    if kind == "trip":
        from nlprec.beliefs.trip import load_trip

        return load_trip(
            path, split, cfg.heldout_fraction, cfg.seed, unknown_keep=cfg.trip_unknown_keep
        )
    if path.is_file() and file_split(path) != split:
        return None
    if kind == "babi":
        if path.is_file():
            return load_babi(path, split, cfg.tasks, cfg.max_sentences)
        try:
            return load_babi(path, split, cfg.tasks, cfg.max_sentences)
        except FileNotFoundError:
            return None
    if kind == "records":
        from nlprec.core.data import read_jsonl

        return [Story.from_dict(r) for r in read_jsonl(path)]
    if kind == "clutrr":
        from nlprec.beliefs.clutrr import load_clutrr

        return load_clutrr(path, split)
    raise StoryError(f"{path}: no loader for format {kind!r}")


def load_sources(cfg: SourceConfig) -> tuple[list[Story], list[Story], str]:
    """(train stories, eval stories, description of the eval set)."""
    if cfg.data == "generated":
        train = generate_stories(cfg.generator)
        eval_cfg = cfg.eval_generator or cfg.generator.model_copy(
            update={"seed": cfg.generator.seed + EVAL_SEED_OFFSET}
        )
        evaluation, described = generate_stories(eval_cfg), f"generated (seed {eval_cfg.seed})"
    else:
        from nlprec.core.data import dataset_path

        root = dataset_path(cfg.data)
        train = _load_split(root, "train", cfg) or []
        evaluation, described = None, ""
        if cfg.eval:
            eval_path = dataset_path(cfg.eval)
            evaluation = _load_split(eval_path, "test", cfg) or _load_split(eval_path, "train", cfg)
            described = str(eval_path)
        if evaluation is None:
            evaluation = _load_split(root, "test", cfg)
            described = f"test split of {root}"
            if detect_format(root) == "trip":
                described = (
                    f"TRIP groups held out ({cfg.heldout_fraction:.0%}, seed {cfg.seed}) of {root}"
                )
        if evaluation is None:
            train, evaluation = _hold_out(train, cfg)
            described = f"held-out {cfg.heldout_fraction:.0%} of {root}"
    if cfg.train_limit:
        train = train[: cfg.train_limit]
    if cfg.eval_limit:
        evaluation = evaluation[: cfg.eval_limit]
    if not evaluation:
        raise StoryError(f"no evaluation stories found for data={cfg.data!r} eval={cfg.eval!r}")
    return train, evaluation, described


def _hold_out(stories: list[Story], cfg: SourceConfig) -> tuple[list[Story], list[Story]]:
    order = list(range(len(stories)))
    random.Random(cfg.seed).shuffle(order)
    n_eval = max(1, int(round(cfg.heldout_fraction * len(stories))))
    held = set(order[:n_eval])
    return [s for i, s in enumerate(stories) if i not in held], [stories[i] for i in sorted(held)]
