"""nlprec.core: the MLflow-tracked pipeline runner, model and data resolution shared by every package.

Importing it makes the process offline by default: Hugging Face libraries read local files only and
MLflow sends no telemetry. Set NLPREC_ALLOW_DOWNLOAD=1 to let hub names download (with network).
"""

import os

if os.environ.get("NLPREC_ALLOW_DOWNLOAD") != "1":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
