"""``sqlite_queue``: a source that claims messages from a SQLite queue table with a lease.

The table and its statements are the SQLite job-queue backend's (``syncworker.queue.sqlite``,
whose ``claim_messages``/``ack_claim``/``nack_claim`` this source drives): one SQLite queue
implementation for pipelines and job workers.

Several workers (threads, processes, or hosts sharing the file system safely) can consume one
queue file: a claim is one ``UPDATE ... RETURNING`` statement, so two claims never get the same
row. A worker that dies leaves its rows leased; they come back when the lease expires, or at
once when a worker on the same host opens the queue and finds the owner's pid gone.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sqlite3
from pathlib import Path
from typing import Any, ClassVar, Literal

import structlog
from pydantic import Field, field_validator

from syncworker.connectors.sqlite.client import check_identifier
from syncworker.connectors.sqlite.queue import DEFAULT_TABLE
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig
from syncworker.core.record import Batch, Record, decode, decoded_key, log_wrapped
from syncworker.queue.sqlite import MessageRow, SqliteQueueBackend, claim_message_rows

log = structlog.get_logger(__name__)

Row = MessageRow


class SqliteQueueSourceConfig(ConnectorConfig):
    """Settings of the ``sqlite_queue`` source."""

    type: Literal["sqlite_queue"] = Field(
        "sqlite_queue", description="Connector type: a SQLite queue table as a source."
    )
    path: Path = Field(description="SQLite database file holding the queue table.")
    table: str = Field(DEFAULT_TABLE, description="Queue table name; created if missing.")
    streams: list[str] | None = Field(
        None, description="Only claim messages of these streams; null claims every stream."
    )
    key_field: str | None = Field(
        None,
        description="Field of the JSON payload used as the record key (e.g. 'id'); when absent "
        "the key is a hash of the raw payload.",
    )
    lease: DurationS = Field(
        60.0,
        description="How long a claimed message stays invisible before another worker may "
        "claim it again (e.g. 60s). Must exceed the time a batch takes to write.",
    )
    poll_interval: DurationS = Field(
        0.2, description="How long to sleep when the queue is empty (e.g. 200ms)."
    )

    @field_validator("table")
    @classmethod
    def _table_is_identifier(cls, value: str) -> str:
        return check_identifier(value)

    @field_validator("streams")
    @classmethod
    def _streams_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("streams is empty; use null to claim every stream")
        return value

    @field_validator("lease", "poll_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be a duration greater than 0")
        return value


class SqliteQueueSource:
    """Claims batches from a SQLite queue table (see ``syncworker.connectors.sqlite.queue``).

    Records: ``stream`` from the row; ``data`` is the JSON object payload with exact numbers,
    or the wrapper (``core.record.wrap``) for any other payload; ``key`` is
    ``data[key_field]`` (``core.record.record_key``) or a hash of the payload; ``meta`` has
    ``queue_id``, ``attempts`` and ``received_at`` (enqueue time, epoch seconds).
    """

    config_model: ClassVar[type[SqliteQueueSourceConfig]] = SqliteQueueSourceConfig

    def __init__(self, config: SqliteQueueSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, SqliteQueueSourceConfig):
            config = SqliteQueueSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.owner = ""
        self._lease_s = config.lease
        self._poll_interval_s = config.poll_interval
        self._streams = None if config.streams is None else tuple(config.streams)
        self._queue = SqliteQueueBackend(config.path, table=config.table)

    async def open(self) -> None:
        """Open the file, create the table if missing and release rows of dead local workers.

        Raises ``ConnectionFailed`` when the file cannot be opened.
        """
        if self._queue.is_open:
            return
        hostname = socket.gethostname()
        self.owner = f"{hostname}:{os.getpid()}:{secrets.token_hex(4)}"
        await self._queue.open()
        released = await self._queue.release_dead_owners(
            lambda owner: _is_dead_local_owner(owner, hostname)
        )
        for owner, rows in released.items():
            log.warning(
                "sqlite_queue_dead_owner_released", source=self.name, owner=owner, rows=rows
            )

    async def claim(self, limit: int) -> Batch | None:
        """Lease up to ``limit`` available messages in id order; ``None`` when there are none.

        One statement marks and returns the rows, so concurrent claims never overlap. Raises
        ``ConnectorError`` (nothing claimed) when the database fails.
        """
        if limit <= 0:
            return None
        claim_id = secrets.token_hex(8)  # 64 random bits; short ids keep the row rewrite small
        now = self._queue.clock()
        records = await self._queue.run(
            lambda conn: self._claim_records(conn, claim_id, limit, now)
        )
        if not records:
            return None
        return Batch(records, token=claim_id)

    def _claim_records(
        self, conn: sqlite3.Connection, claim_id: str, limit: int, now: float
    ) -> list[Record]:
        # On the connection's thread: decoding a batch keeps off the event loop.
        statements = self._queue.statements
        lease_until = now + self._lease_s
        rows = claim_message_rows(
            conn, statements, self._streams, limit, self.owner, lease_until, now, claim_id
        )
        return to_records(rows, self.config.key_field, self.name)

    async def wait(self, timeout_s: float) -> None:
        """Sleep for the poll interval, or ``timeout_s`` if shorter."""
        await asyncio.sleep(max(0.0, min(timeout_s, self._poll_interval_s)))

    async def ack(self, batch: Batch) -> None:
        """Delete the batch's rows. Raises ``ConnectorError`` when the database fails."""
        if batch.token is None:
            return
        done = await self._queue.ack_claim(batch.token)
        if done != len(batch):
            # The lease ran out and another claim took the rows over; they will be delivered
            # again (and written idempotently). A longer lease avoids this.
            log.warning(
                "sqlite_queue_ack_lease_lost",
                source=self.name,
                expected=len(batch),
                deleted=done,
                lease_s=self._lease_s,
            )

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Make the batch's rows claimable again at once, at their original place."""
        if batch.token is None:
            return
        await self._queue.nack_claim(batch.token)

    async def backlog(self) -> int:
        """How many messages (of the configured streams) are claimable now."""
        return await self._queue.backlog(self._streams)

    async def in_flight(self) -> int:
        """Messages claimed by some worker and not yet acked (read off the partial index of
        claimed rows, so it costs the same however long the queue is)."""
        return await self._queue.in_flight()

    async def close(self) -> None:
        """Close the connection and its thread; unacked claims wait for recovery."""
        await self._queue.close()


