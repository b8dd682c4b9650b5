"""The harnesses of the REST sources: ``http`` and its ``zoho_creator`` preset, over the fake
Zoho Creator (``tests/fakes/zoho_creator.py``), served from a thread of its own.

A REST listing is not a queue: acking consumes nothing, the source keeps its position (the
high-water mark, and the ids already read inside the overlap window) in checkpoints. So the
harness binds every source it builds to a context whose checkpoints live in the test's state
file (``<tmp_path>/state.db``, the one ``tests/conftest.py``'s ``state`` fixture opens, under
the pipeline name "conformance"), as a pipeline binds it: a second worker then starts where
the first one's acks left it, whether they were a harness's or a pipeline's.

Every record of a harness's report is modified at one time (the harness's), as many records
modified within a second are: the overlap window always holds them all, and the source must
still deliver each only once. The service stores JSON objects only: a payload a Zoho form
could not hold (no JSON, no object, nested deeper than a record's fields go) is refused at
the producer and a row of its bytes stored instead (``refused_by_service``).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from syncworker.core import jsonvalue, registry
from syncworker.core.protocols import SourceContext
from syncworker.core.record import Record, key_from_bytes
from syncworker.state import SqliteStateStore
from syncworker.state.base import DeadLetter, ErrorRecord
from tests.conformance.exact import Payload
from tests.conformance.harness import Expected, Service, SourceHarness
from tests.fakes.zoho_creator import ZohoCreatorServer, zoho_time

T = TypeVar("T")
PIPELINE = "conformance"
_reports = itertools.count(1)

REFUSED = {
    "non_json": "no JSON: a record is a JSON object",
    "invalid_utf8": "not UTF-8: the API speaks UTF-8 JSON",
    "nul_raw": "a raw NUL is no JSON",
    "deep_2k": "nested 2,000 deep: a record's fields are not",
    "deep_100k": "nested 100,000 deep: a record's fields are not",
    "array": "an array, not a record",
    "scalar": "a number, not a record",
    "string": "a string, not a record",
    "empty": "an empty body is no record",
}


class FakeThread(Service):
    """A fake Zoho Creator in a thread with its own event loop (it outlives the test's loop;
    the shared one lives as long as the process, as a service would)."""

    def __init__(self, server: ZohoCreatorServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="zoho")
        self.thread.start()

    def call(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(30)

    async def start(self) -> None:
        await asyncio.to_thread(self.call, self.server.start())
        self.url = self.server.url

    async def stop(self) -> None:
        await asyncio.to_thread(self.call, self.server.stop())

    async def destroy(self) -> None:
        await self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self.thread.join, 10)
        self.loop.close()


_shared: FakeThread | None = None


async def shared_fake() -> FakeThread:
    global _shared
    if _shared is None:
        _shared = FakeThread(ZohoCreatorServer())
        await _shared.start()
    return _shared


class CheckpointFile:
    """The state store's checkpoints, dead letters and errors, opened per call (a harness
    has no teardown to close a store in)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _with(self, work: Any) -> Any:
        store = SqliteStateStore(self.path)
        await store.open()
        try:
            return await work(store)
        finally:
            await store.close()

    async def get_checkpoint(self, pipeline: str, name: str) -> str | None:
        return await self._with(lambda s: s.get_checkpoint(pipeline, name))  # type: ignore[no-any-return]

    async def set_checkpoint(self, pipeline: str, name: str, value: str) -> None:
        await self._with(lambda s: s.set_checkpoint(pipeline, name, value))

    async def add_dead_letters(self, letters: list[DeadLetter]) -> list[int]:
        return await self._with(lambda s: s.add_dead_letters(letters))  # type: ignore[no-any-return]

    async def record_error(self, error: ErrorRecord) -> int:
        return await self._with(lambda s: s.record_error(error))  # type: ignore[no-any-return]


