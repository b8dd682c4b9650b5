"""The connector registry: built-in type names, unknown names, registering a custom class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from syncworker.config import parse_config
from syncworker.connectors.files.sink_jsonl import JsonlSink
from syncworker.connectors.sqlite.sink import SqliteSink
from syncworker.connectors.sqlite.source_queue import SqliteQueueSource
from syncworker.core import Record, registry
from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.errors import ConfigError
from syncworker.processors.builtin import FilterProcessor, MapProcessor, PythonProcessor
from syncworker.state import SqliteStateStore


class CollectSinkConfig(ConnectorConfig):
    type: Literal["collect_test"] = "collect_test"
    label: str
    limit: int = 10


class CollectSink:
    """A custom sink, as a user's project would define one."""

    config_model: ClassVar[type[ConnectorConfig]] = CollectSinkConfig

    def __init__(self, config: CollectSinkConfig, *, name: str) -> None:
        self.config = config
        self.name = name
        self.seen: list[str] = []

    async def open(self) -> None:
        return None

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        self.seen.extend(r.key for r in records)
        return None

    async def close(self) -> None:
        return None


class TagConfig(ConnectorConfig):
    type: Literal["tag_test"] = "tag_test"
    tag: str


class TagProcessor:
    config_model: ClassVar[type[ConnectorConfig]] = TagConfig

    def __init__(self, config: TagConfig, *, name: str) -> None:
        self.name = name
        self.tag = config.tag

    def process(self, record: Record) -> Record | None:
        record.data["tag"] = self.tag
        return record


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_extra", {})


def config_text(tmp_path: Path, sinks: str, processors: str = "[]") -> str:
    return f"""\
state: sqlite:///{tmp_path}/state.db
pipelines:
  custom:
    source: {{type: sqlite_queue, path: "{tmp_path}/queue.db", key_field: id}}
    processors: {processors}
    sinks: {sinks}
"""


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("source", {"sqlite_queue"}),
        ("sink", {"jsonl", "sqlite"}),
        ("processor", {"map", "filter", "python"}),
    ],
)
def test_built_in_names(kind: registry.Kind, expected: set[str]) -> None:
    found = registry.names(kind)
    assert expected <= set(found)
    assert found == sorted(found)


def test_kinds_do_not_mix() -> None:
    assert "sqlite_queue" not in registry.names("sink")
    assert "map" not in registry.names("source")
    assert "jsonl" not in registry.names("processor")


@pytest.mark.parametrize(
    ("kind", "name", "cls"),
    [
        ("source", "sqlite_queue", SqliteQueueSource),
        ("sink", "jsonl", JsonlSink),
        ("sink", "sqlite", SqliteSink),
        ("processor", "map", MapProcessor),
        ("processor", "filter", FilterProcessor),
        ("processor", "python", PythonProcessor),
    ],
)
def test_lookup_of_built_ins(kind: registry.Kind, name: str, cls: type[Any]) -> None:
    found = registry.lookup(kind, name)
    assert found is cls
    assert issubclass(found.config_model, ConnectorConfig)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        registry.lookup("sink", "elasticsearh")
    message = str(caught.value)
    assert "unknown sink type 'elasticsearh'" in message
    assert f"expected one of: {', '.join(registry.names('sink'))}" in message
    assert "jsonl" in message and "sqlite" in message


def test_unknown_processor_lists_processors_only() -> None:
    with pytest.raises(ConfigError, match="unknown processor type 'jsonl'") as caught:
        registry.lookup("processor", "jsonl")
    known = str(caught.value).split("expected one of: ")[1].split(", ")
    assert {"map", "filter", "python"} <= set(known)
    assert "sqlite_queue" not in known and "jsonl" not in known


def test_unknown_type_in_a_config_names_the_setting(tmp_path: Path) -> None:
    text = config_text(tmp_path, sinks='[{type: nosuch, path: "x"}]')
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    message = str(caught.value)
    assert "pipelines.custom.sinks[0].type" in message
    assert "unknown sink type 'nosuch'; expected one of:" in message
    assert "jsonl" in message


@pytest.mark.usefixtures("clean_registry")
def test_registered_class_is_found_by_name() -> None:
    with pytest.raises(ConfigError):
        registry.lookup("sink", "collect_test")
    registry.register("sink", "collect_test", CollectSink)
    assert registry.lookup("sink", "collect_test") is CollectSink
    assert "collect_test" in registry.names("sink")
    assert "collect_test" not in registry.names("source")
    with pytest.raises(ConfigError, match="collect_test"):
        registry.lookup("sink", "nosuch")  # the known list now includes it


@pytest.mark.usefixtures("clean_registry")
async def test_registered_sink_and_processor_work_from_a_yaml_config(tmp_path: Path) -> None:
    registry.register("sink", "collect_test", CollectSink)
    registry.register("processor", "tag_test", TagProcessor)
    text = config_text(
        tmp_path,
        sinks='[{type: collect_test, label: "${LABEL:-fallback}", limit: 5}, '
        f'{{type: jsonl, path: "{tmp_path}/out"}}]',
        processors="[{type: tag_test, tag: blue}]",
    )
    config = parse_config(text, environ={"LABEL": "from-env"})
    spec = config.pipelines["custom"]
    assert isinstance(spec.sinks[0], CollectSinkConfig)
    assert spec.sinks[0].label == "from-env" and spec.sinks[0].limit == 5

    [pipeline] = config.build(SqliteStateStore(tmp_path / "state.db"))
    assert pipeline.name == "custom"
    custom, jsonl = pipeline.sinks
    assert isinstance(custom, CollectSink)
    assert custom.name == "collect_test" and custom.config.label == "from-env"
    assert isinstance(jsonl, JsonlSink)
    assert isinstance(pipeline.source, SqliteQueueSource)
    [processor] = pipeline.processors
    assert isinstance(processor, TagProcessor) and processor.tag == "blue"
    tagged = processor.process(Record(key="1", data={}))
    assert tagged is not None and tagged.data == {"tag": "blue"}


@pytest.mark.usefixtures("clean_registry")
def test_registered_sink_config_is_validated_by_its_own_model(tmp_path: Path) -> None:
    registry.register("sink", "collect_test", CollectSink)
    text = config_text(tmp_path, sinks="[{type: collect_test, label: x, limt: 3}]")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    message = str(caught.value)
    assert "pipelines.custom.sinks[0].limt" in message
    assert "did you mean 'limit'?" in message

    missing = config_text(tmp_path, sinks="[{type: collect_test}]")
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.label: required setting is missing"):
        parse_config(missing, environ={})


def test_registrations_do_not_leak_between_tests() -> None:
    # whatever ran before, clean_registry put the original table back
    assert "collect_test" not in registry.names("sink")
    assert registry.lookup("sink", "jsonl") is JsonlSink
