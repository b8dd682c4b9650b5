"""The `syncworker` command as a user runs it: a subprocess, real files, exit codes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.waiting import wait_for

CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{root}/queue.db", key_field: id}}
    sinks:
      - {{type: jsonl, path: "{root}/out"}}
      - type: sqlite
        path: "{root}/sink.db"
        table: messages
        columns: {{text: text}}
    batch: {{size: 50, max_wait: 20ms}}
    retry: {{attempts: 2, delay: 10ms}}
    schedule: {{every: 1h}}
"""


def cli(
    *args: str, stdin: str | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "syncworker.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT CHECK (length(text) < 20))"
        )
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("size: 50", "sise: 50"),
            "syncworker.yaml:11: pipelines.chat.batch.sise: unknown setting 'sise'; "
            "did you mean 'size'?",
        ),
        (
            ("size: 50", "size: fifty"),
            "syncworker.yaml:11: pipelines.chat.batch.size: input should be a valid integer",
        ),
        (
            ('state: "sqlite:///', 'state: "postgress://'),
            "syncworker.yaml:1: state: expected a state URL like sqlite:///PATH",
        ),
    ],
)
def test_bad_config_exits_non_zero_with_one_line(
    config: Path, change: tuple[str, str], expected: str
) -> None:
    config.write_text(config.read_text().replace(*change))
    for command in ("validate", "run"):
        result = cli(command, str(config), check=False)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert expected in lines[0]
        assert "Traceback" not in result.stderr


def test_validate_reports_every_mistake_in_file_order(config: Path) -> None:
    config.write_text(
        config.read_text()
        .replace("key_field: id}", 'key_field: id, url: "redis://127.0.0.1:99999/0"}')
        .replace("size: 50", 'size: "${SYNC_BATCH_SIZE}"')
        .replace("max_wait: 20ms", "max_wait: 5 minutes")
        .replace("attempts: 2", "attempts: true")
        .replace("every: 1h", 'every: "${SYNC_INTERVAL_MS}ms"')
    )
    env = {**os.environ, "SYNC_BATCH_SIZE": "abc", "SYNC_INTERVAL_MS": "1m"}
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ", 3)[1:3] for line in lines] == [
        [f"{config}:4", "pipelines.chat.source.url"],
        [f"{config}:11", "pipelines.chat.batch.size"],
        [f"{config}:11", "pipelines.chat.batch.max_wait"],
        [f"{config}:12", "pipelines.chat.retry.attempts"],
        [f"{config}:13", "pipelines.chat.schedule.every"],
    ]
    assert all(line.startswith("config error: ") for line in lines)
    assert "unknown setting 'url' for sqlite_queue" in lines[0]
    assert lines[1].endswith("got SYNC_BATCH_SIZE='abc'")
    assert lines[2].endswith("got '5 minutes'") and lines[2].count("5 minutes") == 1
    assert lines[3].endswith("expected a number, got true")
    assert lines[4].endswith("got '1mms' (from SYNC_INTERVAL_MS='1m')")


def test_a_redis_port_out_of_range_is_refused_by_validate_and_run(tmp_path: Path) -> None:
    path = tmp_path / "redis.yaml"
    path.write_text(
        "pipelines:\n"
        "  p:\n"
        '    source: {type: redis_list, url: "redis://127.0.0.1:99999/0", lists: {in: a}}\n'
        f"    sinks: [{{type: jsonl, path: {tmp_path}/out}}]\n"
        "    processors: [{type: map, feilds: {id: id}}]\n"
    )
    for command in (["validate"], ["run", "--once"]):
        result = cli(*command, str(path), check=False)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines() == [
            f"config error: {path}:3: pipelines.p.source.url: invalid url: "
            "Port out of range 0-65535, got 'redis://127.0.0.1:99999/0'",
            f"config error: {path}:5: pipelines.p.processors[0].feilds: unknown setting "
            "'feilds' for map; did you mean 'fields'?",
        ]


def test_validate_builds_connectors_as_run_would(tmp_path: Path) -> None:
    """A transform that cannot be imported is refused by validate, with file:line."""
    path = tmp_path / "algolia.yaml"
    path.write_text(
        "pipelines:\n"
        "  p:\n"
        f"    source: {{type: sqlite_queue, path: {tmp_path}/q.db}}\n"
        "    sinks:\n"
        "      - type: algolia\n"
        "        app_id: app\n"
        "        api_key: key\n"
        "        indexes:\n"
        "          products:\n"
        "            index: products\n"
        "            transform: no_such_module:product\n"
    )
    result = cli("validate", str(path), check=False)
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == (
        f"config error: {path}:11: pipelines.p.sinks[0].indexes.products.transform: "
        "transform 'no_such_module:product' cannot be loaded: No module named 'no_such_module'"
    )
    assert not (tmp_path / "q.db").exists()  # built, not opened


