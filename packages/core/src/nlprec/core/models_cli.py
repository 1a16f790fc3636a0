"""`nlprec models list | compare | promote`: the registry by hand.

    nlprec models list [NAME]                  versions, aliases, flavor, smoke, recorded metrics
    nlprec models compare NAME A B             two versions (numbers or @aliases) metric by metric
    nlprec models promote NAME VERSION         point @champion (or --alias) at VERSION
"""

from __future__ import annotations

import argparse
from typing import Any

from nlprec.core.errors import UserError
from nlprec.core.registry import CHAMPION, TAG


def add_parser(sub: Any) -> None:
    models = sub.add_parser("models", help="list, compare and promote registered models")
    action = models.add_subparsers(dest="models_command", required=True)
    listing = action.add_parser("list", help="registered models and their versions")
    listing.add_argument("name", nargs="?", help="one model name (default: all)")
    compare = action.add_parser("compare", help="two versions side by side")
    compare.add_argument("name")
    compare.add_argument("a", help="a version number or an alias (@champion)")
    compare.add_argument("b", help="a version number or an alias (@challenger)")
    promote = action.add_parser("promote", help="point an alias (default @champion) at a version")
    promote.add_argument("name")
    promote.add_argument("version", help="a version number or an alias (@challenger)")
    promote.add_argument("--alias", default=CHAMPION)


def run(args: argparse.Namespace) -> int:
    import mlflow
    from nlprec.core.tracking import use_tracking_store

    use_tracking_store()
    client = mlflow.MlflowClient()
    command = {"list": _list, "compare": _compare, "promote": _promote}[args.models_command]
    return command(client, args)


def _version(client: Any, name: str, ref: str) -> Any:
    try:
        if ref.startswith("@"):
            return client.get_model_version_by_alias(name, ref[1:])
        return client.get_model_version(name, str(int(ref)))
    except ValueError:
        raise UserError(f"{ref!r} is neither a version number nor an @alias") from None
    except Exception:  # MLflow's RestException for a missing name, version or alias
        raise UserError(f"models:/{name} has no version {ref}") from None


def _metrics(version: Any) -> dict[str, str]:
    prefix = f"{TAG}metric."
    return {k.removeprefix(prefix): v for k, v in version.tags.items() if k.startswith(prefix)}


def _list(client: Any, args: argparse.Namespace) -> int:
    models = [client.get_registered_model(args.name)] if args.name else client.search_registered_models()
    if not models:
        print("no registered models")
    for model in models:
        print(model.name)
        aliases: dict[str, list[str]] = {}
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(str(number), []).append(f"@{alias}")
        versions = sorted(client.search_model_versions(f"name = '{model.name}'"), key=lambda v: -int(v.version))
        for version in versions:
            tags = version.tags
            metrics = " ".join(f"{k}={float(v):.4f}" for k, v in sorted(_metrics(version).items()))
            smoke = " smoke" if tags.get(f"{TAG}smoke") == "true" else ""
            print(
                f"  v{version.version:<4} {' '.join(aliases.get(str(version.version), [])):<24}"
                f"{tags.get(f'{TAG}flavor', '?'):<22}{smoke:<7}{metrics}"
            )
    return 0


def _compare(client: Any, args: argparse.Namespace) -> int:
    a, b = _version(client, args.name, args.a), _version(client, args.name, args.b)
    ma, mb = _metrics(a), _metrics(b)
    same = a.tags.get(f"{TAG}evaluation") == b.tags.get(f"{TAG}evaluation")
    print(f"{args.name}: v{a.version} ({args.a}) vs v{b.version} ({args.b})")
    if not same:
        print("  (measured on different evaluations: compare with care)")
    for key in sorted(set(ma) | set(mb)):
        va, vb = ma.get(key), mb.get(key)
        delta = f"{float(vb) - float(va):+.4f}" if va is not None and vb is not None else ""
        print(f"  {key:<32} {va or '-':>10} {vb or '-':>10} {delta:>10}")
    if not ma and not mb:
        print("  no recorded metrics (a pipeline's promote step records them)")
    return 0


def _promote(client: Any, args: argparse.Namespace) -> int:
    version = _version(client, args.name, args.version)
    client.set_registered_model_alias(args.name, args.alias, version.version)
    client.set_model_version_tag(args.name, version.version, f"{TAG}promoted", "by hand (nlprec models promote)")
    print(f"models:/{args.name}@{args.alias} -> version {version.version}")
    return 0
