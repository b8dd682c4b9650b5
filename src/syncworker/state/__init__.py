"""The state store: checkpoints, run log, error log, dead letters."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from syncworker.errors import ConfigError
from syncworker.state.base import DeadLetter, ErrorRecord, RunRecord, StateStore
from syncworker.state.sqlite import SqliteStateStore

DEFAULT_STATE_URL = "sqlite:///.syncworker/state.db"


def sqlite_path(url: str) -> Path:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise ConfigError(f"expected a state URL like sqlite:///PATH, got {url!r}")
    return Path(parts.path[1:])


def state_store_from_url(url: str) -> StateStore:
    """The store a ``state:`` URL names."""
    return SqliteStateStore(sqlite_path(url))


__all__ = [
    "DEFAULT_STATE_URL",
    "DeadLetter",
    "ErrorRecord",
    "RunRecord",
    "SqliteStateStore",
    "StateStore",
    "sqlite_path",
    "state_store_from_url",
]
