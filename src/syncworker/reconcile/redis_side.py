"""The ``redis`` sink's records of one group (or of one key prefix) as a reconcile ``Side``.

Keys are record ids as text (``key_kind`` "text", code point order). A grouped side reads
the ids from the group's index set (SMEMBERS); an ungrouped one finds the record keys by the
key template's text around ``{id}`` (SCAN MATCH). Values come from the record keys
themselves, read in chunks of ``chunk`` keys per command (MGET for ``format: json``, a
read-only Lua script for ``format: hash``), all chunks of a read in one pipelined round
trip: an id whose key is missing is not a row of the side (an index member without its key
is an "extra" nowhere and a "missing" where the source has it).

A row's digest is ``reconcile.digest.record_digest`` of the stored record decoded exactly as
stored (``jsonvalue.loads``: exact numbers), the digest the ``http`` side gives the same
record as the API sent it. A stored value that is not JSON is a row too, whose value is
``{"$undecodable": <text>}``: it differs from any source record instead of vanishing.

The side reads its group once, at ``open`` (each comparison opens its sides), and answers
``key_bounds``/``summarize`` from that snapshot. With ``format: json`` the sink stores the
record's canonical JSON (the text ``record_digest`` hashes), so ``summarize`` sums the
digests of the stored texts unread: equal to the records' own for what the sink wrote, and
different (with the odds of a 64-bit collision) for any other text, whose range is then
fetched; ``fetch`` reads its rows again and digests them decoded, so a record stored in
another spelling (spaces, key order) is not reported different. ``rows`` reads the keys
again. Redis keeps no change time per record: ``recent_keys`` is ``None``.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson
import redis.asyncio as aredis
from redis import exceptions as rexc
from redis.commands.core import AsyncScript

from syncworker.connectors.redis.client import create_client, describe, register_scripts
from syncworker.connectors.redis.sink import (
    CPackedConnection,
    KeyLayout,
    RedisSinkConfig,
    Unrenderable,
    decode_hash,
    exact_loads,
    sink_error,
)
from syncworker.core import jsonvalue
from syncworker.errors import ConfigError
from syncworker.reconcile.digest import RangeDigests, canonical_digest, record_digest
from syncworker.reconcile.sides import Key, KeyKind, KeyRange, SideInfo, Summary

UNDECODABLE = "$undecodable"
_PIPELINE_CHUNKS = 50  # chunks per round trip: bounded replies for a large ungrouped prefix
_COLUMN_SAMPLE = 200  # records decoded at open to name the columns (format json)
_SCAN_COUNT = 10_000  # keys SCAN looks at per call: a shared database may hold millions


class RedisGroupSide:
    """One group of ``stream`` (``group``), or with ``group=None`` every record key of the
    template's prefix, as the ``redis`` sink with ``config`` holds it.

    ``group_name`` is the group's name in the key template (``event_id`` for
    ``registration:{event_id}:{id}``); None: any variable of it but ``{id}`` and
    ``{stream}`` is the group. ``client``: a client to use (not closed by ``close``);
    default: the side's own.
    """

    key_kind: KeyKind = "text"

    def __init__(
        self,
        config: RedisSinkConfig,
        *,
        stream: str,
        group: str | None,
        group_name: str | None = None,
        label: str | None = None,
        chunk: int = 1000,
        client: aredis.Redis | None = None,
    ) -> None:
        self.config = config
        self.stream = stream
        self.group = group
        self.group_name = group_name
        self.chunk = chunk
        self.layout = KeyLayout.of(config)
        where = f"group {group!r}" if group is not None else "every key"
        self.label = label or f"redis {describe(config)} {stream} {where}"
        self._client = client
        self._own_client = client is None
        self._ids: list[str] = []
        self._digests: list[int] = []
        self._ranges = RangeDigests([], [])
        self._columns: set[str] = set()
        self._prefix, self._suffix = self._affixes()

    def _affixes(self) -> tuple[str, str]:
        try:
            prefix, suffix = self.layout.id_affixes(self.stream, self.group, self.group_name)
            if self.group is not None and self.layout.index is None:
                raise Unrenderable("a group's side reads the group's index set: set 'index'")
        except Unrenderable as exc:
            raise ConfigError(f"{self.label}: {exc}") from exc
        return prefix, suffix

    def record_key(self, record_id: str) -> str:
        return f"{self._prefix}{record_id}{self._suffix}"

    # -- Side -----------------------------------------------------------------------------

    async def open(self) -> SideInfo:
        """Read the group's ids and records (see the module docstring). Raises
        ``ConnectionFailed`` when Redis is unreachable, ``ConfigRefused`` when it refuses
        the credentials or the index key holds another type."""
        if self._client is None:
            self._client = side_client(self.config)
        try:
            ids = await self._read_ids(self._client)
            raws = await self._read_raw(self._client, ids)
        except rexc.RedisError as exc:
            raise sink_error(exc, self.label, "read") from exc
        rows = sorted(
            ((i, raw) for i, raw in zip(ids, raws, strict=True) if self._present(raw)),
            key=itemgetter(0),
        )
        self._ids = [i for i, _ in rows]
        if self.config.format == "json":
            # The stored text's digest: the record's own when the sink wrote it (canonical
            # JSON); any other text digests differently, and ``fetch`` decodes it exactly.
            self._digests = [canonical_digest(raw) for _, raw in rows]
            sample = [self._names(raw) for _, raw in rows[:_COLUMN_SAMPLE]]
        else:
            sample = [self._decode(raw) for _, raw in rows]
            self._digests = [_digest(value) for value in sample]
        self._columns = set().union(*(v.keys() for v in sample if type(v) is dict))
        self._ranges = RangeDigests(self._ids, self._digests)
        return SideInfo(self.label, sorted(self._columns), can_tell_recent=False)

    def _present(self, raw: Any) -> bool:
        return bool(raw) if self.config.format == "hash" else raw is not None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._own_client:
            await client.aclose()

    async def key_bounds(self) -> tuple[Key, Key] | None:
        return (self._ids[0], self._ids[-1]) if self._ids else None

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        return [Summary(*self._ranges.summary(*self._span(rng), exclude)) for rng in ranges]

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        """The digests of the rows in ``ranges``; ``format: json`` reads them again and
        digests their decoded records (exact even for text the sink did not write)."""
        found: dict[Key, int] = {}
        for rng in ranges:
            lo, hi = self._span(rng)
            for record_id, digest in zip(self._ids[lo:hi], self._digests[lo:hi], strict=True):
                if record_id not in exclude:
                    found[record_id] = digest
        if self.config.format != "json" or not found:
            return found
        ids = [str(k) for k in found]
        if self._client is None:
            raise ConfigError(f"{self.label}: not open")
        try:
            raws = await self._read_raw(self._client, ids)
        except rexc.RedisError as exc:
            raise sink_error(exc, self.label, "read") from exc
        return {
            i: self._fetched_digest(raw)
            for i, raw in zip(ids, raws, strict=True)
            if raw is not None
        }

    def _fetched_digest(self, raw: bytes) -> int:
        """The digest of a stored JSON record decoded exactly. Text orjson reads and writes
        back byte for byte (the canonical JSON the sink stores) holds no number orjson
        rounded, so it is its own canonical JSON: its digest without the exact read, which
        costs five times more."""
        try:
            if orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS) == raw:
                return canonical_digest(raw)
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            pass
        return _digest(self._decode(raw))

    async def rows(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, object]]:
        """The records of ``keys`` read again, decoded (exact numbers); absent ones left out."""
        if self._client is None:
            raise ConfigError(f"{self.label}: not open")
        ids = [str(k) for k in keys]
        try:
            values = await self._read_values(self._client, ids)
        except rexc.RedisError as exc:
            raise sink_error(exc, self.label, "read") from exc
        return {i: v for i, v in zip(ids, values, strict=True) if v is not None}

    async def recent_keys(self, within_s: float) -> frozenset[Key] | None:
        return None

    async def count_recent(self, within_s: float) -> int | None:
        return None

    # -- reading --------------------------------------------------------------------------

    def _span(self, rng: KeyRange) -> tuple[int, int]:
        lo = 0 if rng.lo is None else bisect.bisect_left(self._ids, str(rng.lo))
        hi = len(self._ids) if rng.hi is None else bisect.bisect_left(self._ids, str(rng.hi))
        return lo, max(lo, hi)

    async def _read_ids(self, client: aredis.Redis) -> list[str]:
        if self.group is not None:
            index_key = self.layout.group_key(self.layout.index, self.stream, self.group)
            members = await client.smembers(str(index_key))
            return [_text(m) for m in members]
        pattern = _glob_escape(self._prefix) + "*" + _glob_escape(self._suffix)
        ids: list[str] = []
        start, end = len(self._prefix.encode()), len(self._suffix.encode())
        async for key in client.scan_iter(match=pattern, count=_SCAN_COUNT):
            ids.append(_text(key[start : len(key) - end]))
        return ids

    async def _read_values(self, client: aredis.Redis, ids: list[str]) -> list[Any]:
        """The decoded record of each id (``None`` when its key is missing), in order."""
        return [
            self._decode(raw) if self._present(raw) else None
            for raw in await self._read_raw(client, ids)
        ]

    async def _read_raw(self, client: aredis.Redis, ids: list[str]) -> list[Any]:
        """What each id's key holds, undecoded: its text (json; ``None`` when missing) or
        its flat field list (hash; empty when missing)."""
        keys = [self.record_key(i) for i in ids]
        chunks = [keys[n : n + self.chunk] for n in range(0, len(keys), self.chunk)]
        out: list[Any] = []
        script = self._hash_script(client) if self.config.format == "hash" else None
        for first in range(0, len(chunks), _PIPELINE_CHUNKS):
            async with client.pipeline(transaction=False) as pipe:
                for chunk in chunks[first : first + _PIPELINE_CHUNKS]:
                    if script is not None:
                        await script(keys=chunk, client=pipe)
                    else:
                        pipe.mget(chunk)
                replies = await pipe.execute()
            for reply in replies:
                out.extend(reply)
        return out

    def _hash_script(self, client: aredis.Redis) -> AsyncScript:
        """``lua/hash_read.lua`` bound to ``client`` (EVALSHA, loaded again if flushed)."""
        return register_scripts(client, ("hash_read",))["hash_read"]

    def _names(self, raw: bytes) -> Any:
        """A stored JSON record as orjson reads it, for its field names only (a number it
        rounds does not change a name; the exact read costs ten times more): ``_decode``'s
        answer for text orjson refuses."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._decode(raw)

    def _decode(self, raw: Any) -> Any:
        if self.config.format == "hash":
            fields = dict(zip(raw[::2], raw[1::2], strict=True))
            try:
                return decode_hash(fields, self.config.json_fields_key)
            except jsonvalue.UndecodableJSON:
                return {UNDECODABLE: repr(fields)}
        try:
            return exact_loads(raw)
        except jsonvalue.UndecodableJSON:
            return {UNDECODABLE: raw.decode("utf-8", "replace")}


