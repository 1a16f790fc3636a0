"""nlprec retrieval and recommendation HTTP service: `create_app(config)`, `nlprec-serve`."""

from nlprec.service.app import create_app
from nlprec.service.config import ServiceConfig, load_config

__all__ = ["ServiceConfig", "create_app", "load_config"]
