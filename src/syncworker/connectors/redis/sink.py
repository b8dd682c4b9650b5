"""``redis``: a sink writing one Redis key per record, with per-group index sets and metadata.

Keys, from templates (``{id}`` the record key, ``{stream}``, ``{group}`` and ``{<group_name>}``
the record's ``meta["group"]``, any other name a top-level field of the record's data):

- ``key`` (default ``{stream}:{id}``; seed 002: ``registration:{event_id}:{id}``): the record,
  a JSON string (``format: json``, exact numbers, keys sorted) or a hash (``format: hash``:
  a string field as it is, any other value as its exact JSON text, their names listed in
  ``json_fields_key``);
- ``index`` (seed: ``event:{event_id}:registrations``): a SET of the group's record ids;
- ``meta`` (seed: ``event:{event_id}:meta``): a HASH ``count``, ``content_hash``,
  ``last_synced_at``, ``source_modified_time`` (plus ``source_count``, ``removed``,
  ``last_run``), written when a group's full read ends (``finish_group``);
- ``groups`` (seed: ``events:synced``): a SET of the groups the sink holds;
- ``<index>:run:<sync_run>``: a full read's staging set (ids it wrote, with a TTL) and
  ``<index>:run:<sync_run>:started`` (when it wrote its first record, ms), and
  ``<index>:live``: a zset of ids written outside a full read, by write time (ms).

A batch is one MULTI/EXEC (with ``hash_tag``: one per group, each in one slot), so a reader
never sees a group half updated: record keys, index members, staging and registry together.
``finish_group`` is one Lua script (``lua/group_finish.lua``) removing the index members the
full read did not write, with their keys, except those written outside it after it started
(a record created after its page was read, delivered by an incremental read), then writing
the meta hash; it is idempotent (the meta hash remembers the run it finished).

Redis Cluster: with ``hash_tag: true`` a group's value is written in braces in every key
(``registration:{4433}:17``, ``event:{4433}:registrations``...), so a group's keys share one
slot and its transaction and its Lua script touch one slot; a record whose key would not
carry its group's tag is refused. The registry set lives in a slot of its own and is written
by a separate command. This sink talks to one node: a cluster client is not part of it.
"""

from __future__ import annotations

import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

import hiredis
import redis.asyncio as aredis
import structlog
from pydantic import Field, field_validator, model_validator
from redis import exceptions as rexc
from redis.commands.core import AsyncScript

from syncworker.connectors.redis.client import (
    RedisConnectionConfig,
    create_client,
    describe,
    iso_utc,
    preload_scripts,
    register_scripts,
    translate_error,
)
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.protocols import GroupEnd, WriteResult
from syncworker.core.record import Record
from syncworker.errors import ConfigRefused, ConnectorError, PermanentError
from syncworker.reconcile.digest import canonical_json

log = structlog.get_logger(__name__)

SCRIPTS = ("group_finish", "hash_read", "hash_write", "keys_exist")
_MAX_CHECKED_KEYS = 100_000


