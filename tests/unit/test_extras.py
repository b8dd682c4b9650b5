"""Each extra of pyproject.toml brings every package its code imports (issue 9, point 6: the
CLI's --api mode imported httpx, which only the `http` extra installed)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "syncworker"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _closure(requirements: list[str]) -> set[str]:
    """The distributions ``requirements`` install here, with their own dependencies (markers
    evaluated, extras of other packages left out); ``syncworker[a,b]`` adds those extras."""
    found: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        name = requirement.name.lower().replace("_", "-")
        if name == "syncworker":
            for extra in requirement.extras:
                todo.extend(Requirement(r) for r in PROJECT["optional-dependencies"][extra])
            continue
        if name in found:
            continue
        found.add(name)
        for sub in (Requirement(r) for r in metadata.requires(name) or []):
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return found


def _imported_distributions(paths: list[Path]) -> dict[str, set[str]]:
    """Third-party distributions each module imports (by top-level module name)."""
    owners = metadata.packages_distributions()
    out: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "syncworker":
                    continue
                for dist in owners.get(top, [top]):
                    out.setdefault(dist.lower().replace("_", "-"), set()).add(path.name)
    return out


@pytest.mark.parametrize(
    ("extra", "modules"),
    [
        ("api", ["api/*.py", "control.py"]),
        ("postgres", ["connectors/postgres/*.py", "coord/pg_lock.py"]),
        ("redis", ["connectors/redis/*.py", "coord/redis_lock.py"]),
        ("http", ["connectors/http/*.py"]),
        ("algolia", ["connectors/algolia/*.py"]),
    ],
)
def test_an_extra_installs_what_its_modules_import(extra: str, modules: list[str]) -> None:
    paths = [p for pattern in modules for p in sorted(SRC.glob(pattern))]
    assert paths
    installed = _closure([*PROJECT["dependencies"], *PROJECT["optional-dependencies"][extra]])
    missing = {
        dist: sorted(files)
        for dist, files in _imported_distributions(paths).items()
        if dist not in installed
    }
    assert missing == {}, f"pip install 'syncworker[{extra}]' leaves these out"


@pytest.mark.parametrize("extra", ["examples", "all"])
def test_the_umbrella_extras_cover_every_connector_the_examples_use(extra: str) -> None:
    installed = _closure(PROJECT["optional-dependencies"][extra])
    for needed in ("psycopg", "redis", "httpx", "algoliasearch", "fastapi", "uvicorn"):
        assert needed in installed, needed
