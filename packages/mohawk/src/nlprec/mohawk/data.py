"""Text corpora, a byte-level BPE tokenizer trained on them, and token batches.

Corpora: ``stdlib`` (the embedded default: source and docstrings of a fixed list of Python
standard-library modules, present on every machine), ``tinyshakespeare`` and ``wikitext-2`` from
the data root (text/...), or a path to any UTF-8 text file. Each gives a training text and a
held-out text. The token stream is a single 1-D tensor: the language-model data is one long
sequence cut into random windows, so no per-example table is needed (and the GPU machine has no
``datasets``).
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# A fixed, sorted list so the embedded corpus is the same wherever this Python version runs.
STDLIB_MODULES = (
    "argparse.py",
    "bisect.py",
    "calendar.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "fractions.py",
    "functools.py",
    "heapq.py",
    "inspect.py",
    "pprint.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "typing.py",
)
HELDOUT_FRACTION = 0.1
NAMED_CORPORA = ("stdlib", "tinyshakespeare", "wikitext-2")


def stdlib_text(max_chars: int | None = None) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = [(root / name).read_text(encoding="utf-8") for name in STDLIB_MODULES]
    text = "\n\n".join(parts)
    return text if max_chars is None else text[:max_chars]


def _split_tail(text: str) -> tuple[str, str]:
    cut = int(len(text) * (1 - HELDOUT_FRACTION))
    return text[:cut], text[cut:]


def load_corpus(
    name: str, data_root: str | Path | None = None, max_chars: int | None = None
) -> tuple[str, str]:
    """(train text, held-out text). Named corpora under ``data_root``; else a file path.

    tinyshakespeare and plain files: the last 10% is held out. wikitext-2: valid.txt trains,
    test.txt is held out (train.txt is not in the shared snapshot).
    """
    if name == "stdlib":
        return _split_tail(stdlib_text(max_chars))
    if name in ("tinyshakespeare", "wikitext-2"):
        if data_root is None:
            raise ValueError(f"corpus {name!r} needs a data root (set NLPREC_DATA)")
        folder = Path(data_root) / "text" / name
        if not folder.is_dir():
            raise FileNotFoundError(f"corpus {name!r} expected at {folder}")
        if name == "tinyshakespeare":
            train, heldout = _split_tail((folder / "input.txt").read_text(encoding="utf-8"))
        else:
            train = (folder / "valid.txt").read_text(encoding="utf-8")
            heldout = (folder / "test.txt").read_text(encoding="utf-8")
    else:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"corpus {name!r} is neither one of {NAMED_CORPORA} nor a file")
        train, heldout = _split_tail(path.read_text(encoding="utf-8"))
    if max_chars is not None:
        train, heldout = train[:max_chars], heldout[: max(1, int(max_chars * HELDOUT_FRACTION))]
    return train, heldout


def train_tokenizer(text: str, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style) fitted to ``text``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(text.splitlines(keepends=True), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def load_tokenizer(path) -> PreTrainedTokenizerFast:
    """A saved (fast) Hugging Face tokenizer, e.g. the one beside a pretrained teacher."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"no saved tokenizer at {path}")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"the tokenizer at {path} is not a fast (Rust) tokenizer")
    return tokenizer


def encode(
    tokenizer: PreTrainedTokenizerFast, text: str, lines_per_piece: int = 200
) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids (encoded in pieces of lines, in parallel)."""
    lines = text.splitlines(keepends=True)
    pieces = [
        "".join(lines[i : i + lines_per_piece]) for i in range(0, len(lines), lines_per_piece)
    ]
    encoded = tokenizer.backend_tokenizer.encode_batch(pieces, add_special_tokens=False)
    return torch.tensor([t for e in encoded for t in e.ids], dtype=torch.long)


def random_windows(
    tokens: torch.Tensor, batch_size: int, length: int, generator: torch.Generator
) -> torch.Tensor:
    """batch_size random windows of ``length`` tokens: (batch_size, length)."""
    if tokens.numel() < length + 1:
        raise ValueError(f"corpus of {tokens.numel()} tokens is shorter than a window of {length}")
    starts = torch.randint(0, tokens.numel() - length, (batch_size,), generator=generator)
    return torch.stack([tokens[s : s + length] for s in starts.tolist()])


def token_batches(
    tokens: torch.Tensor, batch_size: int, length: int, budget: int, seed: int
) -> Iterator[torch.Tensor]:
    """Random windows until ``budget`` tokens have been served (at least one batch)."""
    generator = torch.Generator().manual_seed(seed)
    steps = max(1, budget // (batch_size * length))
    for _ in range(steps):
        yield random_windows(tokens, batch_size, length, generator)


def num_steps(budget: int, batch_size: int, length: int) -> int:
    return max(1, budget // (batch_size * length))


def heldout_windows(
    tokens: torch.Tensor, length: int, max_windows: int | None = None
) -> torch.Tensor:
    """Non-overlapping windows of ``length`` tokens covering the held-out stream: (n, length)."""
    count = tokens.numel() // length
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise ValueError(f"held-out text of {tokens.numel()} tokens is shorter than {length}")
    return tokens[: count * length].view(count, length)
