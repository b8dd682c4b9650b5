"""The ``pg_table`` source's claims while a batch is in flight: once a claim has drained the
change log, the claims that follow (filling a batch, or while it is written) skip the log
read until a NOTIFY wakes the source or a batch is settled."""

from __future__ import annotations

import asyncio

import pytest

from syncworker.core.record import Batch
from tests.integration.pg_table_support import setup_users, sql, target_url, users_source
from tests.waiting import eventually

__all__ = ["target_url"]

pytestmark = pytest.mark.integration

_LOG_WITHOUT_NOTIFY = "INSERT INTO syncworker_users_changes (key, op) VALUES (%s, 'R')"


def _keys(batch: Batch | None) -> list[str]:
    return [] if batch is None else [record.key for record in batch.records]


async def test_a_drained_log_is_read_again_on_a_notify_or_a_settled_batch(
    pg_url: str, target_url: str
) -> None:
    await setup_users(pg_url, target_url, rows=10)
    source = users_source(pg_url, snapshot="never")
    await source.open()
    try:
        await eventually(lambda: source.status()["listener"]["connected"], "the listener")
        # One row, one NOTIFY, received before the claim: no wake is left pending after it.
        await sql(pg_url, "UPDATE users SET score = 1 WHERE id = 1")
        await source.wait(10.0)
        first = await source.claim(10)
        assert _keys(first) == ["1"]

        # A row logged without a NOTIFY while the batch is in flight: not read yet (the
        # log was drained and nothing woke the source)...
        await sql(pg_url, _LOG_WITHOUT_NOTIFY, ("5",))
        assert await source.claim(10) is None
        # ...but a change that NOTIFYs is claimed, with the row logged before it.
        await sql(pg_url, "UPDATE users SET score = 2 WHERE id = 6")
        second = await eventually(lambda: source.claim(10), "the notified change")
        assert sorted(_keys(second)) == ["5", "6"]

        # Drained again; settling a batch makes the next claim read the log.
        await sql(pg_url, _LOG_WITHOUT_NOTIFY, ("7",))
        assert await source.claim(10) is None
        await source.ack(first)
        assert _keys(await source.claim(10)) == ["7"]
    finally:
        await source.close()


async def test_a_change_to_a_key_in_flight_wakes_the_source_when_its_batch_settles(
    pg_url: str, target_url: str
) -> None:
    await setup_users(pg_url, target_url, rows=10)
    source = users_source(pg_url, snapshot="never", poll_interval="1h")
    await source.open()
    try:
        await eventually(lambda: source.status()["listener"]["connected"], "the listener")
        await sql(pg_url, "UPDATE users SET score = 1 WHERE id = 1")
        await source.wait(10.0)
        first = await source.claim(10)
        assert _keys(first) == ["1"]
        # Its key is in flight: the change cannot be claimed yet, so its NOTIFY wakes
        # nothing (no claim reads the log for it) until the batch settles.
        await sql(pg_url, "UPDATE users SET score = 2 WHERE id = 1")
        await eventually(lambda: source._wake_deferred, "the notification for the busy key")
        assert not source._wake.is_set()
        await source.ack(first)
        await asyncio.wait_for(source.wait(3600), timeout=10)  # woken by the ack, not a poll
        assert _keys(await source.claim(10)) == ["1"]
    finally:
        await source.close()
