"""`nlprec-serve`: run the service with uvicorn.

    nlprec-serve [--config service.yaml] [--host H] [--port P] [--workers N] [--check]

The configuration comes from the file (or $NLPREC_SERVE_CONFIG), then NLPREC_SERVE_* variables,
then these flags; see `nlprec.service.config`. With nothing configured it serves
models:/ranking-demo@champion and models:/sessionrec-demo@champion (what `make demo` trains).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nlprec.service.app import RESOLVED_CONFIG_ENV
from nlprec.service.config import ConfigError, load_config


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="nlprec-serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML or TOML file (default: $NLPREC_SERVE_CONFIG)")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--ranking-model", help="SearchEngine folder or models:/ URI")
    parser.add_argument("--sessionrec-model", help="OnlineRecommender folder or models:/ URI")
    parser.add_argument("--state-dir", help="writable folder for index updates and events")
    parser.add_argument(
        "--check", action="store_true", help="print the resolved configuration and exit"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    flags = {
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "ranking_model": args.ranking_model,
        "sessionrec_model": args.sessionrec_model,
        "state_dir": args.state_dir,
    }
    try:
        config = load_config(args.config, overrides=flags)
    except ConfigError as error:
        print(f"nlprec-serve: {error}", file=sys.stderr)
        return 2
    if args.check:
        shown = config.model_dump(mode="json")
        for secret in ("token", "read_token"):
            shown[secret] = "***" if shown[secret] else None
        print(json.dumps(shown, indent=2))
        return 0

    import uvicorn

    os.environ[RESOLVED_CONFIG_ENV] = config.model_dump_json()
    uvicorn.run(
        "nlprec.service.app:app_from_environment",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level=config.log_level,
        timeout_graceful_shutdown=config.graceful_shutdown_s,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
