"""`syncworker pg install` and `syncworker outbox ...` against a real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

import orjson
import psycopg


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_stats_retry_and_cleanup(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id serial PRIMARY KEY, name text)")
    target = ("--url", pg_url, "--queue", "algolia_sync_queue")
    assert "CREATE TABLE" in cli("pg", "install", *target, "--table", "products", "--print")
    for _ in range(2):  # running it again is harmless
        out = cli("pg", "install", *target, "--table", "products")
        assert "outbox 'algolia_sync_queue' installed; watching products" in out
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO products (name) VALUES ('a'), ('b'), ('c')")
        conn.execute(
            "UPDATE algolia_sync_queue SET status = 'failed', attempts = 5 WHERE record_id = '3'"
        )
    stats = orjson.loads(cli("outbox", "stats", *target))
    assert stats["pending"] == 2 and stats["failed"] == 1
    assert "1 failed row(s) back to pending" in cli("outbox", "retry-failed", *target)
    assert orjson.loads(cli("outbox", "stats", *target))["pending"] == 3
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE algolia_sync_queue SET status = 'completed', "
            "processed_at = now() - interval '30 days'"
        )
        conn.execute("SELECT cleanup_old_sync_records(7)")  # the seed's own function exists
    assert "deleted 0 row(s)" in cli("outbox", "cleanup", *target, "--days", "7")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM algolia_sync_queue").fetchone()[0] == 0  # type: ignore[index]