class RedisSinkConfig(RedisConnectionConfig):
    """Settings of the ``redis`` sink: one key per record, per-group index sets and meta."""

    type: Literal["redis"] = Field(
        "redis",
        description="Connector type: one Redis key per record (JSON string or hash), with "
        "per-group index sets and metadata hashes.",
    )
    key: str = Field(
        "{stream}:{id}",
        description="Record key template, with {id} exactly once: {id} (Record.key), "
        "{stream}, {group} and {<group name>} (the record's group, e.g. {event_id}), any "
        "other {name} a top-level data field (text or integer). Seed 002: "
        "'registration:{event_id}:{id}'. {{ and }} are literal braces.",
    )
    format: Literal["json", "hash"] = Field(
        "json",
        description="json: the record's data as one exact JSON string, keys sorted (SET; "
        "the text its digest hashes, so a discrepancy check hashes it unread). hash: one hash "
        "field per top-level data field (DEL then HSET, so a removed field goes): text as it "
        "is, any other value as its exact JSON text.",
    )
    index: str | None = Field(
        None,
        description="Template of a group's index SET of record ids (no {id}), e.g. "
        "'event:{event_id}:registrations'. Needed to remove records gone from the source on "
        "a group's full read, to count a group, and by the discrepancy check.",
    )
    meta: str | None = Field(
        None,
        description="Template of a group's metadata HASH (no {id}), e.g. 'event:{event_id}:meta': "
        "count, content_hash, last_synced_at, source_modified_time, written when the group's "
        "full read ends.",
    )
    groups: str | None = Field(
        None,
        description="Template of the SET registering the groups the sink holds (only {stream} "
        "may appear), e.g. 'events:synced'.",
    )
    hash_tag: bool = Field(
        False,
        description="Redis Cluster: write the group's value in braces ({4433}) in every key, "
        "so a group's keys share one slot; a batch is then one transaction per group, and a "
        "record whose key would not carry its group's tag is refused.",
    )
    json_fields_key: str | None = Field(
        "_json",
        description="format hash: the hash field listing (a JSON array) the fields whose value "
        "is JSON text rather than a string, so they read back with their type (a record "
        "with a field of that name is refused). Null: not written; every field then reads "
        "back as a string.",
    )
    staging_ttl: DurationS = Field(
        86400.0,
        description="Lifetime of a full read's staging set of written ids, renewed by each "
        "write of the read (e.g. 24h); a read that ends after it lapsed removes nothing.",
    )

    @field_validator("key")
    @classmethod
    def _key_has_id(cls, value: str) -> str:
        fields = Template.parse(value).fields
        if fields.count("id") != 1:
            raise ValueError(f"key template {value!r} must contain {{id}} exactly once")
        return value

    @field_validator("index", "meta")
    @classmethod
    def _group_key(cls, value: str | None) -> str | None:
        if value is not None and "id" in Template.parse(value).fields:
            raise ValueError(f"template {value!r} names one key per group: {{id}} has no place")
        return value

    @field_validator("groups")
    @classmethod
    def _registry_key(cls, value: str | None) -> str | None:
        if value is not None and set(Template.parse(value).fields) - {"stream"}:
            raise ValueError(f"template {value!r} may only use {{stream}}")
        return value

    @field_validator("staging_ttl")
    @classmethod
    def _ttl_positive(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be a duration of at least 1s")
        return value

    @model_validator(mode="after")
    def _distinct_keys(self) -> RedisSinkConfig:
        named = [t for t in (self.key, self.index, self.meta, self.groups) if t is not None]
        if len(set(named)) != len(named):
            raise ValueError("key, index, meta and groups must be distinct templates")
        return self


# -- templates ----------------------------------------------------------------------------


class Unrenderable(ValueError):
    """A template variable the record (or group) does not provide; ``str`` says which."""


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed key template: literal text and variable names, rendered without ``format``
    (no attribute access, no format spec: a value is only ever pasted in)."""

    text: str
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        """Raises ``ValueError`` for a malformed template ("{", "{}", "{x!r}", "{x:>3}")."""
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in string.Formatter().parse(text):
            if name is not None and (not name or spec or conversion):
                raise ValueError(f"template {text!r}: expected {{name}}, got {{{name}...}}")
            parts.append((literal, name))
        return cls(text, tuple(parts))

    @property
    def fields(self) -> list[str]:
        return [name for _, name in self.parts if name is not None]

    def render(self, lookup: Callable[[str], str]) -> str:
        """The key with every variable replaced by ``lookup(name)`` (which raises
        ``Unrenderable`` for a variable it cannot provide)."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(lookup(name))
        return "".join(out)

    def split_at_id(self, lookup: Callable[[str], str]) -> tuple[str, str]:
        """The rendered text before and after ``{id}`` (a key template's), for keys built
        from ids alone (the Lua script, the group side)."""
        before: list[str] = []
        after: list[str] = []
        seen = False
        for literal, name in self.parts:
            (after if seen else before).append(literal)
            if name == "id":
                seen = True
            elif name is not None:
                (after if seen else before).append(lookup(name))
        return "".join(before), "".join(after)


def key_part(name: str, value: Any) -> str:
    """A data field's value in a key: text as it is, an integer's digits; ``Unrenderable``
    for anything else (a key must not depend on a float's or an object's spelling)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise Unrenderable(f"field {name!r} is {kind}: a key part must be text or an integer")


def hash_slot_tag(key: bytes) -> bytes:
    """The part of ``key`` Redis Cluster hashes: the text inside its first ``{...}`` when
    that is not empty, else the whole key (the cluster specification's rule)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The sink's templates, rendered for records, groups and ids (shared with the side)."""

    key: Template
    index: Template | None
    meta: Template | None
    groups: Template | None
    hash_tag: bool

    @classmethod
    def of(cls, config: RedisSinkConfig) -> KeyLayout:
        def parse(text: str | None) -> Template | None:
            return None if text is None else Template.parse(text)

        return cls(
            Template.parse(config.key),
            parse(config.index),
            parse(config.meta),
            parse(config.groups),
            config.hash_tag,
        )

    def group_value(self, group: str) -> str:
        return "{" + group + "}" if self.hash_tag else group

    def group_lookup(
        self, stream: str, group: str | None, group_name: str | None = None
    ) -> Callable[[str], str]:
        """Variables of a group's keys: ``stream``, and the group as ``{group}`` or
        ``{<group_name>}``; without ``group_name`` (index, meta: keys of the group alone)
        every other variable is the group."""

        def lookup(name: str) -> str:
            if name == "stream":
                return stream
            if name == "group" or group_name is None or name == group_name:
                if group is None:
                    raise Unrenderable(f"{{{name}}} needs the record's group, and it has none")
                return self.group_value(group)
            raise Unrenderable(f"{{{name}}} is not known from the group alone")

        return lookup

    def record_lookup(self, record: Record, group: str | None) -> Callable[[str], str]:
        """Variables of a record's keys: its id, stream, group (``{group}``, or by its
        ``meta["group_name"]``), then its data's fields; a record with a group but no
        ``group_name`` (a delete from a resync) takes its group for a name its data lacks."""
        group_name = record.meta.get("group_name")
        data = record.data if isinstance(record.data, Mapping) else {}

        def lookup(name: str) -> str:
            if name == "id":
                return record.key
            if name == "stream":
                return record.stream
            if group is not None and name in ("group", group_name):
                return self.group_value(group)
            if name in data:
                return key_part(name, data[name])
            if group is not None and group_name is None:
                return self.group_value(group)
            raise Unrenderable(f"{{{name}}} is neither the record's group nor a field of it")

        return lookup

    def id_affixes(self, stream: str, group: str | None, group_name: str | None) -> tuple[str, str]:
        """The record key before and after its id, for keys built from ids alone. Raises
        ``Unrenderable`` when the key template uses a data field (any name but
        ``group_name``; with ``group_name`` None, every other name is the group)."""
        return self.key.split_at_id(self.group_lookup(stream, group, group_name))

    def group_key(self, template: Template | None, stream: str, group: str | None) -> str | None:
        """A group's index or meta key (``None`` when not configured)."""
        if template is None:
            return None
        return template.render(self.group_lookup(stream, group))

    def registry_key(self, stream: str) -> str | None:
        if self.groups is None:
            return None
        return self.groups.render(lambda _name: stream)


def record_group(record: Record) -> str | None:
    """The record's group (``meta["group"]``) as text, or ``None`` when it has none."""
    group = record.meta.get("group")
    return None if group is None else str(group)


def staging_key(index_key: str, run: str) -> str:
    """A full read's staging set: after the index key, so it shares the group's hash tag."""
    return f"{index_key}:run:{run}"


def live_key(index_key: str) -> str:
    """A zset of ids written outside a full read, scored by their write time (ms)."""
    return f"{index_key}:live"


def started_key(staging: str) -> str:
    """When a full read wrote its first record (ms): live ids since then are kept."""
    return f"{staging}:started"


# -- values -------------------------------------------------------------------------------


def json_value(data: Any) -> bytes:
    """``format: json``: the exact JSON text, keys sorted (``digest.canonical_json``: the
    stored text is what the record's digest hashes, so a side digests it unread). Raises
    ``JSONValueError``."""
    return canonical_json(data)


def hash_value(data: Any, json_fields_key: str | None) -> dict[bytes, bytes]:
    """``format: hash``: field -> bytes (text as UTF-8, other values as exact JSON text), and
    the ``json_fields_key`` field listing the JSON ones (also for an empty record, whose hash
    would otherwise not exist). Raises ``ValueError`` for what a hash cannot hold."""
    if not isinstance(data, Mapping):
        raise ValueError(f"format hash holds an object's fields, got {type(data).__name__}")
    fields: dict[bytes, bytes] = {}
    typed: list[str] = []
    for name, value in data.items():
        if name == json_fields_key:
            raise ValueError(f"field {name!r} is the json_fields_key of format hash")
        if isinstance(value, str):
            fields[name.encode()] = value.encode()
        else:
            fields[name.encode()] = jsonvalue.dumps(value)
            typed.append(name)
    if json_fields_key is not None and (typed or not fields):
        fields[json_fields_key.encode()] = jsonvalue.dumps(sorted(typed))
    if not fields:
        raise ValueError("format hash cannot hold an empty record without json_fields_key")
    return fields


def decode_hash(fields: Mapping[bytes, bytes], json_fields_key: str | None) -> dict[str, Any]:
    """A stored hash as the record's data: the inverse of ``hash_value``."""
    typed: set[str] = set()
    if json_fields_key is not None:
        listed = fields.get(json_fields_key.encode())
        if listed is not None:
            typed = set(exact_loads(listed))
    data: dict[str, Any] = {}
    for raw_name, raw in fields.items():
        name = raw_name.decode("utf-8", "surrogateescape")
        if name == json_fields_key:
            continue
        data[name] = exact_loads(raw) if name in typed else raw.decode("utf-8", "surrogateescape")
    return data


def exact_loads(raw: bytes) -> Any:
    """A stored JSON value read exactly (``jsonvalue.loads``, which keeps orjson's fast answer
    when no number could have been rounded). Raises ``UndecodableJSON`` for what is not
    JSON."""
    return jsonvalue.loads(raw)


# -- errors -------------------------------------------------------------------------------


def sink_error(exc: rexc.RedisError, label: str, action: str) -> Exception:
    """``translate_error``, and ``ConfigRefused`` for WRONGTYPE: a configured key holds
    another type, which only the operator can fix (retrying cannot)."""
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith("WRONGTYPE"):
        return ConfigRefused(f"{label}: {action} refused: a key holds another type: {exc}")
    return translate_error(exc, label, action)


def _short(key: str) -> str:
    return repr(key if len(key) <= 80 else key[:80] + "...")


# -- the sink -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Unit:
    """The commands of one transaction: the whole batch, or one group with ``hash_tag``."""

    sets: dict[str, bytes] = field(default_factory=dict)
    hashes: dict[str, dict[bytes, bytes]] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    members: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (op, set) -> ids
    staging: set[str] = field(default_factory=set)
    live: dict[str, list[str]] = field(default_factory=dict)  # live zset -> ids
    registry: dict[str, set[str]] = field(default_factory=dict)

    def add_member(self, op: str, set_key: str, member: str) -> None:
        self.members.setdefault((op, set_key), []).append(member)


@dataclass(slots=True)
class _Plan:
    units: dict[str | None, _Unit] = field(default_factory=dict)
    failed: dict[int, BaseException] = field(default_factory=dict)
    set_keys: set[str] = field(default_factory=set)  # keys that must be sets (or missing)
    registry: dict[str, set[str]] = field(default_factory=dict)  # written apart (hash_tag)


class RedisSink:
    """One key per record, per-group index sets and meta hashes; see the module docstring.

    Implements ``Sink``, ``Probes``, ``ReplacesGroups`` and ``CountsGroups``. Duplicate keys
    in a batch collapse to their last record. A record that cannot be written (a template
    variable it lacks, a value with no exact JSON form, a key that is not UTF-8, a key off its
    group's hash tag) is refused alone in ``WriteResult.failed``; the rest is written.
    """

    config_model: ClassVar[type[RedisSinkConfig]] = RedisSinkConfig

    def __init__(self, config: RedisSinkConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, RedisSinkConfig):
            config = RedisSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        self.layout = KeyLayout.of(config)
        self._label = f"redis sink {name!r} ({describe(config)})"
        self._client: aredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._checked: set[str] = set()  # set keys seen holding a set (or nothing)
        self._affix_cache: dict[tuple[str, str | None, Any], tuple[str, str] | None] = {}
        self._group_keys_cache: dict[
            tuple[str, str | None], tuple[str | None, str | None, bytes | None]
        ] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, PING and load the Lua scripts. Raises ``ConnectionFailed`` when Redis is
        unreachable, ``ConfigRefused`` when it refuses the credentials. A second call is
        harmless."""
        if self._client is not None:
            return
        client = create_client(self.config)
        # Named in CLIENT LIST, so an operator (and a test) can tell this sink's connections.
        client.connection_pool.connection_kwargs["client_name"] = client_name(self.name)
        if client.connection_pool.connection_class is aredis.Connection:
            client.connection_pool.connection_class = CPackedConnection
        scripts = register_scripts(client, SCRIPTS)
        try:
            await client.ping()
            await preload_scripts(client, scripts)
        except rexc.RedisError as exc:
            await client.aclose()
            raise translate_error(exc, self._label, "open", opening=True) from exc
        self._client, self._scripts = client, scripts

    async def close(self) -> None:
        """Release the connections; safe to call twice."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def probe(self) -> None:
        """PING; raises when Redis does not answer."""
        client = self._require()
        try:
            await client.ping()
        except rexc.RedisError as exc:
            raise sink_error(exc, self._label, "probe") from exc

    def _require(self) -> aredis.Redis:
        if self._client is None:
            raise ConnectorError(f"{self._label}: not open")
        return self._client

    # -- write ----------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> WriteResult:
        """Write ``records`` in one MULTI/EXEC (one per group with ``hash_tag``) and return
        the refused records with ``added``/``updated`` counts of the upserts.

        Raises ``ConnectionFailed``/``ConnectionClosed`` when Redis is unreachable (a
        transaction cut off is applied whole or not at all: writing again is idempotent),
        ``ConfigRefused`` when Redis refuses the credentials or a configured set key holds
        another type, ``ConnectorError`` for any other Redis error.
        """
        client = self._require()
        plan = self._plan(records)
        added = updated = 0
        try:
            await self._check_set_keys(client, plan.set_keys)
            for unit in plan.units.values():
                existed = await self._run_unit(client, unit)
                updated += sum(existed)
                added += len(existed) - sum(existed)
            if plan.registry:
                async with client.pipeline(transaction=False) as pipe:
                    for registry, groups in plan.registry.items():
                        pipe.sadd(registry, *sorted(groups))
                    await pipe.execute()
        except rexc.RedisError as exc:
            raise sink_error(exc, self._label, "write") from exc
        return WriteResult(failed=plan.failed, added=added, updated=updated)

    def _plan(self, records: Sequence[Record]) -> _Plan:
        plan = _Plan()
        chosen: dict[str, tuple[int, Record, str | None, str | None, str | None]] = {}
        for index, record in enumerate(records):
            group = record_group(record)
            try:
                key, index_key, registry = self._keys_of(record, group)
            except (Unrenderable, UnicodeEncodeError) as exc:
                plan.failed[index] = self._refusal(record, f"its keys cannot be built: {exc}")
                continue
            chosen[key] = (index, record, group, index_key, registry)  # the last one wins
        groups_seen: set[tuple[str | None, str | None, str | None]] = set()
        for key, (index, record, group, index_key, registry) in chosen.items():
            unit = plan.units.get(group if self.config.hash_tag else None)
            if unit is None:
                unit = plan.units[group if self.config.hash_tag else None] = _Unit()
            if record.op == "delete":
                unit.deletes.append(key)
                if index_key is not None:
                    unit.add_member("srem", index_key, record.key)
            elif self._add_upsert(plan, unit, index, record, key):
                self._add_memberships(unit, record, group, index_key)
            else:
                continue
            if (group, index_key, registry) not in groups_seen:
                groups_seen.add((group, index_key, registry))
                self._add_group(plan, unit, group, index_key, registry)
        for index in plan.failed:
            self._keep_refused(plan, records[index])
        return plan

    def _keep_refused(self, plan: _Plan, record: Record) -> None:
        """A record of a full read this sink refused still counts as delivered by the read:
        the version it holds, if any, is left in place (and the record is dead-lettered)
        rather than removed as gone from the source."""
        run, group = record.meta.get("sync_run"), record_group(record)
        if run is None or group is None:
            return
        try:
            index_key = self._group_keys_of(record.stream, group)[0]
        except Unrenderable:
            return
        if index_key is None:
            return
        unit = plan.units.get(group if self.config.hash_tag else None)
        if unit is None:
            unit = plan.units[group if self.config.hash_tag else None] = _Unit()
        staging = staging_key(index_key, str(run))
        unit.add_member("sadd", staging, record.key)
        unit.staging.add(staging)

    def _add_group(
        self,
        plan: _Plan,
        unit: _Unit,
        group: str | None,
        index_key: str | None,
        registry: str | None,
    ) -> None:
        if index_key is not None:
            plan.set_keys.add(index_key)
        if registry is not None and group is not None:
            target = plan.registry if self.config.hash_tag else unit.registry
            target.setdefault(registry, set()).add(group)
            plan.set_keys.add(registry)

    def _keys_of(self, record: Record, group: str | None) -> tuple[str, str | None, str | None]:
        """The record's key, its group's index key and the registry key (``None`` for those
        a record without a group has none of). Raises ``Unrenderable``."""
        layout = self.layout
        affixes = self._affixes_of(record.stream, group, record.meta.get("group_name"))
        if affixes is not None:
            key = affixes[0] + record.key + affixes[1]
        else:
            key = layout.key.render(layout.record_lookup(record, group))
        key.encode()  # a key that is not UTF-8 is this record's fault: refused here
        index_key, registry, tag = self._group_keys_of(record.stream, group)
        if layout.hash_tag and (tag is None or hash_slot_tag(key.encode()) != tag):
            raise Unrenderable(f"key {_short(key)} does not carry its group's hash tag")
        return key, index_key, registry

    def _affixes_of(
        self, stream: str, group: str | None, group_name: Any
    ) -> tuple[str, str] | None:
        """The key before and after the id when the key template needs nothing of the
        record's data (the seed's ``registration:{event_id}:{id}``), else None; remembered
        per group, so a batch renders its keys by concatenation."""
        cache_key = (stream, group, group_name)
        if cache_key in self._affix_cache:
            return self._affix_cache[cache_key]
        names = set(self.layout.key.fields) - {"id", "stream"}
        allowed = {"group", group_name} if group is not None and group_name else {"group"}
        affixes = None
        if names <= (allowed if group is not None else set()):
            lookup = self.layout.group_lookup(stream, group, group_name or "group")
            affixes = self.layout.key.split_at_id(lookup)
        if len(self._affix_cache) > _MAX_CHECKED_KEYS:
            self._affix_cache.clear()
        self._affix_cache[cache_key] = affixes
        return affixes

    def _group_keys_of(
        self, stream: str, group: str | None
    ) -> tuple[str | None, str | None, bytes | None]:
        """A group's index key, registry key and hash tag (remembered: every record of a
        batch of one group would render them again)."""
        cached = self._group_keys_cache.get((stream, group))
        if cached is not None:
            return cached
        layout = self.layout
        index_key = None
        if group is not None or (layout.index is not None and not _needs_group(layout.index)):
            index_key = layout.group_key(layout.index, stream, group)
        registry = None if group is None else layout.registry_key(stream)
        tag = None
        if index_key is not None:
            tag = hash_slot_tag(index_key.encode())
        elif group is not None:
            tag = group.encode()
        if len(self._group_keys_cache) > _MAX_CHECKED_KEYS:
            self._group_keys_cache.clear()
        self._group_keys_cache[(stream, group)] = (index_key, registry, tag)
        return index_key, registry, tag

    def _add_upsert(self, plan: _Plan, unit: _Unit, index: int, record: Record, key: str) -> bool:
        try:
            if self.config.format == "json":
                unit.sets[key] = json_value(record.data)
            else:
                unit.hashes[key] = hash_value(record.data, self.config.json_fields_key)
        except (ValueError, TypeError) as exc:  # JSONValueError is a TypeError
            plan.failed[index] = self._refusal(record, f"its value cannot be written: {exc}")
            return False
        return True

    def _add_memberships(
        self, unit: _Unit, record: Record, group: str | None, index_key: str | None
    ) -> None:
        if index_key is None:
            return
        unit.add_member("sadd", index_key, record.key)
        run = record.meta.get("sync_run")
        if run is not None:
            staging = staging_key(index_key, str(run))
            unit.add_member("sadd", staging, record.key)
            unit.staging.add(staging)
        elif group is not None:
            unit.live.setdefault(live_key(index_key), []).append(record.key)

    def _refusal(self, record: Record, reason: str) -> PermanentError:
        return PermanentError(f"{self._label}: record {_short(record.key)}: {reason}")

    async def _check_set_keys(self, client: aredis.Redis, keys: set[str]) -> None:
        """Refuse (``ConfigRefused``) before writing when a configured set key holds another
        type: inside MULTI the other commands would still run, leaving records unindexed."""
        unchecked = sorted(keys - self._checked)
        if not unchecked:
            return
        async with client.pipeline(transaction=False) as pipe:
            for key in unchecked:
                pipe.type(key)
            types = await pipe.execute()
        for key, kind in zip(unchecked, types, strict=True):
            if kind not in (b"set", b"none"):
                raise ConfigRefused(
                    f"{self._label}: key {_short(key)} holds a {kind.decode()}, expected a set "
                    "(index or groups template collides with other data)"
                )
        if len(self._checked) > _MAX_CHECKED_KEYS:
            self._checked.clear()
        self._checked.update(unchecked)

    async def _run_unit(self, client: aredis.Redis, unit: _Unit) -> list[int]:
        """One MULTI/EXEC; whether each upserted key existed before (0/1)."""
        ttl_s = int(self.config.staging_ttl)
        now_ms = int(time.time() * 1000)
        async with client.pipeline(transaction=True) as pipe:
            # A fixed handful of commands per batch, whatever its size: the existence checks
            # and hash writes are scripts (keys_exist, hash_write) run inside the MULTI.
            if unit.sets:
                await self._scripts["keys_exist"](keys=list(unit.sets), client=pipe)
                pipe.mset(unit.sets)
            if unit.hashes:
                args: list[bytes | int] = []
                for mapping in unit.hashes.values():
                    args += [len(mapping), *mapping.keys(), *mapping.values()]
                await self._scripts["hash_write"](keys=list(unit.hashes), args=args, client=pipe)
            if unit.deletes:
                pipe.delete(*unit.deletes)
            for (op, set_key), members in unit.members.items():
                (pipe.sadd if op == "sadd" else pipe.srem)(set_key, *members)
            for staging in unit.staging:
                pipe.expire(staging, ttl_s)
                pipe.set(started_key(staging), now_ms, nx=True)
                pipe.expire(started_key(staging), ttl_s)
            for live, ids in unit.live.items():
                pipe.zadd(live, dict.fromkeys(ids, now_ms))
            for registry, groups in unit.registry.items():
                pipe.sadd(registry, *sorted(groups))
            replies = await pipe.execute()
        return list(replies[0]) if unit.sets or unit.hashes else []

    # -- groups ---------------------------------------------------------------------------

    async def finish_group(self, end: GroupEnd) -> int:
        """Remove the records of ``end.group`` the full read ``end.run`` did not write (nor a
        change written outside the read since the group's last full read), write the meta
        hash and register the group; the removed count. Idempotent: the meta hash keeps
        the run it finished, and the same ``end`` again removes nothing.

        A read that delivered records but whose staging set is gone (``staging_ttl``
        lapsed) removes nothing and says so in the log (``redis_group_staging_missing``).
        Raises ``ConfigRefused`` when ``index`` or ``meta`` is not configured, or the key
        template needs a data field; ``ConnectorError`` when Redis fails (the pipeline rolls
        the ``GroupEnd`` back and it is served again).
        """
        client = self._require()
        index_key, meta_key, prefix, suffix = self._group_keys(end)
        args: list[str | int] = [
            end.run,
            prefix,
            suffix,
            end.count,
            end.content_hash,
            iso_utc(),
            end.source_modified or "",
        ]
        staging = staging_key(index_key, end.run)
        keys = [index_key, meta_key, staging, live_key(index_key), started_key(staging)]
        try:
            await self._check_set_keys(client, {index_key})
            removed, held, state = await self._scripts["group_finish"](
                keys=keys, args=args, client=client
            )
            registry = self.layout.registry_key(end.stream)
            if registry is not None:
                await client.sadd(registry, end.group)
        except rexc.RedisError as exc:
            raise sink_error(exc, self._label, f"finish group {end.group!r}") from exc
        event = {1: "redis_group_already_finished", 2: "redis_group_staging_missing"}
        logged = log.warning if state == 2 else log.info
        logged(
            event.get(state, "redis_group_finished"),
            sink=self.name,
            stream=end.stream,
            group=end.group,
            run=end.run,
            delivered=end.count,
            held=held,
            removed=removed,
        )
        return int(removed)

    def _group_keys(self, end: GroupEnd) -> tuple[str, str, str, str]:
        layout = self.layout
        if layout.index is None or layout.meta is None:
            raise ConfigRefused(
                f"{self._label}: a group's full read ended, and removing the records it no "
                "longer has needs both 'index' and 'meta' templates"
            )
        try:
            index_key = layout.group_key(layout.index, end.stream, end.group)
            meta_key = layout.group_key(layout.meta, end.stream, end.group)
            prefix, suffix = layout.id_affixes(end.stream, end.group, end.group_name)
        except Unrenderable as exc:
            raise ConfigRefused(f"{self._label}: group {end.group!r}: {exc}") from exc
        assert index_key is not None and meta_key is not None
        return index_key, meta_key, prefix, suffix

    async def group_counts(self, stream: str, groups: Sequence[str]) -> dict[str, int]:
        """SCARD of each group's index set (0 for a group the sink does not hold). Raises
        ``ConfigRefused`` without an ``index`` template, ``ConnectorError`` when Redis
        fails."""
        client = self._require()
        keys = self._index_keys(stream, groups)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.scard(key)
                counts = await pipe.execute()
        except rexc.RedisError as exc:
            raise sink_error(exc, self._label, "count groups") from exc
        return {group: int(count) for group, count in zip(groups, counts, strict=True)}

    def _index_keys(self, stream: str, groups: Iterable[str]) -> list[str]:
        if self.layout.index is None:
            raise ConfigRefused(f"{self._label}: counting a group's records needs 'index'")
        try:
            return [str(self.layout.group_key(self.layout.index, stream, g)) for g in groups]
        except Unrenderable as exc:
            raise ConfigRefused(f"{self._label}: index template: {exc}") from exc


def _needs_group(template: Template) -> bool:
    """Whether a template has a variable other than ``{stream}`` (the group, by any name)."""
    return any(name != "stream" for name in template.fields)


class CPackedConnection(aredis.Connection):
    """redis-py's TCP connection with its commands packed by hiredis (in C): a batch of
    1,000 records is ~5,000 arguments, and redis-py's Python packer took ~40 % of a write."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if (isinstance(first, str) and " " in first) or (
            isinstance(first, bytes) and b" " in first
        ):
            args = (*first.split(), *args[1:])  # "SCRIPT LOAD": two words, as redis-py sends
        return [hiredis.pack_command(args)]


def client_name(sink_name: str) -> str:
    """``syncworker:<name>`` with what CLIENT SETNAME refuses (spaces, newlines) replaced."""
    cleaned = "".join(c if c.isascii() and c.isprintable() and c != " " else "_" for c in sink_name)
    return f"syncworker:{cleaned}"[:128]