def to_records(
    rows: list[Row], key_field: str | None, source: str = "sqlite_queue"
) -> list[Record]:
    """Records from claimed rows ``(id, stream, payload, attempts, enqueued_at)``.

    The hot path of the source: no validation models, one dict per record for meta. The
    claim returns the payload as a BLOB (and the stream too), so a row another program wrote
    as TEXT that is not valid UTF-8 cannot fail the claim: it is wrapped like any payload
    that is not a JSON object (``core.record.wrap``), its bytes kept as base64.
    """
    records: list[Record] = []
    append = records.append
    names: dict[Any, str] = {}  # a batch has few streams: decode each once
    for queue_id, stream_bytes, payload, attempts, enqueued_at in rows:
        raw: bytes = payload if type(payload) is bytes else str(payload).encode()
        stream = names.get(stream_bytes)
        if stream is None:
            stream = names[stream_bytes] = (
                stream_bytes.decode(errors="replace")
                if type(stream_bytes) is bytes
                else str(stream_bytes)
            )
        decoded = decode(raw, enqueued_at)
        meta = {"queue_id": queue_id, "attempts": attempts, "received_at": enqueued_at}
        record = Record(decoded_key(decoded, raw, key_field), decoded.data, stream, "upsert", meta)
        append(record)
        if decoded.reason is not None:
            log_wrapped(decoded, record, source, queue_id=queue_id)
    return records


def _is_dead_local_owner(owner: str, hostname: str) -> bool:
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != hostname or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    # pid 0 would signal our own process group; our own pid is alive by definition.
    if pid <= 0 or pid == os.getpid():
        return False
    return not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True
