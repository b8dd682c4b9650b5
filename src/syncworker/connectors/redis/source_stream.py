"""``redis_stream``: a source that reads Redis streams through a consumer group, so one stream
scales out to many workers (each entry goes to one consumer of the group).

- Claim: one Lua script (``lua/stream_read.lua``) runs ``XREADGROUP ... >`` on every stream,
  sharing the limit fairly, in one round trip. Entries rolled back by this source come first,
  then entries reclaimed from dead consumers, then new ones.
- Ack: ``XACK``. Entries stay in the stream (trimming is the producers' business, e.g.
  ``XADD ... MAXLEN ~ 1000000``); deleting each entry would only fragment the stream.
- Nack: the entries stay pending for this consumer with their idle time reset
  (``XCLAIM ... JUSTID``, which does not count a delivery) and the next claim returns them
  first, in order.
- Crash: entries a consumer was delivered but did not acknowledge within ``claim_idle`` are
  reclaimed (``XPENDING ... IDLE`` + ``XCLAIM``, ``lua/stream_reclaim.lua``) by any consumer of
  the group, at open and at least every ``claim_idle / 2`` during claims. ``claim_idle`` is
  a lease: it must exceed the time a batch takes to write.
- Poison: an entry that would be delivered more than ``max_deliveries`` times (its consumers
  keep dying or stalling on it) is not returned; it is appended to ``<stream key>:dead``
  (``dead_suffix``) with its original fields plus ``dead_reason``, ``dead_deliveries``,
  ``dead_id``, ``dead_group`` and ``dead_consumer``, and acknowledged. Rollbacks do not count
  (the runtime dead-letters records the sinks reject on its own).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import redis.asyncio as aredis
import structlog
from pydantic import Field, field_validator, model_validator
from redis import exceptions as rexc
from redis.commands.core import AsyncScript

from syncworker.connectors.redis.client import (
    RedisConnectionConfig,
    create_client,
    default_worker_id,
    describe,
    iso_utc,
    preload_scripts,
    redis_errors,
    register_scripts,
    translate_error,
)
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.record import (
    Batch,
    Decoded,
    Record,
    decode,
    decoded_key,
    log_wrapped,
    record_key,
    wrap,
)
from syncworker.errors import ConnectionClosed

log = structlog.get_logger(__name__)

SCRIPTS = ("stream_read", "stream_reclaim", "stream_nack", "stream_retire")

Entry = tuple[int, bytes, list[bytes], int]
"""A delivered entry: (stream index, entry id, flat field/value list, deliveries)."""

_SWEEP_START = "-"


class RedisStreamSourceConfig(RedisConnectionConfig):
    """Settings of the ``redis_stream`` source."""

    type: Literal["redis_stream"] = Field(
        "redis_stream", description="Connector type: Redis streams read by a consumer group."
    )
    streams: dict[str, str] = Field(
        description="Stream name -> stream key, e.g. {events: 'app:events'}. The stream name "
        "becomes Record.stream."
    )
    group: str = Field(
        "syncworker",
        description="Consumer group; created (with the stream, if missing) at open. Workers "
        "sharing a group share the entries.",
    )
    start_id: str = Field(
        "0",
        description="Where a newly created group starts: '0' reads the entries already in the "
        "stream, '$' only those added later.",
    )
    consumer: str | None = Field(
        None,
        description="This worker's consumer name in the group; unique among live workers "
        "(default host:pid:random). A restarted worker reusing its name takes its old entries "
        "back at open.",
    )
    key_field: str | None = Field(
        None,
        description="Field of the payload used as the record key (e.g. 'id'); when absent the "
        "key is a hash of the payload.",
    )
    field: str | None = Field(
        "data",
        description="Entry field holding the JSON payload; when an entry lacks it (or this is "
        "null), the entry's whole field map is the record's data.",
    )
    block: DurationS = Field(
        1.0, description="Longest time one wait() blocks on the streams for new entries."
    )
    claim_idle: DurationS = Field(
        60.0,
        description="Entries delivered to a consumer and not acknowledged for this long are "
        "taken over by another (dead or stalled consumer). Must exceed a batch's write time.",
    )
    max_deliveries: int = Field(
        5,
        ge=1,
        description="An entry delivered this many times without an ack (its consumers died on "
        "it) goes to the '<stream key><dead_suffix>' stream instead of a new delivery.",
    )
    dead_suffix: str = Field(
        ":dead", description="Suffix of the dead-letter stream's key (after the stream key)."
    )

    @field_validator("streams")
    @classmethod
    def _streams_valid(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("streams is empty; expected at least one {name: stream_key}")
        if any(not name or not key for name, key in value.items()):
            raise ValueError("stream names and keys must be non-empty")
        if len(set(value.values())) != len(value):
            raise ValueError("each stream key may appear only once")
        return value

    @field_validator("block", "claim_idle")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError("must be a duration of at least 1ms")
        return value

    @field_validator("group", "start_id", "dead_suffix")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _block_below_timeout(self) -> RedisStreamSourceConfig:
        if self.block >= self.socket_timeout:
            raise ValueError(
                f"block ({self.block:g}s) must be shorter than socket_timeout "
                f"({self.socket_timeout:g}s), or a quiet stream looks like a dead server"
            )
        return self


@dataclass(frozen=True, slots=True)
class _Delivery:
    """A batch's token: the consumer name it was delivered to and its entries."""

    consumer: str
    entries: tuple[Entry, ...]