def side_client(config: RedisSinkConfig) -> aredis.Redis:
    """A client for sides and ``redis_groups`` (share one across the groups of a check):
    ``create_client``'s, with its commands packed by hiredis (a group's MGETs carry every
    record key; redis-py's Python packer was ~40 % of the reading)."""
    client = create_client(config)
    if client.connection_pool.connection_class is aredis.Connection:
        client.connection_pool.connection_class = CPackedConnection
    return client


async def redis_groups(
    config: RedisSinkConfig, stream: str, *, client: aredis.Redis | None = None
) -> list[str]:
    """The groups the ``redis`` sink with ``config`` registered for ``stream`` (its
    ``groups`` set), sorted. Raises ``ConfigError`` when ``groups`` is not configured,
    ``ConnectorError`` when Redis fails."""
    layout = KeyLayout.of(config)
    registry = layout.registry_key(stream)
    if registry is None:
        raise ConfigError(f"redis {describe(config)}: listing the groups needs 'groups'")
    own = client is None
    active = side_client(config) if client is None else client
    try:
        members = await active.smembers(registry)
    except rexc.RedisError as exc:
        raise sink_error(exc, f"redis {describe(config)}", "list groups") from exc
    finally:
        if own:
            await active.aclose()
    return sorted(_text(m) for m in members)


def _digest(value: Any) -> int:
    try:
        return record_digest(value)
    except jsonvalue.JSONValueError:  # read, but deeper than JSON is written: still a row
        return record_digest({UNDECODABLE: repr(value)[:1000]})


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "surrogateescape")


def _glob_escape(text: str) -> str:
    """``text`` matched literally by SCAN MATCH (its glob characters escaped)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
