"""Config files: environment substitution, validation, one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncworker.config import every_error, load_config, parse_config
from syncworker.core.durations import parse_duration_s
from syncworker.errors import ConfigError

GOOD = """\
state: sqlite:///{tmp}/state.db
pipelines:
  chat:
    source: {{type: sqlite_queue, path: "{tmp}/queue.db", key_field: id}}
    processors: [{{type: map, fields: {{id: id, body: text}}}}]
    sinks:
      - {{type: jsonl, path: "${{SYNC_FILE_PATH:-{tmp}/out}}"}}
      - {{type: sqlite, path: "{tmp}/out.db"}}
    batch: {{size: "${{SYNC_BATCH_SIZE:-100}}", max_wait: 1s}}
    schedule: {{every: "${{SYNC_INTERVAL_MS:-60000}}ms"}}
    retry: {{attempts: 3, delay: 5s, factor: 2, max_delay: 30s}}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncworker.yaml"
    path.write_text(text)
    return path


def error_line(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_good_config_with_defaults_from_the_environment(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD.format(tmp=tmp_path)), environ={})
    spec = config.pipelines["chat"]
    assert spec.config.batch.size == 100
    assert spec.config.schedule.every == 60.0
    assert spec.source.type == "sqlite_queue"
    assert [s.type for s in spec.sinks] == ["jsonl", "sqlite"]
    settings = spec.settings(30)
    assert settings.schedule.kind == "every" and settings.schedule.interval_s == 60
    assert settings.retry.delay_s == 5 and settings.retry.max_delay_s == 30


def test_environment_values_win_over_defaults(tmp_path: Path) -> None:
    environ = {"SYNC_BATCH_SIZE": "250", "SYNC_INTERVAL_MS": "1500"}
    config = load_config(write(tmp_path, GOOD.format(tmp=tmp_path)), environ=environ)
    assert config.pipelines["chat"].config.batch.size == 250
    assert config.pipelines["chat"].config.schedule.every == 1.5


