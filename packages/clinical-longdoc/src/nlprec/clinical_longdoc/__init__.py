"""Clinical long-document encoders: longify a short BERT/RoBERTa encoder to Longformer, BigBird or
full SDPA attention, fine-tune it against truncation and chunking baselines (see README.md)."""

from nlprec.clinical_longdoc.encoder import LongEncoder
from nlprec.clinical_longdoc.longify import longify, longify_to_dir

__all__ = ["LongEncoder", "longify", "longify_to_dir"]
