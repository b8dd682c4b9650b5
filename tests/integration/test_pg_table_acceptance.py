"""Issue 10's first acceptance check, end to end through the CLI: a ``users`` table (the
peers' data set) snapshotted by ``syncworker run`` while about 200 changes a second stream in
(updates, status flips in and out of the filter, deletes, inserts), the engine killed with
SIGKILL in the middle of the snapshot and started again, then ``syncworker verify`` and a
direct SQL comparison saying the target equals the filtered, mapped source.

Sized by ``SYNCWORKER_ACCEPTANCE_ROWS``: 20,000 rows in the normal suite, 1,000,000 in
``make chaos`` (the issue's figure). The figures of the run (snapshot, catch-up and verify
times, rows re-read after the restart) are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncworker.state import SqliteStateStore
from tests.conformance.harness import PYTHON, REPO, child_env
from tests.integration.pg_table_support import sql, target_url
from tests.waiting import eventually

__all__ = ["target_url"]

ROWS = int(os.environ.get("SYNCWORKER_ACCEPTANCE_ROWS", "20000"))
UPDATES_PER_S = 200.0
# Snapshot pages: about 100 of them whatever the size, so the kill lands between pages.
PAGE_ROWS = max(200, min(10_000, ROWS // 100))
KILL_AT = 0.30  # share of the snapshot acked before the kill
STREAM_AFTER_SNAPSHOT_S = 3.0  # changes keep coming this long after the snapshot is done
# Deadlines grow with the table: a 1M-row run generates, copies and verifies for minutes on
# a shared two-core machine.
SCALE_S = 60.0 + ROWS / 2_000

pytestmark = [pytest.mark.integration, pytest.mark.timeout(int(180 + 4 * SCALE_S))]

# ../shared/bench-peers-sync/schema.sql (the peers' users table) and gen_fn.sql.
SOURCE_DDL = """
CREATE TABLE users (
  id          bigint PRIMARY KEY,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  email       text NOT NULL,
  phone       text,
  status      text NOT NULL,
  avatar_url  text,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL
);
CREATE INDEX ON users (updated_at);
"""
GEN_USER = (REPO / "bench" / "table_sync_gen_user.sql").read_text()
FILL = "INSERT INTO users SELECT g.* FROM generate_series(1, %s::bigint) i, LATERAL gen_user(i) g"
# The chat side: renamed columns, and the source's updated_at kept for the stale-write guard.
TARGET_DDL = """
CREATE TABLE {table} (
  id                bigint PRIMARY KEY,
  given_name        text NOT NULL,
  family_name       text NOT NULL,
  email             text NOT NULL,
  phone             text,
  status            text NOT NULL,
  avatar            text,
  created_at        timestamptz NOT NULL,
  updated_at        timestamptz NOT NULL,
  source_updated_at timestamptz
);
"""
# target column: source column
MAPPING = {
    "given_name": "first_name",
    "family_name": "last_name",
    "email": "email",
    "phone": "phone",
    "status": "status",
    "avatar": "avatar_url",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
FILTER = "status = 'active'"
CHANGE_LOG = "syncworker_users_changes"


def write_config(path: Path, source_url: str, target: str) -> Path:
    columns = ", ".join(f"{t}: {s}" for t, s in MAPPING.items())
    path.write_text(
        textwrap.dedent(
            f"""\
            state: sqlite:///{path.parent}/state.db
            shutdown_timeout: 30s
            pipelines:
              users:
                source:
                  type: pg_table
                  url: "{source_url}"
                  table: users
                  key: id
                  updated_at: updated_at
                  where: "{FILTER}"
                  trigger: user_changes_trigger
                  function: notify_user_changes
                  snapshot: initial
                  snapshot_page_rows: {PAGE_ROWS}
                  lookback: {{interval: 1m, window_multiplier: 3}}
                  poll_interval: 200ms
                processors: []
                sinks:
                  - type: postgres
                    url: "{target}"
                    table: chat_users
                    key_column: id
                    columns: {{{columns}}}
                    version_column: source_updated_at
                    version: updated_at
                batch: {{size: {PAGE_ROWS}, max_wait: 10ms, max_in_flight: 2}}
            """
        )
    )
    return path


# -- the background changes ----------------------------------------------------------------


@dataclass
class Updater:
    """Commits about ``rate`` changes a second to the source, one transaction each, paced by
    the clock: 60 % updates of email and phone, 20 % status flips (the row leaves or
    re-enters the filter), 10 % deletes, 10 % inserts of new ids."""

    url: str
    rows: int
    rate: float = UPDATES_PER_S
    done: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    started_at: float = 0.0
    stopped_at: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="acceptance-updater", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Stop committing (after a failure: nothing is checked)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop committing, wait for the thread, and raise what made it fail, if anything."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self.error is not None:
            raise AssertionError(f"the updater failed: {self.error!r}") from self.error

    @property
    def achieved_per_s(self) -> float:
        end = self.stopped_at or time.monotonic()
        return self.done / max(end - self.started_at, 1e-9)

    def _run(self) -> None:
        rng = random.Random(10)
        next_id = 2 * self.rows + 1
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                self.started_at = time.monotonic()
                while not self._stop.is_set():
                    due = int((time.monotonic() - self.started_at) * self.rate)
                    while self.done < due and not self._stop.is_set():
                        next_id = self._change(conn, rng, next_id)
                        self.done += 1
                    wake = self.started_at + (self.done + 1) / self.rate
                    self._stop.wait(max(0.0, wake - time.monotonic()))
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.stopped_at = time.monotonic()

    def _change(self, conn: psycopg.Connection[Any], rng: random.Random, next_id: int) -> int:
        key = rng.randint(1, next_id - 1 if next_id > 2 * self.rows + 1 else self.rows)
        pick = rng.random()
        if pick < 0.6:
            kind = "update"
            conn.execute(
                "UPDATE users SET email = %s, phone = CASE WHEN phone IS NULL"
                " THEN '+10000000000' ELSE NULL END, updated_at = clock_timestamp()"
                " WHERE id = %s",
                (f"u{key}.{self.done}@updated.test", key),
            )
        elif pick < 0.8:
            kind = "flip"
            conn.execute(
                "UPDATE users SET status = CASE status WHEN 'active' THEN 'inactive'"
                " ELSE 'active' END, updated_at = clock_timestamp() WHERE id = %s",
                (key,),
            )
        elif pick < 0.9:
            kind = "delete"
            conn.execute("DELETE FROM users WHERE id = %s", (key,))
        else:
            kind, key, next_id = "insert", next_id, next_id + 1
            conn.execute(
                "INSERT INTO users SELECT g.id, g.first_name, g.last_name, g.email, g.phone,"
                " 'active', g.avatar_url, g.created_at, clock_timestamp() FROM gen_user(%s) g",
                (key,),
            )
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return next_id


# -- the engine, its state and its logs ----------------------------------------------------


async def start_engine(config: Path, log_path: Path) -> asyncio.subprocess.Process:
    with log_path.open("wb") as log_file:
        return await asyncio.create_subprocess_exec(
            *[PYTHON, "-m", "syncworker.cli", "--log-format", "json", "run", str(config)],
            cwd=REPO,
            env=child_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def snapshot_checkpoint(state_path: Path) -> dict[str, Any] | None:
    if not await asyncio.to_thread(state_path.exists):
        return None
    store = SqliteStateStore(state_path)
    await store.open()
    try:
        text = await store.get_checkpoint("users", "snapshot")
    finally:
        await store.close()
    return json.loads(text) if text else None


def events(log_path: Path) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def only(log_path: Path, name: str) -> dict[str, Any]:
    matching = [e for e in events(log_path) if e.get("event") == name]
    assert len(matching) == 1, (name, matching, log_path.read_text()[-3000:])
    return matching[0]


def tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-3000:]


# -- the direct comparison -----------------------------------------------------------------


async def compare_in_sql(source_url: str, target: str) -> dict[str, int]:
    """Counts of the filtered source and of the target, rows of each side not in the other
    (EXCEPT on the mapped columns, both ways) and target rows whose version column is not
    their updated_at; the target's rows are copied (binary COPY) into the source database
    first, so both sides are compared in one statement."""
    mirror = "chat_users_copy"
    await sql(source_url, f"DROP TABLE IF EXISTS {mirror}")
    await sql(source_url, TARGET_DDL.format(table=mirror))
    listed = "id, " + ", ".join([*MAPPING, "source_updated_at"])
    async with (
        await psycopg.AsyncConnection.connect(target, autocommit=True) as dst,
        await psycopg.AsyncConnection.connect(source_url, autocommit=True) as src,
    ):
        copy_out = f"COPY chat_users ({listed}) TO STDOUT (FORMAT binary)"
        copy_in = f"COPY {mirror} ({listed}) FROM STDIN (FORMAT binary)"
        async with dst.cursor().copy(copy_out) as reader, src.cursor().copy(copy_in) as writer:
            async for chunk in reader:
                await writer.write(chunk)
    source_side = "SELECT id, " + ", ".join(MAPPING.values()) + f" FROM users WHERE {FILTER}"
    target_side = "SELECT id, " + ", ".join(MAPPING) + f" FROM {mirror}"
    (row,) = await sql(
        source_url,
        f"SELECT (SELECT count(*) FROM users WHERE {FILTER}), (SELECT count(*) FROM {mirror}),"
        f" (SELECT count(*) FROM ({source_side} EXCEPT {target_side}) m),"
        f" (SELECT count(*) FROM ({target_side} EXCEPT {source_side}) e),"
        f" (SELECT count(*) FROM {mirror}"
        "   WHERE source_updated_at IS DISTINCT FROM updated_at)",
    )
    await sql(source_url, f"DROP TABLE {mirror}")
    names = ("source_rows", "target_rows", "source_only", "target_only", "bad_version")
    return dict(zip(names, row, strict=True))


async def change_log_rows(source_url: str) -> int:
    (row,) = await sql(source_url, f"SELECT count(*) FROM {CHANGE_LOG}")
    return int(row[0])


# -- the test ------------------------------------------------------------------------------


async def test_snapshot_under_updates_killed_and_resumed_then_verified_exactly(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    figures: dict[str, Any] = {"rows": ROWS, "page_rows": PAGE_ROWS}
    began = time.monotonic()
    await sql(pg_url, SOURCE_DDL)
    await sql(pg_url, GEN_USER)
    await sql(pg_url, FILL, (ROWS,))
    await sql(pg_url, "ANALYZE users")
    await sql(target_url, TARGET_DDL.format(table="chat_users"))
    figures["generate_s"] = round(time.monotonic() - began, 2)
    (active,) = await sql(pg_url, f"SELECT count(*) FROM users WHERE {FILTER}")
    active_rows = int(active[0])

    config = write_config(tmp_path / "sync.yaml", pg_url, target_url)
    install = await cli("pg", "install", "--config", str(config), "users")
    assert install.returncode == 0, install.stdout + install.stderr
    assert "user_changes_trigger" in install.stdout + install.stderr

    state_path = tmp_path / "state.db"
    first_log, second_log = tmp_path / "run1.log", tmp_path / "run2.log"
    updater = Updater(pg_url, ROWS)
    updater.start()
    engine: asyncio.subprocess.Process | None = None
    try:
        snapshot_began = time.monotonic()
        engine = await start_engine(config, first_log)
        first = engine

        async def partly_done() -> dict[str, Any] | None:
            assert first.returncode is None, tail(first_log)
            saved = await snapshot_checkpoint(state_path)
            if saved and saved["done"]:
                raise AssertionError(f"the snapshot ended before the kill: {saved}")
            return saved if saved and saved["rows"] >= KILL_AT * active_rows else None

        await eventually(partly_done, "30 % of the snapshot acked", timeout_s=SCALE_S)
        first.send_signal(signal.SIGKILL)  # no ack, no close, no shutdown
        await first.wait()
        saved = await snapshot_checkpoint(state_path)
        assert saved is not None and not saved["done"], saved
        assert KILL_AT * active_rows <= saved["rows"] < active_rows, saved
        figures["acked_at_kill"] = saved["rows"]

        engine = await start_engine(config, second_log)
        second = engine

        async def snapshot_done() -> dict[str, Any] | None:
            assert second.returncode is None, tail(second_log)
            found = await snapshot_checkpoint(state_path)
            return found if found and found["done"] else None

        done = await eventually(snapshot_done, "the snapshot done", timeout_s=4 * SCALE_S)
        figures["snapshot_s"] = round(time.monotonic() - snapshot_began, 2)
        figures["snapshot_s_by_checkpoint"] = round(done["finished_at"] - done["started_at"], 2)

        # The restart resumed after the acked key: it read only the rest.
        resumed = only(second_log, "pg_table_snapshot_resumed")
        assert resumed["rows_done"] == saved["rows"], resumed
        finished = only(second_log, "pg_table_snapshot_done")
        reread = finished["rows"] - saved["rows"]
        figures.update(snapshot_total=finished["rows"], reread_after_restart=reread)
        assert 0 < reread < finished["rows"] and finished["rows"] == done["rows"]
        assert reread <= finished["rows"] - KILL_AT * active_rows
        for log_path in (first_log, second_log):  # no processors: the binary COPY path
            assert not [e for e in events(log_path) if e.get("event") == "pg_bulk_ineligible"]

        # The changes made during the snapshot waited in the change log: applied after it
        # (the count is taken just after the checkpoint says done, so some may be applied).
        backlog_from = time.monotonic()
        figures["backlog_at_snapshot_done"] = await change_log_rows(pg_url)

        async def caught_up() -> bool:
            assert second.returncode is None, tail(second_log)
            return await change_log_rows(pg_url) <= UPDATES_PER_S  # a second's worth

        await eventually(caught_up, "the backlog applied", timeout_s=SCALE_S, interval_s=0.05)
        figures["backlog_applied_s"] = round(time.monotonic() - backlog_from, 2)
        streaming_from = updater.done
        await eventually(
            lambda: updater.done >= streaming_from + STREAM_AFTER_SNAPSHOT_S * UPDATES_PER_S,
            "changes streaming after the snapshot",
            timeout_s=SCALE_S,
        )
        updater.stop()
        figures["changes"] = dict(updater.counts, total=updater.done)
        figures["changes_per_s"] = round(updater.achieved_per_s, 1)
        assert updater.counts.get("flip") and updater.counts.get("delete")
        assert updater.counts.get("insert") and updater.counts.get("update")
        assert updater.achieved_per_s >= 0.75 * UPDATES_PER_S, figures

        drain_began = time.monotonic()

        async def drained() -> bool:
            assert second.returncode is None, tail(second_log)
            return await change_log_rows(pg_url) == 0

        await eventually(drained, "the change log drained", timeout_s=SCALE_S, interval_s=0.1)
        figures["drain_after_stop_s"] = round(time.monotonic() - drain_began, 2)

        verify_began = time.monotonic()
        verified = await cli("verify", "users", "--config", str(config), "--json")
        figures["verify_s"] = round(time.monotonic() - verify_began, 2)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-3000:]
        report = json.loads(verified.stdout)
        assert report["status"] == "consistent", report
        assert [report[kind]["count"] for kind in ("missing", "extra", "different")] == [0, 0, 0]
        assert report["differences"] == 0 and report["difference"] == 0
        assert report["ignored_recent"] == 0, report  # every row compared, none left out
        assert report["source"]["rows"] == report["target"]["rows"] > 0
        compared = set(report["compared_columns"])
        assert compared >= set(MAPPING), report["compared_columns"]

        compare_began = time.monotonic()
        direct = await compare_in_sql(pg_url, target_url)
        figures["sql_compare_s"] = round(time.monotonic() - compare_began, 2)
        assert direct["source_rows"] == direct["target_rows"] == report["source"]["rows"], direct
        assert (direct["source_only"], direct["target_only"], direct["bad_version"]) == (0, 0, 0)

        second.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(second.wait(), timeout=60)
        assert code == 0, tail(second_log)
        assert "final_statistics" in {e.get("event") for e in events(second_log)}
    finally:
        updater.halt()
        if engine is not None and engine.returncode is None:
            engine.kill()
            await engine.wait()
        print("\nacceptance figures:", json.dumps(figures))


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "syncworker.cli", *args],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=4 * SCALE_S,
    )
