"""Connectors and processors by type name.

Each package under ``syncworker.connectors`` (and ``syncworker.processors``) declares what it
provides in its ``__init__`` as ``CONNECTORS = {"source:redis_list": "module:Class", ...}``,
without importing its third-party client, so a missing extra only matters when its connector is
used. Third parties add theirs through the ``syncworker.connectors`` entry-point group, whose
entries point at a module with the same ``CONNECTORS`` mapping. Adding a connector touches no
other module.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Literal

from syncworker.errors import ConfigError

Kind = Literal["source", "sink", "processor"]

_table: dict[str, str] | None = None
_extra: dict[str, Any] = {}


def _discover() -> dict[str, str]:
    table: dict[str, str] = {}
    for package_name in ("syncworker.connectors", "syncworker.processors"):
        package = importlib.import_module(package_name)
        table.update(getattr(package, "CONNECTORS", {}))
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package_name}.{info.name}")
            table.update(getattr(module, "CONNECTORS", {}))
    for entry in entry_points(group="syncworker.connectors"):
        table.update(getattr(entry.load(), "CONNECTORS", {}))
    return table


def register(kind: Kind, type_name: str, cls: Any) -> None:
    """Register a class directly (tests, embedding programs). It must have ``config_model``."""
    _extra[f"{kind}:{type_name}"] = cls


def names(kind: Kind) -> list[str]:
    """Every type name known for ``kind``."""
    global _table
    if _table is None:
        _table = _discover()
    prefix = f"{kind}:"
    found = {k[len(prefix) :] for k in [*_table, *_extra] if k.startswith(prefix)}
    return sorted(found)


def lookup(kind: Kind, type_name: str) -> Any:
    """The class registered as ``type_name``; ``ConfigError`` naming the known ones if none."""
    global _table
    full = f"{kind}:{type_name}"
    if full in _extra:
        return _extra[full]
    if _table is None:
        _table = _discover()
    target = _table.get(full)
    if target is None:
        known = ", ".join(names(kind)) or "none"
        raise ConfigError(f"unknown {kind} type {type_name!r}; expected one of: {known}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if (exc.name or "").startswith("syncworker"):
            raise  # our own module is missing: a packaging bug, not a missing extra
        raise ConfigError(
            f"{kind} type {type_name!r} needs a package that is not installed ({exc.name}); "
            f"install the matching extra: pip install -e '.[{_extra_for(module_name)}]' in the "
            "checkout (make install installs every one)"
        ) from exc
    return getattr(module, attr)


def _extra_for(module_name: str) -> str:
    parts = module_name.split(".")
    return parts[2] if len(parts) > 2 else "all"
