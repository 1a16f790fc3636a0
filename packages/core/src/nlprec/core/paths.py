"""Where nlprec keeps its state: `NLPREC_HOME` (default: the working directory)."""

import os
from pathlib import Path


def nlprec_home() -> Path:
    home = Path(os.environ.get("NLPREC_HOME") or Path.cwd()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_root() -> Path:
    return nlprec_home() / ".nlprec" / "cache"


def model_cache_root() -> Path:
    return nlprec_home() / ".nlprec" / "models"
