"""``verify`` on real PostgreSQL, two fresh databases: planted differences found exactly
(bigint, uuid and text keys; NULLs, numeric with 30 digits, timestamptz, jsonb, arrays, every
Unicode plane), recent rows ignored, a pipeline's mapping followed (renames, filter, soft
delete, constants, computed fields), and ``--repair`` fixing exactly the keys found."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from syncworker.config import load_config
from syncworker.connectors.postgres import table_capture
from syncworker.connectors.postgres.sink import PostgresSink
from syncworker.connectors.postgres.source_table import PgTableSource
from syncworker.core.pipeline import Pipeline
from syncworker.errors import ConfigError
from syncworker.reconcile.engine import CompareSettings, compare
from syncworker.reconcile.mapping import ColumnMap, TableMapping
from syncworker.reconcile.postgres import table_sides
from syncworker.reconcile.report import VerifyReport
from syncworker.reconcile.verify import VerifyOptions, verify_pipeline
from syncworker.state.base import StateStore
from tests.integration.pg_table_support import fast_settings, sql, target_url

__all__ = ["target_url"]

pytestmark = pytest.mark.integration

EVERY_PLANE = "".join(chr(plane * 0x10000 + 0x100 + plane) for plane in range(17))

TYPED = """
CREATE TABLE typed (
    id uuid PRIMARY KEY,
    t text, n30 numeric(40, 10), big numeric, ts timestamptz, j jsonb,
    arr_t text[], arr_n numeric[], f4 real, iv interval, raw bytea, js json,
    updated_at timestamptz
)
"""
TYPED_COLUMNS = ["t", "n30", "big", "ts", "j", "arr_t", "arr_n", "f4", "iv", "raw", "js"]
TYPED_ROWS = """
INSERT INTO typed
SELECT ('00000000-0000-0000-0000-' || lpad(to_hex(n), 12, '0'))::uuid,
       CASE WHEN mod(n, 5) = 0 THEN NULL ELSE %(text)s || n END,
       CASE WHEN mod(n, 7) = 0 THEN NULL ELSE 12345678901234567890.1234567890 + n END,
       123456789012345678901234567890 + n,
       '2026-12-01 23:59:59.999999+05:30'::timestamptz + n * interval '1 microsecond',
       CASE WHEN mod(n, 3) = 0 THEN NULL ELSE jsonb_build_object('n', n, 'u', %(text)s,
            'deep', jsonb_build_array(1.0, NULL, true)) END,
       ARRAY[%(text)s, NULL, n::text], ARRAY[0.1, n + 0.5, NULL]::numeric[], n / 3.0,
       n * interval '1 second', '\\x00ff'::bytea, '{"a": 1}'::json,
       '2020-01-01 00:00:00+00'
  FROM generate_series(1, %(rows)s) AS n
