"""Declared = imported: each distribution's pyproject lists exactly the third-party
distributions its modules import.

An import inside the package that no declaration covers works only by luck (another package
pulled it in); a declaration nothing imports is a dependency users install for nothing. Imports
of optional extras are checked against the extras, and a runtime dependency used without an
import (a backend loaded by another library) is named, with its reason, in
`[tool.nlprec.dependencies] used_without_import` of that pyproject. An optional extra that is not
installed here is matched by name, or through `[tool.nlprec.dependencies] modules` where its
import name differs from its distribution name.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECTS = sorted([*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("services/*/pyproject.toml")])


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0])


def imported_top_level_modules(source_root: Path) -> dict[str, Path]:
    """Top-level module name -> the first file that imports it (absolute imports only)."""
    found: dict[str, Path] = {}
    for path in sorted(source_root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def distributions_of(module: str) -> set[str]:
    return {normalise(d) for d in importlib.metadata.packages_distributions().get(module, [])}


def declared(pyproject: dict) -> tuple[set[str], set[str]]:
    project = pyproject["project"]
    runtime = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        requirement_name(r)
        for requirements in project.get("optional-dependencies", {}).values()
        for r in requirements
    }
    return runtime, extras


def first_party(module: str) -> bool:
    return module == "nlprec"


@pytest.mark.parametrize("pyproject_path", PYPROJECTS, ids=lambda p: p.parent.name)
def test_every_import_is_declared_and_every_declaration_imported(pyproject_path: Path) -> None:
    pyproject = tomllib.loads(pyproject_path.read_text())
    runtime, extras = declared(pyproject)
    settings = pyproject.get("tool", {}).get("nlprec", {}).get("dependencies", {})
    used_without_import = {normalise(name) for name in settings.get("used_without_import", {})}
    module_names = {module: normalise(dist) for module, dist in settings.get("modules", {}).items()}
    imports = imported_top_level_modules(pyproject_path.parent / "src")

    undeclared: list[str] = []
    imported_distributions: set[str] = set()
    for module, where in sorted(imports.items()):
        if module in sys.stdlib_module_names or first_party(module):
            continue
        candidates = distributions_of(module) or {module_names.get(module, normalise(module))}
        covering = candidates & (runtime | extras)
        if covering:
            imported_distributions |= covering
        else:
            undeclared.append(f"{module} (imported in {where.relative_to(ROOT)})")
    first_party_distributions = {d for d in runtime if d.startswith("nlprec-")}
    unused = runtime - imported_distributions - used_without_import - first_party_distributions

    assert not undeclared, f"{pyproject_path.relative_to(ROOT)} does not declare: {undeclared}"
    assert not unused, f"{pyproject_path.relative_to(ROOT)} declares but never imports: {sorted(unused)}"


def test_the_checker_sees_an_undeclared_import(tmp_path: Path) -> None:
    source = tmp_path / "src" / "nlprec" / "toy"
    source.mkdir(parents=True)
    (source / "mod.py").write_text("import numpy\nimport json\nfrom nlprec.core import spec\n")
    imports = imported_top_level_modules(tmp_path / "src")
    assert set(imports) == {"numpy", "json", "nlprec"}
    assert "numpy" in distributions_of("numpy")
    assert not distributions_of("numpy") & {"scipy"}