class ZohoCreatorHarness(SourceHarness):
    """``zoho_creator`` over one report of the fake. Zoho gives every record an ID; this
    producer gives a payload with a text ``id`` that one, and one without (or with an
    object) the ID its canonical JSON names, so the same message twice is one record."""

    type_name = "zoho_creator"
    restart: ClassVar[str | None] = None
    credentials = True
    reasons: ClassVar[dict[str, str]] = {
        "deletes": "a REST listing shows records, not their removal: a record gone from a "
        "report is found by a group's full read or a resync (tests/integration/test_zoho_*)",
        "restart": "Zoho's smallest page is 200 records (max_records), so the case's 10 "
        "records are all read before the server stops; the same client's reconnect is the "
        "http harness's case (pages of 5) and test_zoho_faults.py's outage cases",
    }
    restart_settings: ClassVar[dict[str, Any]] = {
        "max_attempts": 1,
        "timeout": "2s",
        "max_records": 200,
    }
    refused_by_service: ClassVar[dict[str, str]] = REFUSED

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.report = f"Report_{next(_reports)}"
        self.modified = zoho_time(datetime.now(UTC) - timedelta(minutes=30))
        self.fake: FakeThread | None = None
        self.checkpoints = CheckpointFile(ctx.tmp_path / "state.db")

    async def prepare(self, target: str | None = None) -> None:
        if self.fake is None:
            self.fake = await shared_fake()
        self.fake.server.report(self.report)

    @property
    def server(self) -> ZohoCreatorServer:
        assert self.fake is not None
        return self.fake.server

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {**self.server.source_config(self.report), **overrides}

    def build(self, **overrides: Any) -> Any:
        config = {**self.config(), **overrides}
        cls = registry.lookup("source", self.type_name)
        source = cls(cls.config_model.model_validate(config), name=f"conformance-{self.type_name}")
        source.bind(SourceContext(PIPELINE, state=self.checkpoints))  # type: ignore[arg-type]
        return source

    def row(self, value: dict[str, Any]) -> dict[str, Any]:
        key = value.get("id")
        ident = (
            key if isinstance(key, str) else key_from_bytes(jsonvalue.dumps(value, sort_keys=True))
        )
        if isinstance(key, dict | list):
            ident = jsonvalue.canonical(key)
        return {**value, "ID": ident, "Modified_Time": self.modified}

    def message(self, record: Record) -> Any:
        return {k: v for k, v in record.data.items() if k not in ("ID", "Modified_Time")}

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        expected: list[Expected] = []
        for payload in payloads:
            if payload.name in REFUSED or not isinstance(payload.value, dict):
                fallback = f"p-{payload.name}"
                row = self.row({"id": fallback, "raw": "\\x" + payload.raw.hex()})
                self.server.put(self.report, row, key_field="ID")
                reason = REFUSED.get(payload.name, "not a record")
                expected.append(Expected(payload, "refused", row, key=row["ID"], reason=reason))
                continue
            row = self.row(payload.value)
            self.server.put(self.report, row, key_field="ID")
            expected.append(Expected(payload, "exact", payload.value, key=row["ID"]))
        return expected

    def private_service(self, password: str | None = None) -> Service:
        server = ZohoCreatorServer(client_secret=password or "fake-client-secret-0123")
        return FakeThread(server)

    async def open_private(self, password: str | None = None) -> Service:
        service = self.private_service(password)
        await service.start()
        assert isinstance(service, FakeThread)
        self.fake = service
        await self.prepare()
        return service

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        service = await self.open_private(password=secret)
        return {"client_secret": secret}, service

    async def secret_failures(self, secret: str) -> list[BaseException]:
        errors: list[BaseException] = []
        for wrong in ({"client_secret": f"{secret}-wrong"}, {"creator_url": "http://127.0.0.1:9"}):
            config = {**self.config(), "client_secret": secret, "max_attempts": 1, **wrong}
            if "creator_url" in wrong:
                config["accounts_url"] = wrong["creator_url"]
            source = self.build(**{k: v for k, v in config.items() if k != "type"})
            await source.open()
            try:
                await source.claim(10)
            except Exception as exc:
                errors.append(exc)
            finally:
                await source.close()
        assert len(errors) == 2, "a wrong login or a closed port was accepted"
        return errors