"""


def key(n: int) -> str:
    return f"00000000-0000-0000-0000-{n:012x}"


def mapping(source: str, target: str, table: str, columns: list[str], **more: Any) -> TableMapping:
    return TableMapping(
        source_url=source,
        source_table=table,
        source_key=more.pop("source_key", "id"),
        target_url=target,
        target_table=more.pop("target_table", table),
        target_key=more.pop("target_key", "id"),
        columns=tuple(ColumnMap(c, "column", c) for c in columns),
        **more,
    )


async def run_compare(m: TableMapping, **settings: Any) -> VerifyReport:
    source, target = table_sides(m)
    return await compare(source, target, CompareSettings(**settings))


def found(report: VerifyReport) -> dict[Any, str]:
    return {
        **{k: "missing" for k in report.missing.keys},
        **{k: "extra" for k in report.extra.keys},
        **{k: "different" for k in report.different.keys},
    }


async def test_every_type_synced_by_pg_table_verifies_then_planted_changes_are_found(
    pg_url: str, target_url: str, state: StateStore
) -> None:
    for url in (pg_url, target_url):
        await sql(url, TYPED)
    await sql(pg_url, TYPED_ROWS, {"text": EVERY_PLANE, "rows": 300})
    await table_capture.install(pg_url, "typed")
    source = PgTableSource({"url": pg_url, "table": "typed"}, name="typed-source")
    sink = PostgresSink(
        {
            "url": target_url,
            "table": "typed",
            "key_column": "id",
            "columns": {c: c for c in TYPED_COLUMNS},
        },
        name="typed-sink",
    )
    sync = Pipeline("typed", source, [sink], settings=fast_settings(), state=state)
    try:
        assert (await sync.run_once()).processed == 300
    finally:
        await sync.close()
    assert await sql(target_url, "SELECT count(*) FROM typed") == [(300,)]  # none refused
    m = mapping(pg_url, target_url, "typed", TYPED_COLUMNS)
    report = await run_compare(m, segments=8)
    assert report.status == "consistent", report.lines()
    assert (report.source_rows, report.target_rows) == (300, 300)
    assert not report.not_compared or all(n.compared for n in report.not_compared)

    planted = {
        key(1): "UPDATE typed SET t = t || '!' WHERE id = %s",
        key(2): "UPDATE typed SET n30 = n30 + 0.0000000001 WHERE id = %s",
        key(3): "UPDATE typed SET ts = ts + interval '1 microsecond' WHERE id = %s",
        key(4): "UPDATE typed SET j = j || '{\"n\": 4.0001}' WHERE id = %s",
        key(5): "UPDATE typed SET t = 'now a value' WHERE id = %s",  # was NULL
        key(6): "UPDATE typed SET arr_t = ARRAY[NULL, NULL, '6'] WHERE id = %s",
        key(8): "UPDATE typed SET j = NULL WHERE id = %s",  # a value become NULL
        key(10): "UPDATE typed SET big = big + 1 WHERE id = %s",  # the 30th digit
        key(11): "UPDATE typed SET js = '{\"a\":2}' WHERE id = %s",  # json: as jsonb
    }
    for k, statement in planted.items():
        await sql(target_url, statement, (k,))
    await sql(target_url, "DELETE FROM typed WHERE id = ANY(%s::uuid[])", ([key(100), key(300)],))
    await sql(target_url, "INSERT INTO typed (id) VALUES (%s), (%s)", (key(301), key(0)))
    report = await run_compare(m, segments=4, fetch_rows=20, split_factor=4)
    expected = {
        **dict.fromkeys(planted, "different"),
        key(100): "missing",
        key(300): "missing",
        key(301): "extra",
        key(0): "extra",
    }
    assert found(report) == expected
    assert report.passes > 1  # the differing segments were split before fetching
    assert report.different_columns[key(1)] == ["t"]
    assert report.different_columns[key(10)] == ["big"]
    assert any(n.column == "js" and "jsonb" in n.reason for n in report.not_compared)


USERS = """
CREATE TABLE users (
    id bigint PRIMARY KEY, name text NOT NULL, phone text, status text NOT NULL,
    deleted_at timestamptz, updated_at timestamptz NOT NULL
)
"""
USER_ROWS = """
INSERT INTO users SELECT n, 'user ' || n, CASE WHEN mod(n, 9) = 0 THEN NULL ELSE '+1' || n END,
       CASE WHEN mod(n, 10) = 0 THEN 'inactive' ELSE 'active' END, NULL,
       '2020-01-01 00:00:00+00'::timestamptz + n * interval '1 second'
  FROM generate_series(1, %(rows)s) AS n