# Runs the CLI as if the api extra were not installed: fastapi and uvicorn cannot be imported.
WITHOUT_API_EXTRA = """\
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"fastapi", "uvicorn"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from syncworker.cli import main
main()
"""


def test_validate_refuses_an_api_section_without_the_api_extra(config: Path) -> None:
    config.write_text('api: {listen: "127.0.0.1:0"}\n' + config.read_text())
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_API_EXTRA, "validate", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stderr.strip() == (
        f"config error: {config}:1: api: the API needs a package that is not installed "
        "(uvicorn); install the api extra: pip install -e '.[api]' in the checkout "
        "(or make install)"
    )


def test_enqueue_reads_only_its_source(config: Path, tmp_path: Path) -> None:
    config.write_text(
        config.read_text().replace(
            "    batch:", '      - {type: webhook, url: "${HOOK_URL}"}\n    batch:'
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "HOOK_URL"}
    queued = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", "enqueue", "--config", str(config), "{}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert queued.returncode == 0, queued.stderr
    refused = cli("validate", str(config), check=False)
    assert refused.returncode == 2 and "HOOK_URL is not set" in refused.stderr


def test_validate_accepts_a_good_config(config: Path) -> None:
    result = cli("validate", str(config))
    assert "ok (1 pipeline(s): chat)" in result.stdout


def test_enqueue_run_once_and_dead_letters(config: Path, tmp_path: Path) -> None:
    messages = [orjson.dumps({"id": f"m{i}", "text": f"hi {i}"}).decode() for i in range(20)]
    messages.append(orjson.dumps({"id": "long", "text": "far too long for the table"}).decode())
    result = cli(
        "enqueue", "--config", str(config), "--stream", "in", stdin="\n".join(messages) + "\n"
    )
    assert "queued 21 message(s) on stream 'in'" in result.stdout
    cli("enqueue", "--queue", str(tmp_path / "queue.db"), "--stream", "out", "not json at all")

    cli("run", "--once", str(config))
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM messages")}
    assert {f"m{i}" for i in range(20)} <= keys and "long" not in keys
    assert len(keys) == 21  # 20 messages + the wrapped non-JSON one (keyed by its hash)

    listed = orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout)
    assert [(d["record_key"], d["where"], d["status"]) for d in listed] == [
        ("long", "sink:sqlite", "dead")
    ]
    letter_id = str(listed[0]["id"])
    shown = orjson.loads(cli("dlq", "show", letter_id, "--config", str(config)).stdout)
    assert shown["data"]["text"] == "far too long for the table"
    assert "CHECK constraint failed" in shown["error"] and "Traceback" in shown["stack"]

    status = orjson.loads(cli("status", "--config", str(config), "--json").stdout)
    chat = status["pipelines"]["chat"]
    assert chat["last_run"]["processed"] == 22 and chat["dead_letters"] == {"dead": 1}

    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute("DROP TABLE messages")
        conn.execute("CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT)")
    assert (
        "requeued 1 dead letter(s)"
        in cli("dlq", "requeue", letter_id, "--config", str(config)).stdout
    )
    cli("run", "--once", str(config))
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        assert conn.execute("SELECT text FROM messages WHERE key = 'long'").fetchone() == (
            "far too long for the table",
        )
    assert orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout) == []


def test_dlq_purge_and_missing_ids(config: Path, tmp_path: Path) -> None:
    cli("enqueue", "--config", str(config), orjson.dumps({"id": "x", "text": "y" * 30}).decode())
    cli("run", "--once", str(config))
    assert (
        "purged 1 dead letter(s)"
        in cli("dlq", "purge", "--all", "--yes", "--config", str(config)).stdout
    )
    missing = cli("dlq", "show", "999", "--config", str(config), check=False)
    assert missing.returncode == 1 and "no dead letter with id 999" in missing.stderr
    neither = cli("dlq", "requeue", "--config", str(config), check=False)
    assert neither.returncode == 2 and "give dead letter ids, or --all" in neither.stderr


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"], ["dlq", "show", "1"]])
def test_reading_commands_never_create_a_state_store(tmp_path: Path, command: list[str]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    bare = cli(*command, check=False, cwd=work)
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert bare.stderr.strip() == (
        "config error: no state store given: use --config FILE (its state store), "
        "--state URL, or --api URL (a running engine)"
    )
    missing = cli(*command, "--state", "sqlite:///nothing.db", check=False, cwd=work)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        "error: no state store at nothing.db: nothing has run with it yet"
    )
    config = work / "syncworker.yaml"
    config.write_text(CONFIG.format(root=work))
    never_ran = cli(*command, "--config", str(config), check=False, cwd=work)
    assert never_ran.returncode == 1
    assert f"no state store at {work}/state.db (the state store of {config})" in never_ran.stderr
    assert sorted(p.name for p in work.iterdir()) == ["syncworker.yaml"]


