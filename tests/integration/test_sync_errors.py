"""``sync_errors``: a pipeline's errors also written to a table of the target database, on a
real PostgreSQL, with seed 004's three monitoring queries run exactly as the seed gives them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from syncworker.config import config_from_dict
from syncworker.core import Pipeline, PipelineSettings, Record, RetryPolicy
from syncworker.core.engine import Engine
from syncworker.core.policies import BreakerPolicy
from syncworker.core.protocols import SourceContext
from syncworker.errors import ConfigRefused
from syncworker.observe.sync_errors import SyncErrorsConfig, SyncErrorsStore
from syncworker.state import SqliteStateStore
from syncworker.state.base import ErrorRecord
from syncworker.testing import MemoryQueue, MemorySink, MemorySource
from tests.integration.test_postgres_sink import execute, query
from tests.waiting import eventually

pytestmark = pytest.mark.integration

MIGRATION = (
    Path(__file__).parents[2] / "examples/user_sync/migrations/001_create_sync_errors_table.sql"
)
# Port 17401 of this suite's range: nothing listens there.
UNREACHABLE = "postgresql://sync:s3cret-pw@127.0.0.1:17401/chat"

# Seed 004's "Monitor Errors" queries, verbatim.
RECENT_ERRORS = """SELECT * FROM sync_errors
WHERE created_at > NOW() - INTERVAL '1 hour'
ORDER BY created_at DESC;"""
ERROR_SUMMARY = """SELECT error_type, COUNT(*), MAX(created_at) as last_occurrence
FROM sync_errors
GROUP BY error_type
ORDER BY COUNT(*) DESC;"""
UNRESOLVED = """SELECT * FROM sync_errors
WHERE resolved = FALSE
ORDER BY created_at DESC;"""


async def dict_rows(url: str, statement: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement)
        names = [c.name for c in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]


def mirror(state: SqliteStateStore, url: str, **settings: Any) -> SyncErrorsStore:
    config = SyncErrorsConfig.model_validate({"url": url, **settings})
    return SyncErrorsStore(state, "users", config, drain_timeout_s=0.5)


def failures(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in logs if e["event"] == "sync_errors_write_failed"]


async def test_errors_land_in_the_table_and_the_seeds_queries_work(
    pg_url: str, state: SqliteStateStore
) -> None:
    store = mirror(state, pg_url)
    await store.open()
    try:
        ids = [
            await store.record_error(
                ErrorRecord(
                    type="dead_letter",
                    pipeline="users",
                    message=f"PermanentError: record {key!r} refused",
                    record_key=key,
                    stack="Traceback ...",
                    metadata={"where": "postgres", "stream": "users"},
                )
            )
            for key in ("u1", "u2")
        ]
        ids.append(
            await store.record_error(
                ErrorRecord(
                    type="REALTIME_SYNC_CONNECTION_ERROR",
                    pipeline="users",
                    message="the listening connection was lost",
                    metadata={"attempt": 3},
                )
            )
        )
        assert await store.table.flush(10)
        recent = await dict_rows(pg_url, RECENT_ERRORS)
        summary = await query(pg_url, ERROR_SUMMARY)
        unresolved = await dict_rows(pg_url, UNRESOLVED)

        assert await store.resolve_errors([ids[0]]) == 1
        assert await store.table.flush(10)
        still_unresolved = await dict_rows(pg_url, UNRESOLVED)
    finally:
        await store.close()

    assert [r["error_type"] for r in recent] == [
        "REALTIME_SYNC_CONNECTION_ERROR",
        "dead_letter",
        "dead_letter",
    ]
    first = next(r for r in recent if r["record_key"] == "u1")
    assert first["error_message"] == "PermanentError: record 'u1' refused"
    assert first["stack_trace"] == "Traceback ..."
    assert first["metadata"] == {"where": "postgres", "stream": "users"}
    assert first["resolved"] is False and first["pipeline"] == "users"
    assert first["state_error_id"] == ids[0]
    assert [(kind, count) for kind, count, _ in summary] == [
        ("dead_letter", 2),
        ("REALTIME_SYNC_CONNECTION_ERROR", 1),
    ]
    assert summary[0][2] == max(r["created_at"] for r in recent if r["error_type"] == "dead_letter")
    assert len(unresolved) == 3
    assert {r["state_error_id"] for r in still_unresolved} == set(ids[1:])
    # The state store keeps every error (and the resolution) too.
    kept = await state.errors("users")
    assert {e.id for e in kept} == set(ids)
    assert [e.id for e in kept if e.resolved] == [ids[0]]


async def test_an_unreachable_table_never_blocks_and_every_failure_is_logged(
    state: SqliteStateStore,
) -> None:
    store = mirror(state, UNREACHABLE, connect_timeout="2s")
    await store.open()
    try:
        with capture_logs() as logs:
            error_id = await store.record_error(
                ErrorRecord(type="batch_failed", pipeline="users", message="boom")
            )
            # Returned with the state store's id while the table is still out of reach.
            assert error_id > 0 and store.table.pending == 1
            await eventually(lambda: len(failures(logs)) >= 2, "two failed writes logged")
        [kept] = await state.errors("users")
        assert kept.id == error_id and kept.message == "boom"
        for failure in failures(logs):
            assert "127.0.0.1:17401" in failure["where"]
            assert failure["reason"].startswith("ConnectionFailed")
            assert "s3cret-pw" not in str(failure)
            assert failure["kept_in"] == "state store"
        with capture_logs() as logs:
            await store.close()
        [left] = [e for e in logs if e["event"] == "sync_errors_not_written"]
        assert left["errors"] == 1
    finally:
        await store.close()


async def test_a_missing_table_is_retried_until_it_exists(
    pg_url: str, state: SqliteStateStore
) -> None:
    store = mirror(state, pg_url, create=False)
    await store.open()
    try:
        with capture_logs() as logs:
            await store.record_error(
                ErrorRecord(type="dead_letter", pipeline="users", message="m", record_key="k")
            )
            await eventually(lambda: failures(logs), "a failed write logged")
        assert "sync_errors" in failures(logs)[0]["reason"]
        assert "does not exist" in failures(logs)[0]["reason"]
        await execute(pg_url, MIGRATION.read_text())  # the example's migration, as psql runs it
        assert await store.table.flush(15)
        assert await query(pg_url, "SELECT error_type, record_key FROM sync_errors") == [
            ("dead_letter", "k")
        ]
    finally:
        await store.close()


async def test_create_makes_the_table_before_any_error_in_its_schema(pg_url: str) -> None:
    await execute(pg_url, "CREATE SCHEMA ops")
    state = SqliteStateStore(":memory:")
    store = mirror(state, pg_url, table="ops.errors")
    await store.open()  # opens the state store too: nobody else did
    try:
        assert state.is_open

        async def created() -> bool:
            found = await query(pg_url, "SELECT to_regclass('ops.errors') IS NOT NULL")
            return found == [(True,)]

        await eventually(created, "the table created")
        indexes = await query(
            pg_url, "SELECT indexname FROM pg_indexes WHERE schemaname = 'ops' ORDER BY 1"
        )
        assert [name for (name,) in indexes] == [
            "errors_created_at_idx",
            "errors_error_type_idx",
            "errors_event_id_key",
            "errors_pkey",
            "errors_unresolved_idx",
        ]
    finally:
        await store.close()
    assert not state.is_open


# -- inside a pipeline and the engine --------------------------------------------------------


class ReportingSource(MemorySource):
    """A memory source that reports an outage through its context when it opens."""

    full_sync = False

    def bind(self, context: SourceContext) -> None:
        self.context = context

    async def open(self) -> None:
        await super().open()
        await self.context.report_error(
            "REALTIME_SYNC_CONNECTION_ERROR",
            "listen connection to postgresql://app:pw@db/x lost",
            metadata={"attempt": 1},
        )


def quick() -> PipelineSettings:
    return PipelineSettings(
        batch_size=10,
        max_wait_s=0.05,
        retry=RetryPolicy(attempts=2, delay_s=0.001, max_delay_s=0.002, jitter=0),
        breaker=BreakerPolicy(delay_s=0.01, max_delay_s=0.05),
    )


async def test_a_pipelines_dead_letters_and_source_reports_reach_the_table(
    pg_url: str, tmp_path: Path
) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    store = mirror(state, pg_url)
    queue = MemoryQueue([Record(key=k, data={"n": i}) for i, k in enumerate(["a", "b", "c"])])
    sink = MemorySink(reject_keys={"b"})
    pipeline = Pipeline("users", ReportingSource(queue), [sink], [], quick(), store)
    engine = Engine([pipeline], state)
    assert engine.own_stores() == [store]
    await engine.run_once()
    assert not store.is_open  # the engine closed it, after writing what it held
    rows = await query(
        pg_url, "SELECT error_type, record_key, error_message FROM sync_errors ORDER BY id"
    )
    kinds = {kind for kind, _, _ in rows}
    assert kinds == {"REALTIME_SYNC_CONNECTION_ERROR", "dead_letter"}
    [report] = [r for r in rows if r[0] == "REALTIME_SYNC_CONNECTION_ERROR"]
    assert "pw@" not in report[2]  # redacted by the context before it is stored
    [letter] = [r for r in rows if r[0] == "dead_letter"]
    assert letter[1] == "b"


def test_the_config_wraps_the_state_store_of_a_pipeline_with_sync_errors(
    tmp_path: Path,
) -> None:
    raw = {
        "state": f"sqlite:///{tmp_path}/state.db",
        "pipelines": {
            "users": {
                "source": {"type": "sqlite_queue", "path": f"{tmp_path}/q.db"},
                "sinks": [{"type": "jsonl", "path": f"{tmp_path}/out"}],
                "sync_errors": {"url": "${TARGET_DATABASE_URL}"},
            },
            "plain": {
                "source": {"type": "sqlite_queue", "path": f"{tmp_path}/q2.db"},
                "sinks": [{"type": "jsonl", "path": f"{tmp_path}/out2"}],
            },
        },
    }
    config = config_from_dict(raw, environ={"TARGET_DATABASE_URL": "postgresql://h/chat"})
    state = SqliteStateStore(tmp_path / "state.db")
    users, plain = config.build(state)
    assert isinstance(users.state, SyncErrorsStore) and users.state.inner is state
    assert users.state.table.config.table == "sync_errors" and users.state.table.config.create
    assert plain.state is state


class RefusingSource(MemorySource):
    """A source whose database refuses its settings when it opens (a wrong password)."""

    async def open(self) -> None:
        raise ConfigRefused("memory: password authentication failed for user 'sync'")


async def test_batch_and_run_failures_reach_the_table_even_after_the_pipeline_stopped(
    pg_url: str, tmp_path: Path
) -> None:
    state = SqliteStateStore(tmp_path / "state.db")
    down = Pipeline(
        "users",
        MemorySource(MemoryQueue([Record(key="a", data={})])),
        [MemorySink(name="chat", down=True)],
        [],
        quick(),
        mirror(state, pg_url),
    )
    await Engine([down], state).run_once()
    refused = Pipeline(
        "users", RefusingSource(), [MemorySink()], [], quick(), mirror(state, pg_url)
    )
    engine = Engine([refused], state)
    with pytest.raises(ConfigRefused):
        await engine.run()  # stops by itself: its only pipeline cannot open
    rows = await query(pg_url, "SELECT error_type, error_message, stack_trace FROM sync_errors")
    kinds = [kind for kind, _, _ in rows]
    assert "sink_unavailable" in kinds  # the failed batch
    assert "open_failed" in kinds  # recorded after the pipeline closed, before the engine did
    [(_, message, stack)] = [r for r in rows if r[0] == "open_failed"]
    assert "password authentication failed" in message and stack