"""
USER_COLUMNS = ["name", "phone", "status", "updated_at"]


async def users_in_both(source: str, target: str, rows: int = 5000) -> None:
    for url in (source, target):
        await sql(url, USERS)
        await sql(url, USER_ROWS, {"rows": rows})


async def test_bigint_keys_planted_differences_found_exactly(pg_url: str, target_url: str) -> None:
    await users_in_both(pg_url, target_url)
    changed = [25 * k + 5 for k in range(40)]
    await sql(
        target_url,
        "UPDATE users SET name = name || '.old' WHERE id = ANY(%s) AND mod(id, 3) = 0",
        (changed,),
    )
    await sql(
        target_url,
        "UPDATE users SET phone = CASE WHEN phone IS NULL THEN '+10' END"
        " WHERE id = ANY(%s) AND mod(id, 3) = 1",
        (changed,),
    )
    await sql(
        target_url,
        "UPDATE users SET updated_at = updated_at + interval '1 microsecond'"
        " WHERE id = ANY(%s) AND mod(id, 3) = 2",
        (changed,),
    )
    missing = list(range(17, 5000, 167))[:30]
    await sql(target_url, "DELETE FROM users WHERE id = ANY(%s)", (missing,))
    extra = [-5, 0, *range(5001, 5029)]  # below and above the source's keys
    await sql(
        target_url,
        "INSERT INTO users SELECT n, 'x', NULL, 'active', NULL, now() FROM unnest(%s::bigint[]) n",
        (extra,),
    )
    report = await run_compare(
        mapping(pg_url, target_url, "users", USER_COLUMNS), segments=10, fetch_rows=64
    )
    assert found(report) == {
        **dict.fromkeys(changed, "different"),
        **dict.fromkeys(missing, "missing"),
        **dict.fromkeys(extra, "extra"),
    }
    assert (report.source_rows, report.target_rows) == (5000, 5000)
    assert report.difference == 0  # counts alone say "consistent"
    assert report.passes >= 2
    assert report.rows_fetched < 5000  # only small segments were fetched


TEXTS = """
CREATE TABLE tags (id text PRIMARY KEY, label text);
CREATE TABLE tags_c (id text COLLATE "C" PRIMARY KEY, label text);
"""


@pytest.mark.parametrize("table", ["tags", "tags_c"])
async def test_text_keys_of_every_unicode_plane(pg_url: str, target_url: str, table: str) -> None:
    keys = [f"{chr(plane * 0x10000 + 0x100 + plane)}-{i}" for plane in range(17) for i in range(60)]
    keys += ["", "A", "a", "Z", "é", "ß", "user-9", "user-10", "user-100", "中", "😀"]
    for url in (pg_url, target_url):
        await sql(url, TEXTS)
        await sql(
            url, f"INSERT INTO {table} SELECT k, 'label ' || k FROM unnest(%s::text[]) k", (keys,)
        )
    gone, changed, extra = keys[5], keys[600], "\U0010fffd-extra"
    await sql(target_url, f"DELETE FROM {table} WHERE id = %s", (gone,))
    await sql(target_url, f"UPDATE {table} SET label = NULL WHERE id = %s", (changed,))
    await sql(target_url, f"INSERT INTO {table} VALUES (%s, 'x')", (extra,))
    await sql(target_url, f"UPDATE {table} SET label = 'changed' WHERE id = ''")
    report = await run_compare(
        mapping(pg_url, target_url, table, ["label"]), segments=16, fetch_rows=8, split_factor=4
    )
    assert found(report) == {gone: "missing", changed: "different", extra: "extra", "": "different"}


async def test_recent_rows_and_keys_in_the_change_log_are_ignored(
    pg_url: str, target_url: str
) -> None:
    await users_in_both(pg_url, target_url, rows=1000)
    await table_capture.install(pg_url, "users")
    await sql(pg_url, "DELETE FROM syncworker_users_changes")
    # A real difference, changed long ago:
    await sql(target_url, "UPDATE users SET name = 'stale' WHERE id = 10")
    # In flight: changed in the source a moment ago (updated_at now) ...
    await sql(pg_url, "UPDATE users SET name = 'new', updated_at = now() WHERE id = 20")
    # ... and a source change whose updated_at is old, but still in the change log.
    await sql(pg_url, "UPDATE users SET name = 'late commit' WHERE id = 30")
    m = mapping(
        pg_url,
        target_url,
        "users",
        USER_COLUMNS,
        source_updated_at="updated_at",
        change_table="syncworker_users_changes",
    )
    report = await run_compare(m, segments=10, ignore_recent_s=60)
    assert found(report) == {10: "different"}
    assert report.ignored_recent == 2
    assert report.recent_updates_last_hour == 1  # the seed's "recent updates (last hour)"
    everything = await run_compare(m, segments=10)
    assert found(everything) == dict.fromkeys([10, 20, 30], "different")


def users_config(tmp_path: Path, source: str, target: str, processors: str = "") -> Path:
    (tmp_path / "verify_fns.py").write_text(
        "def initials(data):\n"
        "    return ''.join(p[0] for p in (data.get('full_name') or '').split())\n"
    )
    path = tmp_path / "sync.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            state: sqlite:///{tmp_path}/state.db
            pipelines:
              users:
                source:
                  type: pg_table
                  url: {source}
                  table: users
                  where: "status = 'active'"
                  soft_delete: {{column: deleted_at}}
                processors:
                  - type: map
                    fields: {{id: id, full_name: name, mobile: phone, status: status,
                             updated_at: updated_at}}
                  - {{type: set, fields: {{source_system: myusta}}}}
                  - {{type: compute, fields: {{initials: "verify_fns:initials"}}}}
                  {processors}
                sinks:
                  - type: postgres
                    url: {target}
                    table: chat_users
                    key_column: id
                    columns: {{display_name: full_name, mobile: mobile,
                               source_system: source_system, initials: initials,
                               synced_at: $synced_at, origin: $stream}}
            """
        )
    )
    return path