def _id_order(entry: Entry) -> tuple[int, int, int]:
    milliseconds, _, sequence = entry[1].partition(b"-")
    return entry[0], int(milliseconds), int(sequence or 0)


class RedisStreamSource:
    """Claims batches from Redis streams through a consumer group (see the module docstring).

    Records: ``stream`` is the configured stream name; ``data`` is the JSON object in
    ``field`` with exact numbers (or the wrapper, ``core.record.wrap``, for any other
    payload), or the entry's field map when the entry has no such field; ``key`` is
    ``data[key_field]`` (``core.record.record_key``) or a hash of the payload; ``meta`` has
    ``stream_key``, ``id``, ``deliveries`` and ``received_at`` (when Redis added the entry,
    ISO 8601 UTC).
    """

    config_model: ClassVar[type[RedisStreamSourceConfig]] = RedisStreamSourceConfig

    def __init__(self, config: RedisStreamSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, RedisStreamSourceConfig):
            config = RedisStreamSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self._consumer_base = config.consumer or default_worker_id()
        self.consumer = self._consumer_base
        self._consumers = [self.consumer]
        self._generation = itertools.count(2)
        self._streams = tuple(config.streams.items())
        self._keys = tuple(key for _, key in self._streams)
        self._field = config.field.encode() if config.field is not None else None
        self._claim_idle_ms = max(1, round(config.claim_idle * 1000))
        self._label = f"redis_stream {describe(config)} group {config.group!r}"
        self._turn = 0
        self._client: aredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._redeliver: list[Entry] = []
        self._cursors = [_SWEEP_START] * len(self._keys)
        self._sweep: list[int] = []  # streams whose reclaim sweep is under way
        self._reclaim_at = 0.0

    async def open(self) -> None:
        """Connect, load the scripts, create the group if missing and take over entries that
        dead consumers (or this consumer's previous life) left unacknowledged.

        Raises ``ConnectionFailed`` when Redis is unreachable, ``ConnectorError`` when a key
        holds something other than a stream.
        """
        if self._client is not None:
            return
        client = create_client(self.config)
        scripts = register_scripts(client, SCRIPTS)
        self._redeliver, self._sweep, self._reclaim_at = [], [], 0.0
        try:
            with redis_errors(self._label, "open", opening=True):
                await client.ping()
                await preload_scripts(client, scripts)
                self._client, self._scripts = client, scripts
                await self._create_groups(client)
                await self._adopt_own_entries(client)
        except BaseException:
            self._client, self._scripts = None, {}
            await client.aclose()
            raise

    async def claim(self, limit: int) -> Batch | None:
        """Up to ``limit`` entries: rolled-back ones first, then entries reclaimed from dead
        consumers (when a sweep is due), then new ones shared fairly between the streams.

        Returns ``None`` when there are none. Raises ``ConnectorError`` (``ConnectionClosed``
        when the connection broke) when Redis fails; the source then continues under a new
        consumer name, so entries the failed call may have delivered (and rolled-back entries
        waiting here) are reclaimed after ``claim_idle``.
        """
        if limit <= 0:
            return None
        client = self._open_client()
        entries = self._redeliver[:limit]
        del self._redeliver[:limit]
        try:
            if len(entries) < limit and time.monotonic() >= self._reclaim_at:
                entries += await self._reclaim(client, limit - len(entries))
            if len(entries) < limit:
                entries += await self._read(client, limit - len(entries))
        except rexc.RedisError as exc:
            self._rotate_consumer()
            raise translate_error(exc, self._label, "claim") from exc
        if not entries:
            return None
        return Batch(self._to_records(entries), token=_Delivery(self.consumer, tuple(entries)))

    async def wait(self, timeout_s: float) -> None:
        """Block until an entry this group has not delivered yet is in a stream, or for
        ``min(timeout_s, block)``; return at once when rolled-back entries are waiting.

        Consumes nothing: it reads the group's last delivered ids (XINFO GROUPS) and blocks on
        a plain ``XREAD`` after them, so a wait cut short (the runtime cancels it when stopping)
        cannot leave entries delivered to nobody. Never raises: a Redis failure returns at
        once so the next claim reports it.
        """
        block_ms = int(min(timeout_s, self.config.block) * 1000)
        if self._redeliver or block_ms < 1 or self._client is None:
            return
        client = self._client
        try:
            after = await self._last_delivered_ids(client)
            await client.xread(dict(zip(self._keys, after, strict=True)), count=1, block=block_ms)
        except rexc.RedisError:
            return

    async def ack(self, batch: Batch) -> None:
        """``XACK`` the batch's entries (they stay in the stream). Raises ``ConnectorError``
        when Redis fails."""
        delivery = batch.token
        if not isinstance(delivery, _Delivery):
            return
        client = self._open_client()
        ids = self._ids_by_stream(delivery.entries)
        with redis_errors(self._label, "ack"):
            async with client.pipeline(transaction=False) as pipe:
                for index, entry_ids in ids.items():
                    pipe.xack(self._keys[index], self.config.group, *entry_ids)
                await pipe.execute()

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Keep the batch's entries pending for this consumer and return them first, in order,
        from the next claim. Entries another consumer has reclaimed meanwhile stay with it.

        Raises ``ConnectorError`` when Redis fails; the entries then come back to some consumer
        after ``claim_idle``.
        """
        delivery = batch.token
        if not isinstance(delivery, _Delivery):
            return
        client = self._open_client()
        kept: list[Entry] = []
        try:
            for index, entry_ids in self._ids_by_stream(delivery.entries).items():
                args: list[str | bytes] = [self.config.group, delivery.consumer, self.consumer]
                args += entry_ids
                reply = await self._scripts["stream_nack"](
                    keys=[self._keys[index]], args=args, client=client
                )
                still_ours = set(reply)
                kept += (e for e in delivery.entries if e[0] == index and e[1] in still_ours)
        except rexc.RedisError as exc:
            self._rotate_consumer()
            raise translate_error(exc, self._label, "rollback") from exc
        self._redeliver = sorted([*self._redeliver, *kept], key=_id_order)

    async def backlog(self) -> int:
        """Entries not yet delivered to the group (XINFO GROUPS ``lag``; Redis 7+) plus the
        rolled-back ones waiting here. Raises ``ConnectorError`` when Redis fails."""
        client = self._open_client()
        total = len(self._redeliver)
        with redis_errors(self._label, "backlog"):
            groups = await self._groups(client)
            for key, group in zip(self._keys, groups, strict=True):
                lag = group.get("lag")
                if lag is None:
                    # Redis cannot tell after some deletions in the stream: an upper bound.
                    lag = await client.xlen(key)
                total += int(lag)
        return total

    async def close(self) -> None:
        """Disconnect. Unacknowledged entries stay pending and are reclaimed by other
        consumers after ``claim_idle``; this source's consumer names holding no pending entry
        are removed from the group. Never raises."""
        client = self._client
        if client is None:
            return
        self._client, self._scripts, scripts = None, {}, self._scripts
        self._redeliver = []
        try:
            await scripts["stream_retire"](
                keys=list(self._keys), args=[self.config.group, *self._consumers], client=client
            )
        except rexc.RedisError as exc:
            log.warning(
                "redis_stream_close_failed",
                source=self.name,
                consumer=self.consumer,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            await client.aclose()

    # -- internals ------------------------------------------------------------------------

    def _open_client(self) -> aredis.Redis:
        if self._client is None:
            raise ConnectionClosed(f"{self._label}: source {self.name!r} is not open")
        return self._client

    async def _create_groups(self, client: aredis.Redis) -> None:
        for key in self._keys:
            try:
                await client.xgroup_create(key, self.config.group, self.config.start_id, True)
            except rexc.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read(self, client: aredis.Redis, limit: int) -> list[Entry]:
        args = (self.config.group, self.consumer, limit, self._turn)
        self._turn += 1
        script = self._scripts["stream_read"]
        try:
            reply = await script(keys=self._keys, args=args, client=client)
        except rexc.ResponseError as exc:
            if "NOGROUP" in str(exc):
                # The stream was deleted (and its group with it) after open: recreate it
                # for the next claim; this one fails, as it may have stopped half-way.
                await self._create_groups(client)
            raise
        entries: list[Entry] = []
        for position in range(0, len(reply), 2):
            index = reply[position] - 1
            entries += ((index, entry_id, fields, 1) for entry_id, fields in reply[position + 1])
        return entries

    async def _adopt_own_entries(self, client: aredis.Redis) -> None:
        """Take back, for redelivery, what this consumer name holds from a previous life (a
        worker restarted with the same ``consumer``); none with the default random name."""
        for index in range(len(self._keys)):
            cursor = _SWEEP_START
            while True:
                cursor, entries = await self._reclaim_page(client, index, cursor, 1000, "own")
                self._redeliver += entries
                if cursor == _SWEEP_START:
                    break
        self._redeliver.sort(key=_id_order)

    async def _reclaim(self, client: aredis.Redis, limit: int) -> list[Entry]:
        """Continue the sweep over every stream's idle pending entries, up to ``limit``; once
        every stream is swept, the next sweep starts ``claim_idle / 2`` later."""
        if not self._sweep:
            self._sweep = list(range(len(self._keys)))
        entries: list[Entry] = []
        while self._sweep and len(entries) < limit:
            index = self._sweep[0]
            cursor, claimed = await self._reclaim_page(
                client, index, self._cursors[index], limit - len(entries), "others"
            )
            self._cursors[index] = cursor
            entries += claimed
            if cursor == _SWEEP_START:
                self._sweep.pop(0)
        if not self._sweep:
            self._reclaim_at = time.monotonic() + self.config.claim_idle / 2
        return entries

    async def _reclaim_page(
        self, client: aredis.Redis, index: int, cursor: str, limit: int, mode: str
    ) -> tuple[str, list[Entry]]:
        key = self._keys[index]
        args = (
            self.config.group,
            self.consumer,
            self._claim_idle_ms,
            cursor,
            limit,
            self.config.max_deliveries,
            mode,
            min(max(2 * limit, 100), 10_000),
        )
        next_cursor, dead, claimed = await self._scripts["stream_reclaim"](
            keys=[key, key + self.config.dead_suffix], args=args, client=client
        )
        entries: list[Entry] = [(index, entry_id, fields, n) for entry_id, fields, n in claimed]
        if entries or dead:
            log.warning(
                "redis_stream_entries_reclaimed",
                source=self.name,
                stream=key,
                consumer=self.consumer,
                mode=mode,
                reclaimed=len(entries),
                dead_lettered=dead,
                dead_letter_stream=key + self.config.dead_suffix,
            )
        return next_cursor.decode(), entries

    def _rotate_consumer(self) -> None:
        """Continue under a new consumer name after a failed claim or rollback.

        A failed call may have delivered or taken over entries we never heard of (a lost
        reply, a script stopped half-way), and a consumer never reclaims its own pending
        entries. Under a new name, everything the old one holds (including what waits here
        for redelivery) counts as another consumer's and is reclaimed after ``claim_idle``.
        """
        self._redeliver = []
        self.consumer = f"{self._consumer_base}~{next(self._generation)}"
        self._consumers.append(self.consumer)
        log.warning("redis_stream_consumer_renamed", source=self.name, consumer=self.consumer)

    def _to_records(self, entries: list[Entry]) -> list[Record]:
        key_field, wanted = self.config.key_field, self._field
        records: list[Record] = []
        append = records.append
        last_ms, received_at = b"", ""
        for index, entry_id, fields, deliveries in entries:
            stream, stream_key = self._streams[index]
            milliseconds = entry_id.partition(b"-")[0]
            if milliseconds != last_ms:
                last_ms, received_at = milliseconds, iso_utc(int(milliseconds) / 1000)
            raw: bytes | None = None
            if wanted is not None:
                for position in range(0, len(fields), 2):
                    if fields[position] == wanted:
                        raw = fields[position + 1]
                        break
            if raw is not None:
                decoded = decode(raw, received_at)
                key = decoded_key(decoded, raw, key_field)
            else:
                decoded, key = _decode_fields(fields, received_at, key_field)
            meta = {
                "stream_key": stream_key,
                "id": entry_id.decode(),
                "deliveries": deliveries,
                "received_at": received_at,
            }
            record = Record(key, decoded.data, stream, "upsert", meta)
            append(record)
            if decoded.reason is not None:
                log_wrapped(decoded, record, self.name, stream_key=stream_key, id=meta["id"])
        return records

    @staticmethod
    def _ids_by_stream(entries: tuple[Entry, ...]) -> dict[int, list[bytes]]:
        ids: dict[int, list[bytes]] = {}
        for index, entry_id, _, _ in entries:
            ids.setdefault(index, []).append(entry_id)
        return ids

    async def _groups(self, client: aredis.Redis) -> list[dict[str, Any]]:
        """This group's XINFO GROUPS entry for each stream."""
        async with client.pipeline(transaction=False) as pipe:
            for key in self._keys:
                pipe.xinfo_groups(key)
            replies = await pipe.execute()
        wanted = self.config.group.encode()
        found: list[dict[str, Any]] = []
        for key, groups in zip(self._keys, replies, strict=True):
            group = next((g for g in groups if g.get("name") == wanted), None)
            if group is None:
                raise rexc.ResponseError(f"NOGROUP no group {self.config.group!r} on {key!r}")
            found.append(group)
        return found

    async def _last_delivered_ids(self, client: aredis.Redis) -> list[bytes]:
        return [group["last-delivered-id"] for group in await self._groups(client)]