def test_dlq_answers_match_the_api(config: Path) -> None:
    cli("enqueue", "--config", str(config), orjson.dumps({"id": "x", "text": "y" * 30}).decode())
    cli("run", "--once", str(config))
    [letter] = orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout)
    letter_id = str(letter["id"])
    purge = cli("dlq", "purge", "999", "--config", str(config), check=False)
    assert purge.returncode == 1 and purge.stderr.strip() == "error: no dead letter with id 999"
    requeue = cli("dlq", "requeue", "999", "--config", str(config), check=False)
    assert requeue.returncode == 1 and "no dead letter with id 999" in requeue.stderr
    assert "requeued 1" in cli("dlq", "requeue", letter_id, "--config", str(config)).stdout
    again = cli("dlq", "requeue", letter_id, "--config", str(config), check=False)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: dead letter {letter_id} is already requeued"
    both = cli("dlq", "purge", letter_id, "999", "--config", str(config), check=False)
    assert both.returncode == 1  # all or nothing: the existing one is kept
    [kept] = orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout)
    assert kept["id"] == letter["id"]
    assert "purged 1" in cli("dlq", "purge", letter_id, "--config", str(config)).stdout


def test_sigterm_stops_cleanly_with_final_stats(config: Path, tmp_path: Path) -> None:
    config.write_text(config.read_text().replace("every: 1h", "stream: true"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "syncworker.cli", "--log-format", "json", "run", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        cli(
            "enqueue",
            "--config",
            str(config),
            *(orjson.dumps({"id": f"k{i}", "text": "t"}).decode() for i in range(30)),
        )
        wait_for(lambda: _rows(tmp_path) >= 30, "30 rows in the sink")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 0
    events = [orjson.loads(line) for line in output.splitlines() if line.startswith(b"{")]
    names = [e["event"] for e in events]
    assert "signal_received" in names and names[-1] == "engine_stopped"
    assert events[-1]["pipelines"]["chat"]["processed"] == 30


def test_demo_runs_without_services(tmp_path: Path) -> None:
    result = cli("demo", "--dir", str(tmp_path / "demo"), "--messages", "3000", "--no-progress")
    assert "demo summary" in result.stdout
    out = tmp_path / "demo" / "out"
    lines = [
        orjson.loads(line)
        for path in out.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert len(lines) == 3000
    assert sum(1 for line in lines if line.get("wrapped") is True) == 5
    with sqlite3.connect(tmp_path / "demo" / "messages.db") as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2999
    listed = orjson.loads(
        cli("dlq", "list", "--config", str(tmp_path / "demo" / "syncworker.yaml"), "--json").stdout
    )
    assert len(listed) == 1 and "CHECK constraint failed" in listed[0]["error"]


def _rows(root: Path) -> int:
    try:
        with sqlite3.connect(root / "sink.db", timeout=5) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_run_stops_with_one_line_when_a_sink_refuses_its_config(config: Path) -> None:
    # The table exists without the mapped column: retrying cannot fix that.
    config.write_text(config.read_text().replace("columns: {text: text}", "columns: {body: text}"))
    result = cli("run", str(config), check=False)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("config error:") and "body" in last


def test_dlq_show_prints_numbers_beyond_a_double_exactly(config: Path) -> None:
    big, dec = "123456789012345678901234567890", "0.1000000000000000000000001"
    message = f'{{"id": "exact", "text": "far too long for the table", "big": {big}, "dec": {dec}}}'
    cli("enqueue", "--config", str(config), "--stream", "in", stdin=message + "\n")
    cli("run", "--once", str(config))
    listed = orjson.loads(cli("dlq", "list", "--config", str(config), "--json").stdout)
    assert [d["record_key"] for d in listed] == ["exact"]
    shown = cli("dlq", "show", str(listed[0]["id"]), "--config", str(config))
    compact = shown.stdout.replace(" ", "")
    assert f'"big":{big}' in compact and f'"dec":{dec}' in compact, shown.stdout
