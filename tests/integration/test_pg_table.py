"""The ``pg_table`` source against a real PostgreSQL, source and target in two fresh databases:
snapshot by keyset pages and its hand-over to the change stream, filter, soft delete, per-key
order, lookback, resync, TRUNCATE, and the config checks at open."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from syncworker.connectors.postgres import table_capture
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.connectors.postgres.source_table import PgTableSourceConfig
from syncworker.core.pipeline import Pipeline
from syncworker.core.protocols import ReportsStatus, Resyncs, UsesContext
from syncworker.core.record import Record
from syncworker.errors import ConfigError
from syncworker.state.base import StateStore
from tests.integration.pg_table_support import (
    USER_COLUMNS,
    differences,
    fast_settings,
    setup_users,
    sql,
    target_url,
    user_rows,
    users_pipeline,
    users_sink,
    users_source,
)
from tests.waiting import eventually

__all__ = ["target_url"]

pytestmark = pytest.mark.integration


class GatedSink:
    """A ``postgres`` sink that holds every write until ``gate`` is open and records what it
    wrote: (key, op, score) per record, and the most writes it had at once."""

    def __init__(
        self, inner: PostgresSink, gate: asyncio.Event | None = None, *, overlap: bool = False
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.gate = gate
        self.written: list[tuple[str, str, Any, str]] = []
        self.active = 0
        self.most_active = 0
        # overlap: the first write waits until a second one has started, so two batches are
        # in flight at once whatever the speed of the machine (bounded by the test's timeout).
        self.overlapped: asyncio.Event | None = asyncio.Event() if overlap else None
        self.writing: set[str] = set()  # keys of the writes under way
        self.shared_keys: list[str] = []  # keys met in two writes at once

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def write(self, records: Sequence[Record]) -> Any:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        keys = {r.key for r in records}
        self.shared_keys += sorted(keys & self.writing)
        self.writing |= keys
        try:
            if self.overlapped is not None:
                if self.active >= 2:
                    self.overlapped.set()
                await self.overlapped.wait()
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0.01)  # a write takes a while: batches overlap
            result = await self.inner.write(records)
        finally:
            self.active -= 1
            self.writing -= keys
        self.written += [
            (r.key, r.op, r.data.get("score"), r.meta.get("phase", "")) for r in records
        ]
        return result


async def test_config_defaults_names_and_protocols() -> None:
    config = PgTableSourceConfig.model_validate({"url": "postgresql://u@h/db", "table": "users"})
    names = config.names()
    assert (names.change_table, names.trigger, names.function, names.channel) == (
        "syncworker_users_changes",
        "users_changes_trigger",
        "notify_users_changes",
        "syncworker_users_changes",
    )
    assert config.lookback.window_s == 180.0 and config.reconnect.max_attempts == 10
    seed = PgTableSourceConfig.model_validate(
        {
            "url": "postgresql://u@h/db",
            "table": "public.users",
            "trigger": "user_changes_trigger",
            "function": "notify_user_changes",
            "lookback": {"interval": "1m", "window_multiplier": 3},
        }
    ).names()
    assert (seed.trigger, seed.function, seed.change_schema) == (
        "user_changes_trigger",
        "notify_user_changes",
        "public",
    )
    with pytest.raises(ValidationError, match="extra"):
        PgTableSourceConfig.model_validate({"url": "postgresql://u@h/db", "table": "t", "wher": 1})
    with pytest.raises(ValidationError, match="longer than 63 bytes"):
        PgTableSourceConfig.model_validate({"url": "postgresql://u@h/db", "table": "t" * 60})
    source = users_source("postgresql://u@h/db")
    assert isinstance(source, UsesContext) and source.full_sync
    assert isinstance(source, ReportsStatus) and isinstance(source, Resyncs)


async def test_open_refuses_a_missing_capture_key_column_or_bad_filter(pg_url: str) -> None:
    await sql(
        pg_url, "CREATE TABLE users (id bigint PRIMARY KEY, name text, updated_at timestamptz)"
    )
    await sql(pg_url, "CREATE TABLE nokey (id bigint, updated_at timestamptz)")
    with pytest.raises(ConfigError, match="syncworker pg install"):
        await users_source(pg_url).open()
    await table_capture.install(pg_url, "users")
    await table_capture.install(pg_url, "nokey")
    cases = [
        (users_source(pg_url, where="statuss = 'active'"), "where:.*does not compile"),
        (users_source(pg_url, columns=["name", "email"]), "columns: table has no column 'email'"),
        (users_source(pg_url, updated_at="changed_at"), "updated_at: .*null: no lookback"),
        (users_source(pg_url, table="nokey"), "neither the primary key"),
    ]
    for source, message in cases:
        with pytest.raises(ConfigError, match=message):
            await source.open()
        await source.close()


async def test_snapshot_pages_by_key_checkpoints_and_hands_over_to_the_stream(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=250)
    sync = users_pipeline(pg_url, target_url, state, snapshot_page_rows=40)
    try:
        run = await sync.run_once()
        assert run.status == "success" and run.processed == 250
        status = sync.status()["source_status"]
        assert status["phase"] == "stream"
        assert status["snapshot"]["done"] and status["snapshot"]["rows"] == 250
        saved = await state.get_checkpoint("users", "snapshot")
        assert saved is not None and '"last_key":"250"' in saved and '"done":true' in saved
        await sql(pg_url, "UPDATE users SET name = 'renamed', score = 0.1 WHERE id = 7")
        await sql(pg_url, "INSERT INTO users (id, name) VALUES (1000, 'new')")
        await sql(pg_url, "DELETE FROM users WHERE id IN (3, 250)")
        streamed = await sync.run_once()
        assert streamed.processed == 4, streamed
    finally:
        await sync.close()
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []
    rows = await user_rows(target_url)
    assert len(rows) == 249 and rows[7][0] == "renamed" and 3 not in rows and 1000 in rows
    again = users_pipeline(pg_url, target_url, state)  # initial: done for good
    try:
        assert (await again.run_once()).processed == 0
    finally:
        await again.close()


async def test_a_full_run_snapshots_again_and_always_snapshots_at_start(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=30)
    sync = users_pipeline(pg_url, target_url, state)
    try:
        assert (await sync.run_once()).processed == 30
        assert (await sync.run_once()).processed == 0
        await sql(target_url, "DELETE FROM users WHERE id <= 10")  # the target lost rows
        full = await sync.run_once("full")
        assert full.processed == 30 and full.mode == "full"
    finally:
        await sync.close()
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []
    always = users_pipeline(pg_url, target_url, state, snapshot="always")
    try:
        assert (await always.run_once()).processed == 30  # done before: a new one
    finally:
        await always.close()
    never = users_pipeline(pg_url, target_url, state, snapshot="never")
    try:
        assert (await never.run_once()).processed == 0
    finally:
        await never.close()


async def test_stream_filter_and_soft_delete_reach_the_target(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=5)
    sync = users_pipeline(
        pg_url,
        target_url,
        state,
        where="status = 'active' AND name NOT LIKE '%%ignored%'",  # a literal % too
        soft_delete={"column": "deleted_at"},
    )
    await sync.start()
    try:
        await eventually(lambda: _count(target_url, 5), "the snapshot in the target")
        await sql(pg_url, "UPDATE users SET name = 'changed' WHERE id = 1")
        await sql(pg_url, "INSERT INTO users (id, name) VALUES (6, 'six')")
        await sql(pg_url, "DELETE FROM users WHERE id = 2")
        await sql(pg_url, "UPDATE users SET status = 'inactive' WHERE id = 3")  # leaves filter
        await sql(pg_url, "UPDATE users SET deleted_at = now() WHERE id = 4")  # soft delete
        await sql(pg_url, "INSERT INTO users (id, name, status) VALUES (7, 'x', 'banned')")
        await sql(pg_url, "INSERT INTO users (id, name) VALUES (8, 'an %%ignored%% one')")

        async def settled() -> dict[int, Any] | None:
            rows = await user_rows(target_url)
            return rows if sorted(rows) == [1, 5, 6] and rows[1][0] == "changed" else None

        await eventually(settled, "changes, filter and soft delete in the target")
        await sql(pg_url, "UPDATE users SET status = 'active' WHERE id = 3")  # back in
        await eventually(lambda: _has(target_url, 3), "a row matching the filter again")
    finally:
        await sync.stop()


async def test_updates_during_the_snapshot_never_lose_to_a_stale_snapshot_row(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=300)
    gate = asyncio.Event()
    sink = GatedSink(users_sink(target_url), gate)
    source = users_source(pg_url, snapshot_page_rows=50)
    settings = fast_settings(batch_size=50, max_in_flight=8)  # every page claimed at once
    sync = Pipeline("users", source, [sink], settings=settings, state=state)
    await sync.start()
    try:
        # The first pages are read and held at the sink: change their rows and later ones.
        await eventually(lambda: sink.active >= 1, "a snapshot page at the sink")
        for round_ in range(3):
            await sql(pg_url, "UPDATE users SET score = %s WHERE id %% 7 = 0", (1000 + round_,))
        await sql(pg_url, "DELETE FROM users WHERE id IN (1, 299)")
        await sql(pg_url, "INSERT INTO users (id, name) VALUES (301, 'late')")
        gate.set()

        async def equal() -> bool:
            return await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []

        await eventually(equal, "the target equal to the source", timeout_s=60)
    finally:
        await sync.stop()
    phases = [phase for *_, phase in sink.written]
    first_stream = phases.index("stream")
    assert "snapshot" not in phases[first_stream:], "a snapshot row was written after the stream"
    stale = [w for w in sink.written if w[0] == "7"]
    assert stale[0][2] == 10.5 and stale[-1][2] == 1002  # the old state landed, then the new


async def test_the_stream_waits_until_every_snapshot_page_is_acked(
    pg_url: str, target_url: str
) -> None:
    await setup_users(pg_url, target_url, rows=10)
    source = users_source(pg_url, snapshot_page_rows=4)
    await source.open()
    try:
        pages = [await source.claim(100) for _ in range(3)]
        assert [len(p.records) for p in pages if p is not None] == [4, 4, 2]
        await sql(pg_url, "UPDATE users SET score = 99 WHERE id IN (1, 10)")
        assert await source.claim(100) is None  # pages unsettled: changes wait in the log
        await source.ack(pages[2])  # type: ignore[arg-type]
        await source.ack(pages[0])  # type: ignore[arg-type]
        assert await source.claim(100) is None
        await source.nack(pages[1])  # type: ignore[arg-type]
        again = await source.claim(100)  # the nacked page is read again, then the rest
        assert again is not None and [r.key for r in again.records] == ["5", "6", "7", "8"]
        assert source.status()["snapshot"]["rows"] == 4  # only the acked prefix counts
        rest = await source.claim(100)
        assert rest is not None and [r.key for r in rest.records] == ["9", "10"]
        await source.ack(again)
        await source.ack(rest)
        assert source.status()["snapshot"]["done"]
        changes = await source.claim(100)
        assert changes is not None and [r.key for r in changes.records] == ["1", "10"]
        assert all(r.meta["phase"] == "stream" and r.data["score"] == 99 for r in changes.records)
    finally:
        await source.close()


async def test_a_key_is_never_in_two_batches_in_flight(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=20)
    sink = GatedSink(users_sink(target_url), overlap=True)
    settings = fast_settings(batch_size=5, max_in_flight=2)
    source = users_source(pg_url, snapshot="never")
    sync = Pipeline("users", source, [sink], settings=settings, state=state)
    await sync.start()
    try:
        for version in range(1, 21):  # 20 rounds over 4 hot keys and a cold one each
            async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
                await conn.execute(
                    "UPDATE users SET score = %s WHERE id IN (1, 2, 3, 4, %s)",
                    (version, 4 + version % 16),
                )
            await asyncio.sleep(0.005)

        async def caught_up() -> bool:
            rows = await user_rows(target_url)
            return all(rows.get(key, (None, None, None))[2] == 20 for key in (1, 2, 3, 4))

        await eventually(caught_up, "the last version of every hot key", timeout_s=60)
    finally:
        await sync.stop()
    assert sink.most_active >= 2, "two batches were never in flight at once"
    assert sink.shared_keys == [], "a key was in two batches in flight"
    seen: dict[str, list[Any]] = defaultdict(list)
    for key, _, score, _ in sink.written:
        seen[key].append(score)
    for key in ("1", "2", "3", "4"):
        assert seen[key] == sorted(seen[key]), f"key {key} written out of order: {seen[key]}"


async def test_a_stream_claims_the_next_change_while_a_batch_is_in_flight(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    # The first write is held until a second one starts: the stream must claim and write the
    # next change while the first batch is still in flight, not after it settles.
    await setup_users(pg_url, target_url, rows=5)
    sink = GatedSink(users_sink(target_url), overlap=True)
    settings = fast_settings(batch_size=5, max_in_flight=2, max_wait_s=0)
    sync = Pipeline(
        "users", users_source(pg_url, snapshot="never"), [sink], settings=settings, state=state
    )
    await sync.start()
    try:
        await sql(pg_url, "UPDATE users SET score = 10 WHERE id = 1")
        await eventually(lambda: sink.active == 1, "the first write, held")
        await sql(pg_url, "UPDATE users SET score = 20 WHERE id = 2")

        async def both_written() -> bool:
            rows = await user_rows(target_url)
            none = (None, None, None)
            return rows.get(1, none)[2] == 10 and rows.get(2, none)[2] == 20

        await eventually(both_written, "both changes, the second while the first was held")
    finally:
        await sync.stop()
    assert sink.most_active == 2


async def test_lookback_queues_recent_rows_never_twice_at_once_and_on_schedule(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=10)
    await sql(pg_url, "UPDATE users SET updated_at = now() - interval '1 hour' WHERE id > 4")
    await sql(pg_url, "DELETE FROM syncworker_users_changes")
    source = users_source(
        pg_url, snapshot="never", lookback={"interval": "1s", "window_multiplier": 2}
    )
    await source.open()
    try:
        results = await asyncio.gather(source.lookback(), source.lookback())
        assert sorted(results, key=str) == [4, None]  # one ran (rows 1-4), one was refused
        assert await _log(pg_url) == [("1", "R"), ("2", "R"), ("3", "R"), ("4", "R")]
        batch = await source.claim(100)
        assert batch is not None and [r.key for r in batch.records] == ["1", "2", "3", "4"]
        await source.ack(batch)
        status = source.status()["lookback"]
        assert status["last_rows"] == 4 and status["runs"] == 1
        # The schedule: due one interval after the last one ended, run from claim.
        await sql(pg_url, "UPDATE users SET updated_at = now() - interval '1 hour'")
        await sql(pg_url, "DELETE FROM syncworker_users_changes")
        assert await source.claim(100) is None and source.status()["lookback"]["runs"] == 1

        async def ran_again() -> bool:
            assert await source.claim(100) is None  # nothing recent: nothing queued
            return bool(source.status()["lookback"]["runs"] == 2)

        await eventually(ran_again, "the scheduled lookback")
    finally:
        await source.close()


async def test_resync_and_request_resync_send_current_rows_or_deletes(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=5)
    await sql(pg_url, "DELETE FROM syncworker_users_changes")
    source = users_source(pg_url, snapshot="never", where="status = 'active'")
    await source.open()
    try:
        await sql(pg_url, "ALTER TABLE users DISABLE TRIGGER users_changes_trigger")
        await sql(pg_url, "UPDATE users SET name = 'quiet' WHERE id = 2")
        await sql(pg_url, "UPDATE users SET status = 'gone' WHERE id = 3")
        await sql(pg_url, "ALTER TABLE users ENABLE TRIGGER users_changes_trigger")
        assert await source.claim(10) is None  # nothing logged: the triggers were off
        assert await source.resync(["2", "3"]) == 2
        queued = await table_capture.request_resync(pg_url, "syncworker_users_changes", ["404"])
        assert queued == 1
        batch = await source.claim(10)
        assert batch is not None
        got = [(r.key, r.op, r.data.get("name")) for r in batch.records]
        assert got == [("2", "upsert", "quiet"), ("3", "delete", None), ("404", "delete", None)]
        await source.ack(batch)
        assert await source.backlog() == 0
    finally:
        await source.close()


async def test_truncate_is_reported_loudly_and_leaves_the_log(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=3)
    sync = users_pipeline(pg_url, target_url, state)
    try:
        await sync.run_once()
        await sql(pg_url, "TRUNCATE users")
        await sql(pg_url, "INSERT INTO users (id, name) VALUES (9, 'after')")
        run = await sync.run_once()
        assert run.processed == 1  # the row inserted after the TRUNCATE
        assert sync.status()["source_status"]["truncates"]["seen"] == 1
    finally:
        await sync.close()
    errors = await state.errors("users")
    assert [e.type for e in errors] == ["SOURCE_TABLE_TRUNCATED"]
    assert "verify" in errors[0].message
    assert await _log(pg_url) == []


async def test_install_is_idempotent_and_uninstall_removes_it(pg_url: str) -> None:
    await sql(pg_url, "CREATE TABLE users (id uuid PRIMARY KEY, name text)")
    names = table_capture.CaptureNames.for_table(
        "users", trigger="user_changes_trigger", function="notify_user_changes"
    )
    for _ in range(2):
        await table_capture.install(
            pg_url, "users", trigger="user_changes_trigger", function="notify_user_changes"
        )
    # The seed's own checks find them.
    assert await sql(pg_url, "SELECT tgname FROM pg_trigger WHERE tgname = 'user_changes_trigger'")
    assert await sql(pg_url, "SELECT proname FROM pg_proc WHERE proname = 'notify_user_changes'")
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("LISTEN syncworker_users_changes")
        await conn.execute("INSERT INTO users VALUES ('00000000-0000-0000-0000-00000000000a', 'a')")
        await conn.execute("UPDATE users SET id = '00000000-0000-0000-0000-00000000000b'")
        notified = [n.payload async for n in conn.notifies(timeout=1.0, stop_after=3)]
    assert notified == [
        "I:00000000-0000-0000-0000-00000000000a",
        "D:00000000-0000-0000-0000-00000000000a",
        "U:00000000-0000-0000-0000-00000000000b",
    ]
    status = await table_capture.status(pg_url, names)
    assert status["trigger"] is True and status["truncate_trigger"] is True
    assert status["function"] is True and status["backlog"] == 3
    await table_capture.uninstall(
        pg_url, "users", trigger="user_changes_trigger", function="notify_user_changes"
    )
    status = await table_capture.status(pg_url, names)
    assert (status["trigger"], status["function"], status["change_table"]) == (False, False, True)
    await table_capture.uninstall(pg_url, "users", drop_log=True, trigger="user_changes_trigger")
    assert (await table_capture.status(pg_url, names))["change_table"] is False
    with pytest.raises(ConfigError, match="no column 'uid'"):
        await table_capture.install(pg_url, "users", "uid")


async def _count(url: str, expected: int) -> bool:
    return len(await sql(url, "SELECT 1 FROM users")) == expected


async def _has(url: str, key: int) -> bool:
    return bool(await sql(url, "SELECT 1 FROM users WHERE id = %s", (key,)))


async def _log(url: str) -> list[tuple[Any, ...]]:
    return await sql(url, "SELECT key, op::text FROM syncworker_users_changes ORDER BY id")


async def test_bulk_pages_copy_the_snapshot_and_a_refused_page_goes_row_by_row(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    await setup_users(pg_url, target_url, rows=100)
    await sql(pg_url, "UPDATE users SET score = 5000 WHERE id = 37")
    await sql(pg_url, "DELETE FROM syncworker_users_changes")
    await sql(target_url, "ALTER TABLE users ADD CHECK (score < 1000)")  # refuses row 37
    sync = users_pipeline(pg_url, target_url, state, snapshot_page_rows=20)
    try:
        run = await sync.run_once()
        status = sync.status()["source_status"]["snapshot"]
    finally:
        await sync.close()
    assert status["bulk"]["enabled"] and status["bulk"]["pages"] >= 4, status
    assert status["done"] and status["rows"] == 100
    rows = await user_rows(target_url)
    assert sorted(rows) == [n for n in range(1, 101) if n != 37]
    assert [letter.key for letter in await state.dead_letters("users")] == ["37"]
    assert run.dead_lettered == 1, run
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == [
        ("37", "<missing>")
    ]


async def test_bulk_pages_take_snapshot_page_rows_whatever_the_batch_size(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    # A copied page streams through and is never held as records: a small batch.size must
    # not cut the snapshot into batch-sized pages (1M rows in 10,000 commits at size 100).
    await setup_users(pg_url, target_url, rows=250)
    await sql(pg_url, "DELETE FROM syncworker_users_changes")
    settings = fast_settings(batch_size=10)
    sync = users_pipeline(pg_url, target_url, state, settings=settings, snapshot_page_rows=100)
    try:
        await sync.run_once()
        status = sync.status()["source_status"]["snapshot"]
    finally:
        await sync.close()
    assert status["bulk"]["enabled"] and status["done"] and status["rows"] == 250, status
    assert status["bulk"]["pages"] == 3, status  # 100 + 100 + 50, not 25 pages of 10
    assert await differences(pg_url, target_url, "users", "id", USER_COLUMNS) == []


async def test_bulk_is_left_out_when_a_processor_changes_records(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    from syncworker.processors.builtin import SetConfig, SetProcessor

    await setup_users(pg_url, target_url, rows=30)
    source = users_source(pg_url, snapshot_page_rows=10)
    processor = SetProcessor(SetConfig(type="set", fields={"status": "synced"}))
    sync = Pipeline(
        "users",
        source,
        [users_sink(target_url)],
        processors=[processor],
        settings=fast_settings(),
        state=state,
    )
    try:
        assert (await sync.run_once()).processed == 30
        assert not sync.status()["source_status"]["snapshot"]["bulk"]["enabled"]
    finally:
        await sync.close()
    assert {row[1] for row in (await user_rows(target_url)).values()} == {"synced"}
