"""``redis_list``: a source that claims items from plain Redis lists other programs LPUSH into.

Producers ``LPUSH`` (the seed's ``whatsapp:in`` / ``whatsapp:out``), so the oldest item is at
the right end. A claim is one Lua script (``lua/list_claim.lua``) that moves up to ``limit``
items, shared fairly between the configured lists, from their right end into processing lists
and returns them oldest first. Keys, with ``P`` = ``processing_prefix`` (default ``tmp:``),
``S`` = a configured stream name and ``W`` = the worker id:

- ``P S:W:<n>``: the processing list of claim number ``n`` for stream ``S`` (the seed's
  ``tmp:in``, made unique per worker and per batch, e.g. ``tmp:in:host:42:9f3a1c2e:17``).
  One list per batch makes ack exact with several batches in flight: delete the list.
- ``P worker:W``: the worker's heartbeat, a key with a TTL refreshed every third of it.
- ``P worker:W:batches``: hash of the worker's live processing lists -> their source list.
- ``P workers``: set of worker ids that may own processing lists.

Ack deletes the batch's processing lists; nack pushes their items back at the consuming end,
in order, so they are claimed first again. When a worker's heartbeat key is gone, any other
worker's recovery (at open and every ``recovery_interval``) returns its processing lists to
their source lists, newest batch first so the oldest items are consumed first, in one script
per sweep: concurrent recoveries move each list exactly once.

Nacking several in-flight batches of one list restores the order only when they are nacked
newest first; in any other order every item still comes back (and sinks are idempotent).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import redis.asyncio as aredis
import structlog
from pydantic import Field, field_validator
from redis import exceptions as rexc
from redis.commands.core import AsyncScript

from syncworker.connectors.redis.client import (
    RedisConnectionConfig,
    create_client,
    default_worker_id,
    describe,
    is_connection_error,
    iso_utc,
    preload_scripts,
    redis_errors,
    register_scripts,
    translate_error,
)
from syncworker.core.durations import DurationS
from syncworker.core.record import Batch, Record, decode, decoded_key, log_wrapped
from syncworker.errors import ConnectionClosed, ConnectorError

log = structlog.get_logger(__name__)

SCRIPTS = ("list_claim", "list_ack", "list_rollback", "list_recover", "list_retire")


class RedisListSourceConfig(RedisConnectionConfig):
    """Settings of the ``redis_list`` source."""

    type: Literal["redis_list"] = Field(
        "redis_list", description="Connector type: plain Redis lists (LPUSH queues) as a source."
    )
    lists: dict[str, str] = Field(
        description="Stream name -> list key, e.g. {in: 'whatsapp:in', out: 'whatsapp:out'}. "
        "The stream name becomes Record.stream."
    )
    processing_prefix: str = Field(
        "tmp:",
        description="Prefix of the keys this source creates: processing lists "
        "'<prefix><stream>:<worker_id>:<claim>', heartbeats '<prefix>worker:<worker_id>', the "
        "set '<prefix>workers'. Workers sharing a prefix recover each other's batches.",
    )
    worker_id: str | None = Field(
        None,
        description="This worker's id in key names; must be unique among live workers "
        "(default host:pid:random). A restarted worker reusing its id recovers its old batches.",
    )
    heartbeat_ttl: DurationS = Field(
        30.0,
        description="Lifetime of the worker's heartbeat key, refreshed every third of it; "
        "when it lapses other workers return this worker's claimed items (e.g. 30s).",
    )
    recovery_interval: DurationS = Field(
        30.0,
        description="How often to look for dead workers' processing lists (also done at open).",
    )
    key_field: str | None = Field(
        None,
        description="Field of the JSON payload used as the record key (e.g. 'id'); when absent "
        "the key is a hash of the raw payload.",
    )
    poll_interval: DurationS = Field(
        0.2, description="How often an idle source checks the lists for new items (e.g. 200ms)."
    )
    block: bool = Field(
        True,
        description="wait() returns as soon as an item arrives (checking every poll_interval); "
        "false: wait() sleeps one poll_interval and lets the runtime claim.",
    )

    @field_validator("lists")
    @classmethod
    def _lists_valid(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("lists is empty; expected at least one {stream: list_key}")
        if any(not stream or not key for stream, key in value.items()):
            raise ValueError("stream names and list keys must be non-empty")
        if len(set(value.values())) != len(value):
            raise ValueError("each list key may appear only once")
        return value

    @field_validator("heartbeat_ttl", "recovery_interval", "poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value < 0.001:
            raise ValueError("must be a duration of at least 1ms")
        return value

    @field_validator("worker_id")
    @classmethod
    def _worker_id_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("worker_id is empty; omit it for the default host:pid:random")
        return value


@dataclass(frozen=True, slots=True)
class _Claim:
    """A batch's token: its claim number and ``(processing list, source list, items)``."""

    sequence: int
    parts: tuple[tuple[str, str, int], ...]