def _decode_fields(
    fields: list[bytes], received_at: str, key_field: str | None
) -> tuple[Decoded, str]:
    """An entry without the payload field: its field map as the data, and the record key.

    A field name or value that is not valid UTF-8 wraps the entry (reason ``invalid_utf8``):
    ``raw`` is then the base64 of its field/value list in Redis's own protocol (a RESP2 array
    of bulk strings), which keeps every byte and the pairs apart; the key field is read with
    the invalid bytes replaced, so the record keeps its id.
    """
    try:
        data = {fields[n].decode(): fields[n + 1].decode() for n in range(0, len(fields), 2)}
    except UnicodeDecodeError as exc:
        resp = _resp_array(fields)
        lenient = {
            fields[n].decode(errors="replace"): fields[n + 1].decode(errors="replace")
            for n in range(0, len(fields), 2)
        }
        detail = (
            f"a field is not valid UTF-8 ({exc.reason}); the entry's fields are kept as the "
            "base64 of their RESP2 array"
        )
        decoded = Decoded(wrap(resp, "invalid_utf8", received_at), "invalid_utf8", detail)
        return decoded, record_key(lenient, resp, key_field)
    return Decoded(data), record_key(data, jsonvalue.dumps(data, sort_keys=True), key_field)


def _resp_array(fields: list[bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(fields)]
    for item in fields:
        parts += (b"$%d\r\n" % len(item), item, b"\r\n")
    return b"".join(parts)
