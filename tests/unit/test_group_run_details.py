"""Run records keep issue 11's details (added, updated, removed, the force key, the sync id)
in the SQLite state store, also one made before they existed."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from syncworker.state import state_store_from_url
from syncworker.state.base import RunRecord

OLD_RUNS = """CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, pipeline TEXT NOT NULL, mode TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL NOT NULL, duration_ms REAL NOT NULL,
    status TEXT NOT NULL, processed INTEGER NOT NULL, written INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL, filtered INTEGER NOT NULL, streams TEXT NOT NULL,
    error TEXT)"""


async def test_an_older_store_gets_the_details_and_keeps_its_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_RUNS)
        conn.execute(
            "INSERT INTO runs (pipeline, mode, started_at, finished_at, duration_ms, status, "
            "processed, written, dead_lettered, filtered, streams, error) "
            "VALUES ('p', 'full', 1, 2, 1000, 'success', 5, 5, 0, 0, '{}', NULL)"
        )
    store = state_store_from_url(f"sqlite:///{path}")
    await store.open()
    try:
        now = time.time()
        run = RunRecord(
            "p",
            "force",
            now,
            now,
            "success",
            added=3,
            updated=2,
            removed=1,
            key="e1",
            sync_id="abc123",
        )
        await store.record_run(run)
        newest, oldest = await store.runs("p")
    finally:
        await store.close()
    assert (newest.added, newest.updated, newest.removed) == (3, 2, 1)
    assert newest.key == "e1" and newest.sync_id == "abc123"
    assert (oldest.processed, oldest.added, oldest.sync_id) == (5, 0, None)