def test_missing_variable_without_default(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace('"${SYNC_BATCH_SIZE:-100}"', '"${BATCH}"')
    line = error_line(tmp_path, text)
    assert (
        "syncworker.yaml:9: pipelines.chat.batch.size: environment variable BATCH is not set"
        in line
    )


def test_misspelled_key_names_the_file_line_setting_and_a_suggestion(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("size:", "bath_size:")
    line = error_line(tmp_path, text)
    assert line.endswith(
        "syncworker.yaml:9: pipelines.chat.batch.bath_size: unknown setting 'bath_size'; "
        "did you mean 'size'?"
    )


def test_misspelled_connector_key_names_the_connector(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("key_field: id", "key_feild: id")
    line = error_line(tmp_path, text)
    assert (
        "pipelines.chat.source.key_feild: unknown setting 'key_feild' for sqlite_queue; "
        "did you mean 'key_field'?" in line
    )


def test_wrong_type(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("attempts: 3", "attempts: three")
    line = error_line(tmp_path, text)
    assert (
        "syncworker.yaml:11: pipelines.chat.retry.attempts: input should be a valid integer" in line
        and "'three'" in line
    )


def test_bad_duration(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("max_wait: 1s", "max_wait: soon")
    line = error_line(tmp_path, text)
    assert "pipelines.chat.batch.max_wait: expected a duration like 500ms" in line


def test_bad_state_url(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("state: sqlite:///", "state: sqlit://")
    line = error_line(tmp_path, text)
    assert "syncworker.yaml:1: state: expected a state URL like sqlite:///PATH" in line


def test_unknown_connector_type_lists_the_known_ones(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("type: jsonl", "type: jsonlines")
    line = error_line(tmp_path, text)
    assert (
        "pipelines.chat.sinks[0].type: unknown sink type 'jsonlines'; expected one of:" in line
        and "jsonl" in line
    )


def test_schedule_needs_exactly_one_kind(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace(
        'schedule: {every: "${SYNC_INTERVAL_MS:-60000}ms"}', 'schedule: {cron: "61 * * * *"}'
    )
    line = error_line(tmp_path, text)
    assert "pipelines.chat.schedule.cron: expected a cron expression" in line


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    line = error_line(tmp_path, "pipelines:\n  chat: [unclosed\n")
    assert "syncworker.yaml:3: not valid YAML" in line


def test_missing_sinks(tmp_path: Path) -> None:
    line = error_line(
        tmp_path, f"pipelines:\n  p:\n    source: {{type: sqlite_queue, path: {tmp_path}/q.db}}\n"
    )
    assert "pipelines.p.sinks: required setting is missing" in line


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_parse_config_builds_pipelines(tmp_path: Path) -> None:
    from syncworker.state import SqliteStateStore

    config = parse_config(GOOD.format(tmp=tmp_path), environ={})
    [pipeline] = config.build(SqliteStateStore(tmp_path / "s.db"))
    assert pipeline.name == "chat"
    assert [s.name for s in pipeline.sinks] == ["jsonl", "sqlite"]
    assert [p.name for p in pipeline.processors] == ["map"]
    with pytest.raises(ConfigError, match="no pipeline named 'other'"):
        config.build(SqliteStateStore(tmp_path / "s.db"), ["other"])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        (250, 0.25),
        ("1500", 1.5),
        ("1.5s", 1.5),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["ten seconds", "-5s", True, None, "5 parsecs"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration_s(bad)


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        (
            "${REDIS_URL:-redis://${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}}",
            {},
            "redis://127.0.0.1:6379",
        ),
        (
            "${REDIS_URL:-redis://${REDIS_HOST:-127.0.0.1}:${REDIS_PORT:-6379}}",
            {"REDIS_HOST": "cache", "REDIS_PORT": "6380"},
            "redis://cache:6380",
        ),
        ("${REDIS_URL:-redis://${REDIS_HOST:-h}}", {"REDIS_URL": "redis://set"}, "redis://set"),
        (
            "${POSTGRES_URL:-${DATABASE_URL}}",
            {"DATABASE_URL": "postgresql://db/x"},
            "postgresql://db/x",
        ),
        ("${HOOK:+true}", {"HOOK": "http://h"}, "true"),
        ("${HOOK:+true}", {}, ""),
        ("${TRICK}", {"TRICK": "${NOT_EXPANDED}"}, "${NOT_EXPANDED}"),
    ],
)
def test_nested_defaults_and_plus(text: str, environ: dict[str, str], expected: str) -> None:
    from syncworker.config import _Check, _substitute

    assert _substitute(text, (), _Check("f.yaml", {}, environ)) == expected


def test_disabled_sinks_are_left_out(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace(
        '{type: sqlite, path: "', '{type: sqlite, enabled: "${SQLITE_ON:+true}", path: "'
    )
    off = load_config(write(tmp_path, text), environ={})
    assert [s.type for s in off.pipelines["chat"].sinks] == ["jsonl"]
    on = load_config(write(tmp_path, text), environ={"SQLITE_ON": "1"})
    assert [s.type for s in on.pipelines["chat"].sinks] == ["jsonl", "sqlite"]
    only_disabled = text.replace("{type: jsonl, path:", "{type: jsonl, enabled: false, path:")
    line = error_line(tmp_path, only_disabled)
    assert "pipelines.chat.sinks: every sink is disabled" in line


def test_dead_letter_store_source_needs_a_source_keeping_failures(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "pipelines:\n"
        "  p:\n"
        "    source: {type: sqlite_queue, path: q.db}\n"
        "    sinks: [{type: jsonl, path: out}]\n"
        "    dead_letter: {store: source}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path}:5" in message and "pipelines.p.dead_letter.store" in message
    assert "pg_outbox" in message and "sqlite_queue does not" in message


# -- every mistake, once, in file order (issue 9: I, 3) ------------------------------------


def all_lines(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ=environ or {})
    return [str(e) for e in every_error(caught.value)]


def test_every_mistake_is_reported_in_file_order(tmp_path: Path) -> None:
    text = (
        GOOD.format(tmp=tmp_path)
        .replace("state: sqlite:///", "state: sqlit:///")
        .replace("key_field: id", "key_feild: id")
        .replace("max_wait: 1s", "max_wait: soon")
        .replace("attempts: 3", "attempts: three")
    )
    lines = all_lines(tmp_path, text)
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{tmp_path}/syncworker.yaml:1", "state"],
        [f"{tmp_path}/syncworker.yaml:4", "pipelines.chat.source.key_feild"],
        [f"{tmp_path}/syncworker.yaml:9", "pipelines.chat.batch.max_wait"],
        [f"{tmp_path}/syncworker.yaml:11", "pipelines.chat.retry.attempts"],
    ]


def test_a_misspelled_required_key_is_named_as_the_misspelling(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("{type: map, fields:", "{type: map, feilds:")
    assert all_lines(tmp_path, text) == [
        f"{tmp_path}/syncworker.yaml:5: pipelines.chat.processors[0].feilds: unknown setting "
        "'feilds' for map; did you mean 'fields'?"
    ]


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        (('size: "${SYNC_BATCH_SIZE:-100}"', "size: true"), "pipelines.chat.batch.size"),
        (("attempts: 3", "attempts: false"), "pipelines.chat.retry.attempts"),
        (("factor: 2", "factor: true"), "pipelines.chat.retry.factor"),
        (("key_field: id", "key_field: id, poll_interval: true"), "chat.source.poll_interval"),
    ],
)
def test_true_and_false_are_not_numbers(
    tmp_path: Path, change: tuple[str, str], setting: str
) -> None:
    [line] = all_lines(tmp_path, GOOD.format(tmp=tmp_path).replace(*change))
    assert setting in line and line.endswith(("expected a number, got true", "got false"))


def test_a_refused_value_is_shown_once(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace("max_wait: 1s", "max_wait: 5 minutes")
    [line] = all_lines(tmp_path, text)
    assert line.endswith(
        "expected a duration like 500ms, 10s, 5m, 1h or a number of ms, got '5 minutes'"
    )
    assert line.count("5 minutes") == 1


def test_a_bad_value_names_the_variable_it_came_from(tmp_path: Path) -> None:
    environ = {"SYNC_BATCH_SIZE": "abc", "SYNC_INTERVAL_MS": "1m"}
    size, every = all_lines(tmp_path, GOOD.format(tmp=tmp_path), environ)
    assert size.startswith(f"{tmp_path}/syncworker.yaml:9: pipelines.chat.batch.size: ")
    assert size.endswith("got SYNC_BATCH_SIZE='abc'") and size.count("abc") == 1
    assert every.startswith(f"{tmp_path}/syncworker.yaml:10: pipelines.chat.schedule.every: ")
    assert every.endswith("got '1mms' (from SYNC_INTERVAL_MS='1m')")


def test_a_secret_from_the_environment_is_not_shown(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace(
        "schedule:", 'lock: {url: "${LOCK_URL}", key: k}\n    schedule:'
    )
    [line] = all_lines(tmp_path, text, {"LOCK_URL": "redis://:s3cret@h:99999/0"})
    assert "pipelines.chat.lock.url" in line and "LOCK_URL" in line
    assert "s3cret" not in line


@pytest.mark.parametrize(
    ("sink_or_lock", "setting"),
    [
        ('lock: {url: "redis://127.0.0.1:99999/0", key: k}', "pipelines.chat.lock.url"),
        ('lock: {url: "postgresql://h:99999/db", key: k}', "pipelines.chat.lock.url"),
        ("sinks[1]: {type: postgres, url: 'postgresql://h:99999/db', table: t}", "sinks[1].url"),
        ("sinks[1]: {type: webhook, url: 'http://h:99999/'}", "sinks[1].url"),
        ("sinks[1]: {type: webhook, url: 'http://h:port/'}", "sinks[1].url"),
        (
            "sinks[1]: {type: algolia, app_id: a, api_key: k, hosts: 'http://h:99999', "
            "indexes: {in: {index: i}}}",
            "hosts",
        ),
    ],
)
def test_a_url_with_an_impossible_port_is_refused(
    tmp_path: Path, sink_or_lock: str, setting: str
) -> None:
    text = GOOD.format(tmp=tmp_path)
    if sink_or_lock.startswith("lock"):
        text = text.replace("schedule:", f"{sink_or_lock}\n    schedule:")
    else:
        text = text.replace(
            f'{{type: sqlite, path: "{tmp_path}/out.db"}}', sink_or_lock.split(": ", 1)[1]
        )
    [line] = all_lines(tmp_path, text)
    assert setting in line and ("port" in line.lower() or "Port" in line), line


def test_a_redis_source_url_with_an_impossible_port_is_refused(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace(
        f'{{type: sqlite_queue, path: "{tmp_path}/queue.db", key_field: id}}',
        '{type: redis_list, url: "redis://127.0.0.1:99999/0", lists: {in: a}}',
    )
    [line] = all_lines(tmp_path, text)
    assert line.startswith(f"{tmp_path}/syncworker.yaml:4: pipelines.chat.source.url: ")
    assert "Port out of range" in line and line.count("99999") == 1


def test_a_short_value_is_shown_even_when_the_message_has_its_digits(tmp_path: Path) -> None:
    text = GOOD.format(tmp=tmp_path).replace('size: "${SYNC_BATCH_SIZE:-100}"', "size: 0")
    [line] = all_lines(tmp_path, text)
    assert line.endswith("batch.size: input should be greater than or equal to 1, got 0")


def test_build_reports_every_connector_that_refuses_with_its_line(tmp_path: Path) -> None:
    from syncworker.state import SqliteStateStore

    pipeline = (
        "  {name}:\n"
        "    source: {{type: sqlite_queue, path: ROOT/q.db}}\n"
        "    sinks:\n"
        "      - type: algolia\n"
        "        app_id: app\n"
        "        api_key: key\n"
        "        indexes: {{products: {{index: p, transform: 'missing_{name}:f'}}}}\n"
    )
    text = "pipelines:\n" + pipeline.format(name="one") + pipeline.format(name="two")
    text = text.replace("ROOT", str(tmp_path))
    config = load_config(write(tmp_path, text), environ={})
    with pytest.raises(ConfigError) as caught:
        config.build(SqliteStateStore(tmp_path / "s.db"))
    assert [str(e) for e in every_error(caught.value)] == [
        f"{tmp_path}/syncworker.yaml:{line}: pipelines.{name}.sinks[0].indexes.products."
        f"transform: transform 'missing_{name}:f' cannot be loaded: No module named "
        f"'missing_{name}'"
        for line, name in ((8, "one"), (15, "two"))
    ]


@pytest.mark.parametrize("token", ['""', '"   "', '"${SYNCWORKER_API_TOKEN:-}"', '"\\t"'])
def test_a_blank_api_token_is_no_token(tmp_path: Path, token: str) -> None:
    text = GOOD.format(tmp=tmp_path) + f'api: {{listen: "127.0.0.1:0", token: {token}}}\n'
    config = load_config(write(tmp_path, text), environ={"SYNCWORKER_API_TOKEN": " "})
    assert config.app.api is not None and config.app.api.token is None


@pytest.mark.parametrize(("flag", "runs"), [("", False), ("true", True), ("truetrue", True)])
def test_a_pipelines_enabled_flag_reads_the_variable_idiom(flag: str, runs: bool) -> None:
    config = parse_config(
        "pipelines:\n"
        "  bridge:\n"
        f"    enabled: {flag!r}\n"
        "    source: {type: sqlite_queue, path: q.db}\n"
        "    sinks: [{type: jsonl, path: out}]\n"
    )
    assert config.pipelines["bridge"].config.enabled is runs
