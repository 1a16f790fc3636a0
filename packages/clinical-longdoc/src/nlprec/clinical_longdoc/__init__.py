"""Clinical long-document encoders: longify a short BERT/RoBERTa encoder to Longformer, BigBird or
full SDPA attention, fine-tune it against truncation and chunking baselines (see README.md).

The names below are imported on first use, so `nlprec-longdoc --help` does not load torch.
"""

from importlib import import_module

_EXPORTS = {
    "LongEncoder": "nlprec.clinical_longdoc.encoder",
    "longify": "nlprec.clinical_longdoc.longify",
    "longify_to_dir": "nlprec.clinical_longdoc.longify",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