CHAT_USERS = """
CREATE TABLE chat_users (
    id bigint PRIMARY KEY, display_name text, mobile varchar(40), source_system text,
    initials text, synced_at timestamptz, origin text
)
"""


async def sync_users(config_path: Path) -> None:
    config = load_config(config_path)
    from syncworker.state import state_store_from_url

    store = state_store_from_url(config.app.state)
    await store.open()
    try:
        [pipeline] = config.build(store, ["users"])
        try:
            run = await pipeline.run_once()
            assert run.status == "success", run
        finally:
            await pipeline.close()
    finally:
        await store.close()


async def test_a_pipelines_mapping_filter_constants_and_computed_fields(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, USERS)
    await sql(pg_url, USER_ROWS, {"rows": 2000})
    await sql(pg_url, "UPDATE users SET deleted_at = now() WHERE id IN (1, 2)")
    await table_capture.install(pg_url, "users")
    await sql(target_url, CHAT_USERS)
    path = users_config(tmp_path, pg_url, target_url)
    await sync_users(path)
    config = load_config(path)
    report = await verify_pipeline(config, "users", VerifyOptions(segments=20))
    assert report.status == "consistent", report.lines()
    active = 2000 - 200 - 2  # status = 'active', not soft-deleted
    assert report.source_rows == report.target_rows == active
    assert report.compared_columns == ["display_name", "mobile", "source_system", "origin"]
    notes = {n.column: n.reason for n in report.not_compared}
    assert "verify_fns:initials" in notes["initials"]
    assert "sync time" in notes["synced_at"]

    await sql(target_url, "UPDATE chat_users SET source_system = 'other' WHERE id = 3")
    await sql(target_url, "UPDATE chat_users SET initials = 'zz' WHERE id = 4")  # not compared
    await sql(
        target_url,
        "INSERT INTO chat_users (id, display_name) VALUES (10, 'inactive'), (1, 'deleted')",
    )
    await sql(pg_url, "UPDATE users SET phone = NULL WHERE id = 5")
    report = await verify_pipeline(config, "users", VerifyOptions(segments=20))
    assert found(report) == {3: "different", 5: "different", 10: "extra", 1: "extra"}
    assert report.different_columns == {3: ["source_system"], 5: ["mobile"]}


