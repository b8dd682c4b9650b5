"""The harnesses of the sinks: jsonl, sqlite, postgres, webhook, algolia."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from syncworker.core.record import Record
from tests.conformance.exact import parse_exact
from tests.conformance.harness import Service, SinkHarness
from tests.conformance.services import CLOSED_PORT
from tests.conformance.sources import PostgresService
from tests.fakes.algolia import AlgoliaServer
from tests.fakes.local_server import LocalServer
from tests.fakes.webhook_server import WebhookServer

EMBEDDED = {
    "restart": "embedded: a local file, no server to restart",
    "credentials": "a local file: nothing to log in with",
}


class JsonlHarness(SinkHarness):
    type_name = "jsonl"
    deletes = "tombstone"
    rewrite = "append"
    reasons: ClassVar[dict[str, str]] = {
        **EMBEDDED,
        "deletes": "append-only: a delete is a line {key, op: delete} after the record's lines",
        "rewrite": "append-only: a batch written again is in the file again",
    }

    @property
    def directory(self) -> Path:
        return self.ctx.tmp_path / "jsonl"

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or str(self.directory)

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "jsonl",
            "path": self.target,
            "file": "out_{stream}.jsonl",
            "fields": "record",
            **overrides,
        }

    def lines(self) -> list[bytes]:
        """Every complete line of every file (a torn last line is not one yet)."""
        found: list[bytes] = []
        for path in sorted(Path(self.target).glob("*.jsonl")):
            content = path.read_bytes()
            found += content.splitlines(keepends=True)
        return [line for line in found if line.endswith(b"\n")]

    def torn(self) -> list[str]:
        return [
            path.name
            for path in Path(self.target).glob("*.jsonl")
            if path.stat().st_size and not path.read_bytes().endswith(b"\n")
        ]

    async def log(self) -> list[tuple[str, str, Any]] | None:
        entries = [parse_exact(line) for line in await asyncio.to_thread(self.lines)]
        return [(entry["op"], entry["key"], entry["data"]) for entry in entries]


class SqliteSinkHarness(SinkHarness):
    type_name = "sqlite"
    reasons: ClassVar[dict[str, str]] = dict(EMBEDDED)

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or str(self.ctx.tmp_path / "sink.db")

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"type": "sqlite", "path": self.target, "table": "records", **overrides}

    async def state(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            if not Path(self.target).exists():
                return {}
            with sqlite3.connect(self.target, timeout=10) as conn:
                try:
                    rows = conn.execute("SELECT key, data FROM records").fetchall()
                except sqlite3.OperationalError:  # not created yet
                    return {}
            return {key: parse_exact(data) for key, data in rows}

        return await asyncio.to_thread(read)


class PostgresSinkHarness(SinkHarness):
    type_name = "postgres"
    services = frozenset({"pg"})
    restart = "a private PostgreSQL cluster (pg_ctl stop -m fast, then start)"
    credentials = True
    restart_settings: ClassVar[dict[str, Any]] = {"connect_timeout": "2s"}

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.ctx.pg_url

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"type": "postgres", "url": self.target, "table": "records", **overrides}

    async def state(self) -> dict[str, Any]:
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as conn:
            cursor = await conn.execute("SELECT to_regclass('records') IS NOT NULL")
            exists = await cursor.fetchone()
            if not exists or not exists[0]:
                return {}
            cursor = await conn.execute("SELECT key, data::text FROM records")
            return {key: parse_exact(data) for key, data in await cursor.fetchall()}

    def private_service(self, password: str | None = None) -> Service:
        return PostgresService()

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        # Trust authentication ignores the password: it only has to stay out of every line.
        return self.config(url=self.target.replace("postgres@", f"postgres:{secret}@", 1))

    async def secret_failures(self, secret: str) -> list[BaseException]:
        url = f"postgresql://postgres:{secret}@127.0.0.1:{CLOSED_PORT}/nowhere"
        sink = self.build(url=url, connect_timeout="2s")
        errors: list[BaseException] = []
        try:
            await sink.open()
        except Exception as exc:
            errors.append(exc)
        finally:
            await sink.close()
        return errors


class FakeService(Service):
    """A fake server stopped and started again on the same port, keeping what it received."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.running = True  # the harness started it

    async def start(self) -> None:
        if not self.running:
            await self.server.start()
            self.running = True

    async def stop(self) -> None:
        await self.server.stop()
        self.running = False


