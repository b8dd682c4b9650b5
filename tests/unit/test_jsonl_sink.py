"""The ``jsonl`` sink: day files per stream, appends, crash repair, per-record failures."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from syncworker.connectors.files.sink_jsonl import JsonlSink, JsonlSinkConfig
from syncworker.core.protocols import Sink
from syncworker.core.record import Record
from syncworker.errors import PermanentError


def make_sink(directory: Path, **settings: Any) -> JsonlSink:
    return JsonlSink({"type": "jsonl", "path": str(directory), **settings}, name="jsonl")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def file_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def read_lines(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def opened(directory: Path, **settings: Any) -> JsonlSink:
    sink = make_sink(directory, **settings)
    await sink.open()
    return sink


async def test_one_file_per_stream_per_utc_day(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    sink = await opened(out)
    assert isinstance(sink, Sink)
    date = today()

    result = await sink.write(
        [
            Record("1", {"id": 1, "text": "a"}, stream="in"),
            Record("2", {"id": 2, "text": "b"}, stream="out"),
            Record("3", {"id": 3, "text": "c"}, stream="in"),
        ]
    )

    assert result.failed == {}
    assert file_names(out) == [f"messages_in_{date}.jsonl", f"messages_out_{date}.jsonl"]
    assert read_lines(out / f"messages_in_{date}.jsonl") == [
        {"id": 1, "text": "a"},
        {"id": 3, "text": "c"},
    ]
    assert read_lines(out / f"messages_out_{date}.jsonl") == [{"id": 2, "text": "b"}]


async def test_batches_append_to_the_same_file(tmp_path: Path) -> None:
    sink = await opened(tmp_path, file="all.jsonl")
    await sink.write([Record("1", {"n": 1})])
    await sink.write([Record("2", {"n": 2}), Record("3", {"n": 3})])
    # A second sink (a restarted process) appends too.
    await (await opened(tmp_path, file="all.jsonl")).write([Record("4", {"n": 4})])

    assert read_lines(tmp_path / "all.jsonl") == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}]


async def test_torn_tail_is_cut_back_before_the_first_append(tmp_path: Path) -> None:
    target = tmp_path / "all.jsonl"
    target.write_bytes(b'{"n": 1}\n{"n": 2}\n{"n": 3, "te')
    sink = await opened(tmp_path, file="all.jsonl")

    with capture_logs() as logs:
        await sink.write([Record("3", {"n": 3})])
        await sink.write([Record("4", {"n": 4})])

    assert target.read_bytes() == b'{"n": 1}\n{"n": 2}\n{"n":3}\n{"n":4}\n'
    repairs = [e for e in logs if e["event"] == "jsonl_torn_tail_repaired"]
    assert len(repairs) == 1
    assert repairs[0]["dropped_bytes"] == len(b'{"n": 3, "te')
    assert repairs[0]["file"] == str(target)


async def test_torn_tail_without_any_complete_line_empties_the_file(tmp_path: Path) -> None:
    target = tmp_path / "all.jsonl"
    target.write_bytes(b"x" * 100_000)  # longer than one backwards read
    sink = await opened(tmp_path, file="all.jsonl")

    await sink.write([Record("1", {"n": 1})])

    assert target.read_bytes() == b'{"n":1}\n'


async def test_unserializable_record_is_reported_and_the_rest_written(tmp_path: Path) -> None:
    sink = await opened(tmp_path, file="all.jsonl")

    result = await sink.write(
        [
            Record("a", {"n": 1}),
            Record("b", {"n": object()}),
            Record("c", {"n": 3}),
        ]
    )

    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], PermanentError)
    assert "'b'" in str(result.failed[1])
    assert read_lines(tmp_path / "all.jsonl") == [{"n": 1}, {"n": 3}]


async def test_deletes_are_lines_too(tmp_path: Path) -> None:
    records = [Record("k1", {"v": 1}, stream="s"), Record("k1", {}, stream="s", op="delete")]
    data_sink = await opened(tmp_path, file="data.jsonl")
    record_sink = await opened(tmp_path, file="record.jsonl", fields="record")

    await data_sink.write(records)
    await record_sink.write(records)

    assert read_lines(tmp_path / "data.jsonl") == [{"v": 1}, {"key": "k1", "deleted": True}]
    assert read_lines(tmp_path / "record.jsonl") == [
        {"key": "k1", "op": "upsert", "stream": "s", "data": {"v": 1}},
        {"key": "k1", "op": "delete", "stream": "s", "data": {}},
    ]


async def test_stream_names_cannot_escape_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sink = await opened(out, file="{stream}.jsonl")

    await sink.write([Record("1", {"n": 1}, stream="../../etc/x"), Record("2", {}, stream="..")])

    assert file_names(out) == [".._.._etc_x.jsonl", "_.jsonl"]
    assert file_names(tmp_path) == ["out"]


async def test_pipeline_placeholder_and_subdirectories(tmp_path: Path) -> None:
    sink = JsonlSink(
        {
            "type": "jsonl",
            "path": str(tmp_path),
            "fsync": False,
            "file": "{pipeline}/{date}/{stream}.jsonl",
        },
        name="jsonl",
        pipeline="chat",
    )
    await sink.open()

    await sink.write([Record("1", {"n": 1}, stream="in")])

    assert read_lines(tmp_path / "chat" / today() / "in.jsonl") == [{"n": 1}]


@pytest.mark.parametrize(
    "template",
    [
        "messages_{queue}.jsonl",
        "{stream!r}.jsonl",
        "{date:%Y}.jsonl",
        "../{stream}.jsonl",
        "/tmp/{stream}.jsonl",
        "{stream",
        "",
    ],
)
def test_config_rejects_bad_file_templates(template: str) -> None:
    with pytest.raises(ValidationError):
        JsonlSinkConfig(type="jsonl", file=template)


def test_config_defaults() -> None:
    config = JsonlSinkConfig(type="jsonl")
    assert (str(config.path), config.file, config.fields, config.fsync) == (
        "data/sync",
        "messages_{stream}_{date}.jsonl",
        "data",
        True,
    )
    with pytest.raises(ValidationError):
        JsonlSinkConfig(type="jsonl", fields="everything")


async def test_numbers_beyond_a_double_are_written_exactly(tmp_path: Path) -> None:
    # Before: orjson refused the integer ("Integer exceeds 64-bit range") and the Decimal, so
    # the record was refused instead of written.
    sink = await opened(tmp_path, file="all.jsonl")
    data = {
        "n": 123456789012345678901234567890,
        "d": Decimal("0.1000000000000000000000001"),
        "e": Decimal("1E+400"),
        "nested": [{"m": -(2**70)}],
        "f": 0.5,
    }

    result = await sink.write([Record("1", data)])

    assert result.failed == {}
    assert (tmp_path / "all.jsonl").read_bytes() == (
        b'{"n":123456789012345678901234567890,"d":0.1000000000000000000000001,"e":1E+400,'
        b'"nested":[{"m":-1180591620717411303424}],"f":0.5}\n'
    )


async def test_a_value_with_no_exact_json_form_refuses_that_record_alone(tmp_path: Path) -> None:
    sink = await opened(tmp_path, file="all.jsonl")

    result = await sink.write(
        [Record("1", {"n": 1}), Record("2", {"x": Decimal("NaN")}), Record("3", {"n": 3})]
    )

    assert list(result.failed) == [1]
    assert isinstance(result.failed[1], PermanentError)
    assert "NaN" in str(result.failed[1])
    assert read_lines(tmp_path / "all.jsonl") == [{"n": 1}, {"n": 3}]