async def test_verify_refuses_what_it_cannot_follow(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    extra = '- {type: python, function: "verify_fns:initials"}'
    config = load_config(users_config(tmp_path, pg_url, target_url, extra))
    with pytest.raises(ConfigError, match="cannot follow a 'python' processor"):
        await verify_pipeline(config, "users", VerifyOptions())


async def test_repair_resyncs_exactly_the_keys_found(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, USERS)
    await sql(pg_url, USER_ROWS, {"rows": 1000})
    await table_capture.install(pg_url, "users")
    await sql(target_url, CHAT_USERS)
    path = users_config(tmp_path, pg_url, target_url)
    await sync_users(path)
    before = "2000-01-01 00:00:00+00"
    await sql(target_url, "UPDATE chat_users SET synced_at = %s", (before,))
    await sql(target_url, "UPDATE chat_users SET display_name = 'x' WHERE id IN (3, 4)")
    await sql(target_url, "DELETE FROM chat_users WHERE id = 5")
    await sql(target_url, "INSERT INTO chat_users (id, display_name) VALUES (20, 'inactive')")
    config = load_config(path)
    report = await verify_pipeline(config, "users", VerifyOptions(repair=True))
    assert found(report) == {3: "different", 4: "different", 5: "missing", 20: "extra"}
    assert report.repair is not None
    assert sorted(report.repair.repaired) == [3, 4, 5, 20] and report.repair.failed == []
    assert report.repair.applied_by == "run-once"
    # Exactly those keys were written again (the extra one deleted); no other row was.
    rewritten = await sql(
        target_url, "SELECT id FROM chat_users WHERE synced_at > %s ORDER BY id", (before,)
    )
    assert rewritten == [(3,), (4,), (5,)]
    assert await sql(target_url, "SELECT count(*) FROM chat_users WHERE id = 20") == [(0,)]
    again = await verify_pipeline(config, "users", VerifyOptions())
    assert again.status == "consistent"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncworker.cli", "verify", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_exit_codes_and_json(pg_url: str, target_url: str, tmp_path: Path) -> None:
    await sql(pg_url, USERS)
    await sql(pg_url, USER_ROWS, {"rows": 500})
    await table_capture.install(pg_url, "users")
    await sql(target_url, CHAT_USERS)
    path = users_config(tmp_path, pg_url, target_url)
    await sync_users(path)

    ok = cli("users", "--config", str(path), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["status"] == "consistent"
    text = cli("users", "--config", str(path), "--progress", "--ignore-recent", "5")
    assert text.returncode == 0, text.stderr
    assert "Consistency: CONSISTENT" in text.stdout
    assert "Ignored as changed in the last 5 s" in text.stdout
    assert "Recent updates (last hour)" in text.stdout

    await sql(target_url, "DELETE FROM chat_users WHERE id IN (7, 8)")
    bad = cli("users", "--config", str(path), "--json", "--segments", "5")
    assert bad.returncode == 1, bad.stderr
    data = json.loads(bad.stdout)
    assert data["missing"] == {"count": 2, "keys": [7, 8], "truncated": False}
    assert data["source"]["rows"] - data["target"]["rows"] == data["difference"] == 2

    fixed = cli("users", "--config", str(path), "--repair", "--json")
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["repair"]["repaired"] == 2

    unknown = cli("nobody", "--config", str(path))
    assert unknown.returncode == 2
    assert "no pipeline named 'nobody'" in unknown.stderr
    refused = users_config(
        tmp_path, pg_url, target_url, "- {type: filter, field: status, equals: active}"
    )
    wrong = cli("users", "--config", str(refused))
    assert wrong.returncode == 2 and "cannot follow a 'filter' processor" in wrong.stderr


async def test_a_column_the_source_lacks_is_compared_as_null(pg_url: str, target_url: str) -> None:
    await users_in_both(pg_url, target_url, rows=200)
    await sql(target_url, "ALTER TABLE users ADD COLUMN nickname text")
    m = mapping(pg_url, target_url, "users", ["name", "nickname"])  # the sink writes NULL
    report = await run_compare(m, segments=4)
    assert report.status == "consistent", report.lines()
    assert any(n.column == "nickname" and "NULL" in n.reason for n in report.not_compared)
    await sql(target_url, "UPDATE users SET nickname = 'x' WHERE id = 9")
    assert found(await run_compare(m, segments=4)) == {9: "different"}


async def test_repair_without_the_capture_says_why(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, USERS)
    await sql(pg_url, USER_ROWS, {"rows": 50})
    await sql(target_url, CHAT_USERS)  # empty: every active row is missing
    config = load_config(users_config(tmp_path, pg_url, target_url))
    report = await verify_pipeline(config, "users", VerifyOptions(repair=True))
    assert report.missing.count == 45
    assert report.repair is not None and len(report.repair.failed) == 45
    assert "is the capture installed?" in (report.repair.error or "")
