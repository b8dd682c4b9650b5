"""The redis sink without a server: config, key templates, hash tags, value encodings and
which records are refused (the writes themselves: tests/integration/test_redis_sink.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from redis import exceptions as rexc

from syncworker.connectors.redis.sink import (
    KeyLayout,
    RedisSink,
    RedisSinkConfig,
    Template,
    Unrenderable,
    client_name,
    decode_hash,
    hash_slot_tag,
    hash_value,
    key_part,
    live_key,
    record_group,
    sink_error,
    staging_key,
)
from syncworker.core import jsonvalue, registry
from syncworker.core.record import Record
from syncworker.errors import ConfigRefused, ConnectionClosed, ConnectorError, PermanentError

SEED = {
    "key": "registration:{event_id}:{id}",
    "index": "event:{event_id}:registrations",
    "meta": "event:{event_id}:meta",
    "groups": "events:synced",
}


def config(**overrides: Any) -> RedisSinkConfig:
    return RedisSinkConfig.model_validate({"url": "redis://127.0.0.1:1/0", **SEED, **overrides})


def grouped(key: str, data: Any, group: str = "4433", **meta: Any) -> Record:
    return Record(
        key=key,
        data=data,
        stream="registrations",
        meta={"group": group, "group_name": "event_id", **meta},
    )


def test_registered_as_sink_redis() -> None:
    assert registry.lookup("sink", "redis") is RedisSink


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "registration:{event_id}"}, "{id} exactly once"),
        ({"key": "r:{id}:{id}"}, "{id} exactly once"),
        ({"index": "event:{id}:registrations"}, "{id} has no place"),
        ({"groups": "events:{event_id}"}, "may only use {stream}"),
        ({"meta": "event:{event_id}:registrations"}, "distinct"),
        ({"key": "r:{id!r}"}, "expected {name}"),
        ({"key": "r:{id"}, "key"),
        ({"staging_ttl": "10ms"}, "at least 1s"),
        ({"fromat": "hash"}, "fromat"),
    ],
)
def test_config_refuses_unusable_templates(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        config(**overrides)


def test_template_renders_values_without_format() -> None:
    template = Template.parse("a:{{literal}}:{x}:{id}")
    assert template.fields == ["x", "id"]
    assert template.render({"x": "{0.__class__}", "id": "7"}.__getitem__) == (
        "a:{literal}:{0.__class__}:7"
    )
    assert template.split_at_id({"x": "X"}.__getitem__) == ("a:{literal}:X:", "")


def test_key_parts_are_text_or_integers() -> None:
    assert key_part("n", 17) == "17"
    assert key_part("n", Decimal("4433256000013547003")) == "4433256000013547003"
    assert key_part("s", "x y") == "x y"
    for value in (1.5, True, None, {"a": 1}, [1]):
        with pytest.raises(Unrenderable):
            key_part("v", value)


def test_hash_slot_tag_follows_the_cluster_rule() -> None:
    assert hash_slot_tag(b"registration:{4433}:17") == b"4433"
    assert hash_slot_tag(b"plain") == b"plain"
    assert hash_slot_tag(b"a{}b{c}") == b"a{}b{c}"  # an empty first tag: the whole key
    assert hash_slot_tag(b"a{b}{c}") == b"b"
    assert hash_slot_tag(b"a{b") == b"a{b"


def test_hash_tag_puts_every_key_of_a_group_in_one_slot() -> None:
    layout = KeyLayout.of(config(hash_tag=True))
    record = grouped("17", {"v": 1})
    key = layout.key.render(layout.record_lookup(record, record_group(record)))
    index = layout.group_key(layout.index, "registrations", "4433")
    meta = layout.group_key(layout.meta, "registrations", "4433")
    assert (key, index, meta) == (
        "registration:{4433}:17",
        "event:{4433}:registrations",
        "event:{4433}:meta",
    )
    assert index is not None
    keys = [key, index, str(meta), staging_key(index, "run-1"), live_key(index)]
    assert {hash_slot_tag(k.encode()) for k in keys} == {b"4433"}
    prefix, suffix = layout.id_affixes("registrations", "4433", "event_id")
    assert prefix + "17" + suffix == key
    # The registry is one set for every group: a slot of its own, written apart.
    assert layout.registry_key("registrations") == "events:synced"


def test_without_hash_tag_keys_have_no_braces() -> None:
    layout = KeyLayout.of(config())
    record = grouped("17", {"v": 1})
    assert (
        layout.key.render(layout.record_lookup(record, record_group(record)))
        == "registration:4433:17"
    )


def test_a_record_off_its_groups_hash_tag_is_refused() -> None:
    sink = RedisSink(config(hash_tag=True, key="registration:{id}"), name="t")
    plan = sink._plan([grouped("17", {"v": 1}), grouped("18", {"v": 1})])
    assert set(plan.failed) == {0, 1}
    assert "hash tag" in str(plan.failed[0])
    ok = RedisSink(config(hash_tag=True), name="t")._plan([grouped("17", {"v": 1})])
    assert not ok.failed and list(ok.units) == ["4433"]  # one transaction per group


def test_records_whose_keys_cannot_be_built_are_refused_alone() -> None:
    sink = RedisSink(config(key="r:{Email}:{id}"), name="t")
    records = [
        grouped("1", {"Email": "a@x"}),
        grouped("2", {"Name": "no email"}),
        grouped("3", {"Email": 1.5}),
        grouped("4\udcff", {"Email": "b@x"}),  # not UTF-8: no key can be written
        grouped("5", {"Email": "c@x", "v": Decimal("NaN")}),  # no exact JSON form
        grouped("6", {"Email": "d@x"}),
    ]
    plan = sink._plan(records)
    assert sorted(plan.failed) == [1, 2, 3, 4]
    assert all(isinstance(e, PermanentError) for e in plan.failed.values())
    assert "{Email} is neither" in str(plan.failed[1])
    unit = plan.units[None]
    assert list(unit.sets) == ["r:a@x:1", "r:d@x:6"]


def test_a_later_record_of_a_key_wins_within_a_batch() -> None:
    sink = RedisSink(config(), name="t")
    plan = sink._plan([grouped("1", {"v": 1}), grouped("1", {"v": 2}), grouped("2", {"v": 1})])
    unit = plan.units[None]
    assert unit.sets["registration:4433:1"] == b'{"v":2}'
    plan = sink._plan([grouped("1", {"v": 1}), Record("1", {}, "registrations", "delete", {})])
    assert 1 in plan.failed  # a delete without its group cannot find its key
    delete = Record("1", {}, "registrations", "delete", {"group": "4433"})
    plan = sink._plan([grouped("1", {"v": 1}), delete])
    assert plan.units[None].sets == {} and plan.units[None].deletes == ["registration:4433:1"]
    assert plan.units[None].members == {("srem", "event:4433:registrations"): ["1"]}


def test_memberships_of_a_full_read_and_of_other_writes() -> None:
    sink = RedisSink(config(), name="t")
    plan = sink._plan([grouped("1", {"v": 1}, sync_run="r1"), grouped("2", {"v": 1})])
    members = plan.units[None].members
    index = "event:4433:registrations"
    assert members[("sadd", index)] == ["1", "2"]
    assert members[("sadd", staging_key(index, "r1"))] == ["1"]
    assert plan.units[None].live == {live_key(index): ["2"]}
    assert plan.units[None].registry == {"events:synced": {"4433"}}


def test_ungrouped_records_get_no_group_keys() -> None:
    sink = RedisSink(config(key="{stream}:{id}"), name="t")
    plan = sink._plan([Record("k", {"v": 1}, "in")])
    assert not plan.failed
    unit = plan.units[None]
    assert list(unit.sets) == ["in:k"] and not unit.members and not unit.registry


EXACT = {
    "text": "Nguy\u1ec5n \u00e9 \U0001f600",
    "digits": "0012",
    "big": 123456789012345678901234567890,
    "dec": Decimal("0.1000000000000000000000001"),
    "huge": Decimal("1E+400"),
    "f": 1.5,
    "i": -7,
    "ok": True,
    "none": None,
    "nested": {"b": [1, "2"], "a": {}},
    "empty": "",
}


def test_hash_values_round_trip_exactly() -> None:
    stored = hash_value(EXACT, "_json")
    assert stored[b"text"] == EXACT["text"].encode()  # text as it is, not JSON
    assert stored[b"digits"] == b"0012"
    assert stored[b"big"] == b"123456789012345678901234567890"
    assert stored[b"dec"] == b"0.1000000000000000000000001"
    assert stored[b"nested"] == b'{"b":[1,"2"],"a":{}}'
    typed = jsonvalue.loads(stored[b"_json"])
    assert typed == sorted(["big", "dec", "huge", "f", "i", "ok", "none", "nested"])
    back = decode_hash(stored, "_json")
    assert back == EXACT
    assert jsonvalue.canonical(back) == jsonvalue.canonical(EXACT)


def test_hash_without_a_types_field_reads_back_as_text() -> None:
    stored = hash_value({"n": 1, "s": "x"}, None)
    assert b"_json" not in stored
    assert decode_hash(stored, None) == {"n": "1", "s": "x"}
    with pytest.raises(ValueError, match="empty record"):
        hash_value({}, None)


def test_hash_refuses_what_it_cannot_hold() -> None:
    assert decode_hash(hash_value({}, "_json"), "_json") == {}
    with pytest.raises(ValueError, match="object's fields"):
        hash_value([1, 2], "_json")
    with pytest.raises(ValueError, match="json_fields_key"):
        hash_value({"_json": "x"}, "_json")
    with pytest.raises(UnicodeEncodeError):
        hash_value({"t": "caf\udce9"}, "_json")


def test_errors_are_mapped_to_what_the_runtime_does() -> None:
    label = "redis sink 't'"
    wrong = sink_error(rexc.ResponseError("WRONGTYPE Operation against a key"), label, "write")
    assert isinstance(wrong, ConfigRefused)
    denied = sink_error(rexc.NoPermissionError("NOPERM no permissions"), label, "write")
    assert isinstance(denied, ConfigRefused)
    auth = sink_error(rexc.AuthenticationError("WRONGPASS invalid"), label, "write")
    assert isinstance(auth, ConfigRefused)
    lost = sink_error(rexc.ConnectionError("Connection reset by peer"), label, "write")
    assert isinstance(lost, ConnectionClosed)
    other = sink_error(rexc.ResponseError("ERR something"), label, "write")
    assert type(other) is ConnectorError


def test_client_names_are_accepted_by_client_setname() -> None:
    assert client_name("zoho to redis\n") == "syncworker:zoho_to_redis_"
    assert client_name("é") == "syncworker:_"


@pytest.mark.parametrize("hash_tag", [False, True])
def test_keys_built_by_concatenation_equal_the_rendered_ones(hash_tag: bool) -> None:
    sink = RedisSink(config(hash_tag=hash_tag), name="t")
    layout = sink.layout
    records = [
        grouped("17", {"v": 1}),
        grouped("18", {"event_id": "from data"}),  # the meta's group_name wins
        Record("19", {"event_id": "E7"}, STREAM_NAME, meta={"group": "E7"}),  # no group_name
        Record("20", {}, STREAM_NAME, "delete", {"group": "4433"}),
        grouped("{odd}:id", {"v": 1}, group="g{1}"),
    ]
    for record in records:
        group = record_group(record)
        rendered = layout.key.render(layout.record_lookup(record, group))
        if hash_tag and record.key == "19":  # its data's event_id has no braces: refused
            with pytest.raises(Unrenderable, match="hash tag"):
                sink._keys_of(record, group)
            continue
        assert sink._keys_of(record, group)[0] == rendered
    assert sink._affixes_of(STREAM_NAME, "4433", "event_id") is not None
    assert sink._affixes_of(STREAM_NAME, "E7", None) is None  # a data field may be meant


STREAM_NAME = "registrations"