class WebhookHarness(SinkHarness):
    """The fake receiver keeps every request: the read-back is what it was sent."""

    type_name = "webhook"
    deletes = "tombstone"
    rewrite = "idempotency_key"
    restart = "the fake receiver, stopped and started again on the same port"
    credentials = True
    read_back = "the fake receiver's record of every request: a webhook cannot be read back"
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a POST cannot take back an earlier one: a delete is a message {key, op}",
        "rewrite": "a redelivered batch is POSTed again with the same Idempotency-Key",
    }
    marker = "conformance-reject-me"

    async def start(self) -> None:
        self.server = WebhookServer()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.server.url

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "webhook",
            "url": self.target,
            "body": "records",
            "timeout": "2s",
            **overrides,
        }

    async def log(self) -> list[tuple[str, str, Any]] | None:
        entries: list[tuple[str, str, Any]] = []
        for request in self.server.accepted:
            for item in parse_exact(request.body)["records"]:
                entries.append((item["op"], item["key"], item["data"]))
        return entries

    def private_service(self, password: str | None = None) -> Service:
        return FakeService(self.server)

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        self.server.reject_marker = self.marker
        self.server.echo_headers = True
        return self.config(
            url=f"{self.server.url}?token={secret}",
            headers={
                "Authorization": f"Bearer {secret}",
                "X-Auth": secret,
                "X-Signature": secret,
                "Api-Auth": secret,
            },
            signing_secret=secret,
        )

    def secret_trigger(self) -> Record | None:
        return Record(key="p-echo", data={"text": self.marker}, stream="in")

    async def secret_failures(self, secret: str) -> list[BaseException]:
        sink = self.build(**(await self.secret_setup(secret)))
        self.server.auth_status = 401
        errors: list[BaseException] = []
        try:
            await sink.open()
            await sink.write([Record(key="k", data={"v": 1}, stream="in")])
        except Exception as exc:
            errors.append(exc)
        finally:
            self.server.auth_status = None
            await sink.close()
        return errors


INDEX = "conformance"


class AlgoliaHarness(SinkHarness):
    """The fake keeps objects as Algolia would (numbers read as JSON numbers)."""

    type_name = "algolia"
    restart = "the fake Algolia, stopped and started again on the same port"
    credentials = True
    read_back = "the fake Algolia's objects, kept as Algolia keeps them (numbers as JSON)"

    async def start(self, api_key: str = "conformance-admin-key") -> None:
        self.server = AlgoliaServer(api_key=api_key)
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def prepare(self, target: str | None = None) -> None:
        self.target = target or self.server.url

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {
            "type": "algolia",
            "app_id": self.server.app_id,
            "api_key": self.server.api_key,
            "hosts": [self.target],
            "indexes": {"in": {"index": INDEX}},
            "timeout": "2s",
            "connect_timeout": "1s",
            **overrides,
        }

    async def state(self) -> dict[str, Any]:
        return {
            object_id: {k: v for k, v in obj.items() if k != "objectID"}
            for object_id, obj in self.server.objects(INDEX).items()
        }

    def private_service(self, password: str | None = None) -> Service:
        return FakeService(self.server)

    async def secret_setup(self, secret: str) -> dict[str, Any]:
        await self.stop()
        await self.start(api_key=secret)
        await self.prepare()
        self.server.reject_object_ids = {"p-echo"}
        self.server.echo_headers = True
        return self.config()

    def secret_trigger(self) -> Record | None:
        return Record(key="p-echo", data={"v": 1}, stream="in")

    async def secret_failures(self, secret: str) -> list[BaseException]:
        sink = self.build(api_key=f"wrong-{secret}")
        errors: list[BaseException] = []
        try:
            await sink.open()
            await sink.write([Record(key="k", data={"v": 1}, stream="in")])
        except Exception as exc:
            errors.append(exc)
        finally:
            await sink.close()
        return errors