class HttpHarness(ZohoCreatorHarness):
    """The generic ``http`` source over the same fake: header cursor, OAuth refresh, a
    criteria filter, ``id`` as the id field and no ID given by the producer to a payload
    without one (its key is then hashed from its canonical JSON: ``missing_id``)."""

    type_name = "http"
    restart = "a private fake Zoho Creator (stopped, then started on the same port)"
    restart_settings: ClassVar[dict[str, Any]] = {
        "max_attempts": 1,
        "timeout": "2s",
        "page_size": 2,
    }

    def private_service(self, password: str | None = None) -> Service:
        service = super().private_service(password)
        assert isinstance(service, FakeThread)
        service.server.strict_sizes = False  # pages of 2: the restart falls inside the read,
        # the page read ahead included
        return service

    def config(self, **overrides: Any) -> dict[str, Any]:
        zoho = self.server
        return {
            "type": "http",
            "base_url": f"{zoho.url}/api/v2.1/{zoho.owner}/{zoho.app}",
            "path": f"report/{self.report}",
            "oauth": {
                "token_url": f"{zoho.url}/oauth/v2/token",
                "client_id": zoho.client_id,
                "client_secret": zoho.client_secret,
                "refresh_token": zoho.refresh_token,
                "scheme": "Zoho-oauthtoken",
            },
            "id_field": "id",
            "missing_id": "key_from_bytes",
            "page_size": 1000,
            "pagination": {"kind": "header_cursor", "size_param": "max_records"},
            "modified_field": "Modified_Time",
            "modified_format": "%d-%b-%Y %H:%M:%S",
            "filters": {"param": "criteria"},
            "backoff": "10ms",
            "max_backoff": "100ms",
            "poll_interval": "20ms",
            **overrides,
        }

    def row(self, value: dict[str, Any]) -> dict[str, Any]:
        return {**value, "Modified_Time": self.modified}

    def message(self, record: Record) -> Any:
        return {k: v for k, v in record.data.items() if k != "Modified_Time"}

    async def produce(self, payloads: list[Payload]) -> list[Expected]:
        expected: list[Expected] = []
        for payload in payloads:
            if payload.name in REFUSED or not isinstance(payload.value, dict):
                row = self.row({"id": f"p-{payload.name}", "raw": "\\x" + payload.raw.hex()})
                self.server.put(self.report, row, key_field="id")
                reason = REFUSED.get(payload.name, "not a record")
                expected.append(Expected(payload, "refused", row, key=row["id"], reason=reason))
                continue
            row = self.row(payload.value)
            self.server.put(self.report, row, key_field="id")
            expected.append(Expected(payload, "exact", payload.value, key=payload.key))
        return expected

    async def secret_setup(self, secret: str) -> tuple[dict[str, Any], Service | None]:
        service = await self.open_private(password=secret)
        oauth = {**self.config()["oauth"], "client_secret": secret}
        return {"oauth": oauth}, service

    async def secret_failures(self, secret: str) -> list[BaseException]:
        errors: list[BaseException] = []
        base = self.config()
        wrong_secret = {**base["oauth"], "client_secret": f"{secret}-wrong"}
        closed = {**base["oauth"], "client_secret": secret, "token_url": "http://127.0.0.1:9/t"}
        for oauth in (wrong_secret, closed):
            source = self.build(oauth=oauth, max_attempts=1)
            await source.open()
            try:
                await source.claim(10)
            except Exception as exc:
                errors.append(exc)
            finally:
                await source.close()
        assert len(errors) == 2, "a wrong login or a closed port was accepted"
        return errors
