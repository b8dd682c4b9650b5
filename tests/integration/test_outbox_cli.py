"""`syncworker pg install` and `syncworker outbox ...` against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import psycopg

from tests.fakes.algolia import AlgoliaServer


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


async def test_algolia_reindex_rebuilds_an_index_from_its_table(
    pg_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id serial PRIMARY KEY, name text, price int)")
        conn.execute(
            "INSERT INTO products (name, price) SELECT 'p' || n, n FROM "
            "generate_series(1, 250) AS n"
        )
    async with AlgoliaServer() as fake:
        config = tmp_path / "syncworker.yaml"
        config.write_text(f"""\
state: "sqlite:///{tmp_path}/state.db"
pipelines:
  search:
    source: {{type: pg_outbox, url: "{pg_url}", queue_table: algolia_sync_queue,
              tables: [products]}}
    sinks:
      - type: algolia
        app_id: {fake.app_id}
        api_key: {fake.api_key}
        hosts: ["{fake.url}"]
        indexes: {{products: {{index: products}}}}
""")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "syncworker.cli",
            "algolia",
            "reindex",
            "products",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()
        assert "products: 250 object(s) written" in out.decode()
        objects = fake.indexes["products"].objects
        assert len(objects) == 250 and objects["7"]["name"] == "p7"
        assert not [name for name in fake.indexes if "_tmp_" in name]  # moved into place


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_outbox_commands_say_in_one_line_what_is_missing(pg_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    nothing = run_cli("outbox", "stats", env=env)
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == (
        "config error: --url: give --url (or DATABASE_URL) or --config FILE"
    )
    for command in (["stats"], ["retry-failed"], ["cleanup"]):
        result = run_cli("outbox", *command, env={**env, "DATABASE_URL": pg_url})
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: outbox 'syncworker_outbox' is not installed in ")
        assert line.endswith("install it with: syncworker pg install")


def test_outbox_commands_need_only_the_outbox_settings(pg_url: str, tmp_path: Path) -> None:
    """retry-failed touches only PostgreSQL: the Algolia sink's variables need not be set."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE products (id serial PRIMARY KEY, name text)")
    config = tmp_path / "syncworker.yaml"
    config.write_text(
        "pipelines:\n"
        "  search:\n"
        '    source: {type: pg_outbox, url: "${DATABASE_URL}", tables: [products]}\n'
        "    sinks:\n"
        "      - type: algolia\n"
        '        app_id: "${ALGOLIA_APP_ID}"\n'
        '        api_key: "${ALGOLIA_ADMIN_KEY}"\n'
        "        indexes: {products: {index: products}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALGOLIA_")}
    env["DATABASE_URL"] = pg_url
    for command in (
        ["pg", "install"],
        ["outbox", "stats"],
        ["outbox", "retry-failed"],
        ["outbox", "cleanup"],
    ):
        result = run_cli(*command, "--config", str(config), env=env)
        assert result.returncode == 0, result.stderr
    assert "0 failed row(s) back to pending" in result_of(
        run_cli("outbox", "retry-failed", "--config", str(config), env=env)
    )
    # run needs every setting, and says which one is missing
    refused = run_cli("validate", str(config), env=env)
    assert refused.returncode == 2 and "ALGOLIA_APP_ID is not set" in refused.stderr


def result_of(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout
