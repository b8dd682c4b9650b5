"""What a connector gives the conformance suite: a harness that builds it against its real
service (or the service's fake), feeds or reads that service directly, and declares what the
connector cannot do.

A declaration is a claim the suite checks, not a way out: the case a connector cannot meet
asserts the declared behaviour instead (JSONL declares ``rewrite = "append"``, and the
rewrite case asserts that a batch written twice is in the file twice). Every harness is
listed once in ``tests/conformance/registry.py``; every case then runs for it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from syncworker.core import registry
from syncworker.core.record import Record
from tests.conformance.exact import Payload

REPO = Path(__file__).resolve().parents[2]


@dataclass(slots=True)
class Context:
    """What a harness may use: a temporary directory, a fresh PostgreSQL database on the
    shared server and a Redis key prefix of this test's own."""

    tmp_path: Path
    pg_url: str
    redis_url: str
    redis_prefix: str


class Service:
    """A private server a harness's restart case stops and starts (never a shared one)."""

    url = ""
    """Where it answers (a URL with the password, when it has one); empty for a fake the
    harness addresses itself."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def destroy(self) -> None:
        """Stop for good and remove what it kept."""


@dataclass(slots=True)
class Expected:
    """What a source must deliver for one produced payload.

    ``exact``: ``Harness.message(record)`` is ``value``, exactly. ``bytes``: the record holds
    the payload's bytes (as text or base64), nothing replaced. ``refused``: the service itself
    refused the payload at the producer, with ``reason``: it never reaches the source.
    """

    payload: Payload
    how: Literal["exact", "bytes", "refused"]
    value: Any = None
    key: str | None = None
    reason: str = ""


class SourceHarness:
    """One source type under the conformance cases."""

    type_name: ClassVar[str]
    """The registry type (``registry.lookup("source", type_name)``)."""
    services: ClassVar[frozenset[str]] = frozenset()
    """Shared services it uses ("pg", "redis"): only their fixtures are set up for it."""
    deletes: ClassVar[bool] = False
    """True when the source delivers ``op="delete"`` records (a row gone); False: every record
    is an upsert, whatever the payload says (queues carry messages, not changes)."""
    restart: ClassVar[str | None] = None
    """How its service restarts for the reconnect case (``private_service``); ``None`` for an
    embedded store (a file): no server to restart."""
    credentials: ClassVar[bool] = False
    """True when its config can carry a secret (a password in the URL)."""
    reasons: ClassVar[Mapping[str, str]] = {}
    """Why a capability above is missing, by name."""
    crash_settings: ClassVar[dict[str, Any]] = {}
    """Config overrides so a dead worker's claim comes back within seconds."""
    restart_settings: ClassVar[dict[str, Any]] = {}
    """Config overrides for the reconnect case (a short connect timeout)."""
    refused_by_service: ClassVar[Mapping[str, str]] = {}
    """Poison payloads the service itself refuses from producers (by name, with why): the
    poison case checks the service does refuse them, and that the rest arrives exactly."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.target = ""

    def __repr__(self) -> str:
        return self.type_name

    async def prepare(self, target: str | None = None) -> None:
        """Point at ``target`` (a URL of a private server; default: the shared one) and create
        what producing needs (a queue table, an outbox)."""
        raise NotImplementedError

    def config(self, **overrides: Any) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, **overrides: Any) -> Any:
        config = {**self.config(), **overrides}
        cls = registry.lookup("source", self.type_name)
        return cls(cls.config_model.model_validate(config), name=f"conformance-{self.type_name}")

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        """Put ``payloads`` in the service, in order, as producers do; what each must become."""
        raise NotImplementedError

    async def produce_values(self, values: list[dict[str, Any]]) -> list[Expected]:
        return await self.produce([payload_of(value) for value in values])

    def message(self, record: Record) -> Any:
        """The produced value inside a delivered record (a row source wraps it in a row)."""
        return record.data

    async def delete(self, key: str) -> None:
        """Remove what was produced under ``key`` (sources with ``deletes`` only)."""
        raise NotImplementedError

    async def failed_by_source(self) -> dict[str, str]:
        """Records the source failed on its own (key -> reason), instead of delivering them."""
        return {}

    def private_service(self, password: str | None = None) -> Service:
        raise NotImplementedError(f"{self.type_name} has no server: {self.reasons['restart']}")

    async def open_private(self, password: str | None = None) -> Service:
        """A private server, started, with this harness pointed at it."""
        service = self.private_service(password)
        await service.start()
        await self.prepare(service.url)
        return service

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        """Config overrides carrying ``secret`` (a password in the URL), and the private
        server that checks it, if any (stopped by the case to provoke an error)."""
        raise NotImplementedError

    async def secret_failures(self, secret: str) -> list[BaseException]:
        """Fail to log in with ``secret`` in the config (a wrong password, a closed port):
        the errors raised."""
        raise NotImplementedError


class SinkHarness:
    """One sink type under the conformance cases."""

    type_name: ClassVar[str]
    services: ClassVar[frozenset[str]] = frozenset()
    deletes: ClassVar[Literal["remove", "tombstone"]] = "remove"
    """``remove``: a delete removes the key; ``tombstone``: the sink cannot remove what it
    wrote (append-only) and writes a delete marker after it."""
    rewrite: ClassVar[Literal["idempotent", "append", "idempotency_key"]] = "idempotent"
    """What writing a batch again does: ``idempotent`` changes nothing; ``append`` writes it a
    second time (append-only); ``idempotency_key`` sends it again under the same
    ``Idempotency-Key`` so the receiver can drop it."""
    restart: ClassVar[str | None] = None
    credentials: ClassVar[bool] = False
    read_back: ClassVar[str] = "from the service itself"
    """Where ``state``/``log`` read what was written (a fake's record, for a service that
    cannot be read back)."""
    reasons: ClassVar[Mapping[str, str]] = {}
    restart_settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.target = ""

    def __repr__(self) -> str:
        return self.type_name

    async def prepare(self, target: str | None = None) -> None:
        raise NotImplementedError

    def config(self, **overrides: Any) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, **overrides: Any) -> Any:
        config = {**self.config(), **overrides}
        cls = registry.lookup("sink", self.type_name)
        return cls(cls.config_model.model_validate(config), name=f"conformance-{self.type_name}")

    async def log(self) -> list[tuple[str, str, Any]] | None:
        """Every write as the service received it, in order: ``(op, key, data)``; ``None``
        when the service keeps only the current state."""
        return None

    async def state(self) -> dict[str, Any]:
        """The current data by key, read from the service (numbers exact); for an append-only
        sink the last entry per key, a delete marker removing it."""
        entries = await self.log()
        assert entries is not None
        current: dict[str, Any] = {}
        for op, key, data in entries:
            if op == "delete":
                current.pop(key, None)
            else:
                current[key] = data
        return current

    async def start(self) -> None:
        """Start what the sink talks to, when the harness runs it (a fake)."""

    async def stop(self) -> None:
        """Stop it for good."""

    def private_service(self, password: str | None = None) -> Service:
        raise NotImplementedError(f"{self.type_name} has no server: {self.reasons['restart']}")

    async def open_private(self) -> Service:
        """A private server (or the harness's own fake), running, with the harness pointed
        at it."""
        service = self.private_service()
        await service.start()
        await self.prepare(service.url or None)
        return service

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        """A config carrying ``secret`` (a password in the URL, a token in headers...)."""
        raise NotImplementedError

    async def secret_failures(self, secret: str) -> list[BaseException]:
        """Make the sink fail with ``secret`` in its config (a refused login, an echoing
        receiver...): the errors it raised."""
        return []

    def secret_trigger(self) -> Record | None:
        """A record the service refuses with an answer quoting the request (its secret
        headers), so the refusal reaches the dead letters."""
        return None


def payload_of(value: dict[str, Any]) -> Payload:
    key = value.get("id")
    return Payload(
        f"value_{key}",
        json.dumps(value).encode(),
        value,
        True,
        key if isinstance(key, str) else None,
    )


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


PYTHON = sys.executable