class RedisListSource:
    """Claims batches from Redis lists (see the module docstring for keys and recovery).

    Records: ``stream`` is the configured stream name; ``data`` is the JSON object payload
    with exact numbers, or the wrapper (``core.record.wrap``) for any other payload; ``key``
    is ``data[key_field]`` (``core.record.record_key``) or a hash of the payload; ``meta``
    has ``list`` (the source list key) and ``received_at`` (claim time, ISO 8601 UTC: lists
    keep no enqueue time).
    """

    config_model: ClassVar[type[RedisListSourceConfig]] = RedisListSourceConfig

    def __init__(self, config: RedisListSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, RedisListSourceConfig):
            config = RedisListSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.worker_id = config.worker_id or default_worker_id()
        prefix = config.processing_prefix
        worker = self.worker_id
        self._workers_key = f"{prefix}workers"
        self._worker_prefix = f"{prefix}worker:"
        self._heartbeat_key = f"{prefix}worker:{worker}"
        self._registry_key = f"{prefix}worker:{worker}:batches"
        self._streams = tuple(config.lists.items())
        self._source_keys = tuple(key for _, key in self._streams)
        self._processing_bases = tuple(f"{prefix}{stream}:{worker}:" for stream, _ in self._streams)
        self._heartbeat_ttl_ms = max(1, round(config.heartbeat_ttl * 1000))
        self._label = f"redis_list {describe(config)}"
        self._sequence = itertools.count(1)
        self._turn = 0
        self._client: aredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        # Processing lists whose fate is unknown (a claim or rollback whose reply was lost):
        # rolled back before the next claim, since our live heartbeat keeps others away.
        self._orphans: list[tuple[str, str]] = []
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        """Connect, load the scripts, recover dead workers' batches and start the heartbeat.

        Raises ``ConnectionFailed`` when Redis is unreachable.
        """
        if self._client is not None:
            return
        client = create_client(self.config)
        scripts = register_scripts(client, SCRIPTS)
        try:
            with redis_errors(self._label, "open", opening=True):
                await client.ping()
                await preload_scripts(client, scripts)
                self._client, self._scripts = client, scripts
                await self._recover(forced=self.worker_id)
                await client.set(self._heartbeat_key, self.worker_id, px=self._heartbeat_ttl_ms)
        except BaseException:
            self._client, self._scripts = None, {}
            await client.aclose()
            raise
        self._stopping = asyncio.Event()  # bound to this open's event loop
        self._tasks = [
            self._every(self.config.heartbeat_ttl / 3, self._beat, "heartbeat"),
            self._every(self.config.recovery_interval, self.recover, "recovery"),
        ]

    async def claim(self, limit: int) -> Batch | None:
        """Move up to ``limit`` items, oldest first and shared fairly between the lists, into
        this claim's processing lists; ``None`` when every list is empty.

        Raises ``ConnectorError`` (``ConnectionClosed`` when the connection broke) when Redis
        fails; a claim whose reply was lost is rolled back before the next claim.
        """
        if limit <= 0:
            return None
        client = self._open_client()
        if self._orphans:
            await self._return_orphans()
        sequence = next(self._sequence)
        processing = [f"{base}{sequence}" for base in self._processing_bases]
        keys = [self._workers_key, self._heartbeat_key, self._registry_key]
        for source, target in zip(self._source_keys, processing, strict=True):
            keys += (source, target)
        args = (limit, self._turn, self.worker_id, self._heartbeat_ttl_ms)
        self._turn += 1
        try:
            reply = await self._scripts["list_claim"](keys=keys, args=args, client=client)
        except rexc.RedisError as exc:
            if is_connection_error(exc):
                self._orphans += zip(processing, self._source_keys, strict=True)
            raise translate_error(exc, self._label, "claim") from exc
        if not reply:
            return None
        records: list[Record] = []
        parts: list[tuple[str, str, int]] = []
        received_at = iso_utc()
        for index in range(0, len(reply), 2):
            position = reply[index] - 1
            items: list[bytes] = reply[index + 1]
            stream, list_key = self._streams[position]
            parts.append((processing[position], list_key, len(items)))
            records += self._to_records(items, stream, list_key, received_at)
        return Batch(records, token=_Claim(sequence, tuple(parts)))

    def _to_records(
        self, items: list[bytes], stream: str, list_key: str, received_at: str
    ) -> list[Record]:
        key_field = self.config.key_field
        records: list[Record] = []
        append = records.append
        for raw in items:
            decoded = decode(raw, received_at)
            meta = {"list": list_key, "received_at": received_at}
            record = Record(
                decoded_key(decoded, raw, key_field), decoded.data, stream, "upsert", meta
            )
            append(record)
            if decoded.reason is not None:
                log_wrapped(decoded, record, self.name, list=list_key)
        return records

    async def wait(self, timeout_s: float) -> None:
        """Return once a list has items (checked every ``poll_interval`` with one pipelined
        LLEN round trip), or after ``timeout_s``; with ``block: false``, after one interval.

        Redis has no way to wait on several lists without popping an item: BLMPOP would take
        the item out of Redis before it is in a processing list (lost if we die), BLMOVE
        serves one list only, and keyspace notifications need server configuration and are
        fire-and-forget. Polling costs one small round trip per interval while idle, and
        none under load (the runtime only waits when a claim came back empty).
        Never raises: a Redis failure returns at once so the next claim reports it.
        """
        if timeout_s <= 0:
            return
        poll_s = self.config.poll_interval
        if not self.config.block:
            await asyncio.sleep(min(timeout_s, poll_s))
            return
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if await self.backlog() > 0:
                    return
            except ConnectorError:
                return
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return
            await asyncio.sleep(min(poll_s, remaining_s))

    async def ack(self, batch: Batch) -> None:
        """Delete the batch's processing lists. Raises ``ConnectorError`` when Redis fails."""
        claim = batch.token
        if not isinstance(claim, _Claim):
            return
        client = self._open_client()
        keys = [self._registry_key, *(processing for processing, _, _ in claim.parts)]
        with redis_errors(self._label, "ack"):
            found = await self._scripts["list_ack"](keys=keys, client=client)
        if found != len(claim.parts):
            # Our heartbeat lapsed (a stalled event loop, a network split) and another worker
            # returned the items to their list: they will be delivered again.
            log.warning(
                "redis_list_ack_after_recovery",
                source=self.name,
                worker=self.worker_id,
                claim=claim.sequence,
                missing_lists=len(claim.parts) - found,
            )

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Push the batch's items back at the consuming end of their lists, in their original
        order, and delete its processing lists (one script).

        Raises ``ConnectorError`` when Redis fails; the batch is then rolled back before the
        next claim, or by another worker's recovery if this one dies first.
        """
        claim = batch.token
        if not isinstance(claim, _Claim):
            return
        client = self._open_client()
        pairs = [(processing, source) for processing, source, _ in claim.parts]
        try:
            await self._rollback(client, pairs)
        except rexc.RedisError as exc:
            self._orphans += pairs
            raise translate_error(exc, self._label, "rollback") from exc

    async def backlog(self) -> int:
        """How many items wait in the source lists (LLEN of each, one round trip)."""
        client = self._open_client()
        with redis_errors(self._label, "backlog"):
            async with client.pipeline(transaction=False) as pipe:
                for key in self._source_keys:
                    pipe.llen(key)
                lengths = await pipe.execute()
        return sum(int(length) for length in lengths)

    async def recover(self) -> int:
        """Return the processing lists of workers whose heartbeat is gone to their source lists.

        Runs at open and every ``recovery_interval``; safe to run from many workers at once.
        Returns the number of items returned. Raises ``ConnectorError`` when Redis fails.
        """
        self._open_client()
        with redis_errors(self._label, "recovery"):
            return await self._recover(forced="")

    async def close(self) -> None:
        """Stop the heartbeat and recovery tasks, delete the heartbeat key and disconnect.

        Batches still unacknowledged are left in their processing lists, and the deleted
        heartbeat lets the next recovery (by any worker) return them at once. Never raises.
        """
        client = self._client
        if client is None:
            return
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            if self._orphans:
                await self._return_orphans()
            keys = [self._workers_key, self._heartbeat_key, self._registry_key]
            left = await self._scripts["list_retire"](
                keys=keys, args=[self.worker_id], client=client
            )
            if left:
                log.warning(
                    "redis_list_closed_with_batches",
                    source=self.name,
                    worker=self.worker_id,
                    processing_lists=left,
                )
        except (rexc.RedisError, ConnectorError) as exc:
            log.warning(
                "redis_list_close_failed",
                source=self.name,
                worker=self.worker_id,
                error=f"{type(exc).__name__}: {exc}",
            )
        finally:
            self._client, self._scripts = None, {}
            await client.aclose()

    # -- internals ------------------------------------------------------------------------

    def _open_client(self) -> aredis.Redis:
        if self._client is None:
            raise ConnectionClosed(f"{self._label}: source {self.name!r} is not open")
        return self._client

    async def _rollback(self, client: aredis.Redis, pairs: list[tuple[str, str]]) -> int:
        keys = [self._registry_key]
        for processing, source in pairs:
            keys += (processing, source)
        moved: int = await self._scripts["list_rollback"](keys=keys, client=client)
        return moved

    async def _return_orphans(self) -> None:
        orphans = list(self._orphans)
        with redis_errors(self._label, "rollback of an interrupted claim"):
            moved = await self._rollback(self._open_client(), orphans)
        self._orphans = self._orphans[len(orphans) :]
        if moved:
            log.warning("redis_list_interrupted_claim_returned", source=self.name, items=moved)

    async def _recover(self, *, forced: str) -> int:
        keys = [self._workers_key]
        args = [self._worker_prefix, forced]
        report = await self._scripts["list_recover"](
            keys=keys, args=args, client=self._open_client()
        )
        total = 0
        for index in range(0, len(report), 3):
            worker, lists, items = report[index : index + 3]
            total += items
            log.warning(
                "redis_list_worker_recovered",
                source=self.name,
                dead_worker=worker.decode(errors="replace"),
                processing_lists=lists,
                items=items,
            )
        return total

    async def _beat(self) -> None:
        await self._open_client().set(
            self._heartbeat_key, self.worker_id, px=self._heartbeat_ttl_ms
        )

    def _every(
        self, interval_s: float, action: Callable[[], Awaitable[Any]], what: str
    ) -> asyncio.Task[None]:
        """A named background task running ``action`` every ``interval_s`` until close."""

        async def loop() -> None:
            while True:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)
                    return
                except TimeoutError:
                    pass
                try:
                    await action()
                except (rexc.RedisError, ConnectorError) as exc:
                    log.warning(
                        "redis_list_background_failed",
                        task=what,
                        source=self.name,
                        worker=self.worker_id,
                        error=f"{type(exc).__name__}: {exc}",
                    )

        return asyncio.create_task(loop(), name=f"redis_list:{self.name}:{what}")
