"""Faults during a full sync of the ``zoho_creator`` source (fake Zoho Creator, real httpx,
real Pipeline): each one ends exact, or stops with a clear error, never loops."""

from __future__ import annotations

import io
import traceback
from collections.abc import AsyncIterator, Iterator

import pytest

from syncworker.errors import ConfigRefused
from syncworker.observe.logging import configure_logging, reset_logging
from syncworker.state.base import StateStore
from tests.fakes.zoho_creator import ZohoCreatorServer
from tests.integration.zoho_support import (
    EVENTS,
    REGISTRATIONS,
    GroupSink,
    of_event,
    pipeline,
    seed,
    zoho_source,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def zoho() -> AsyncIterator[ZohoCreatorServer]:
    async with ZohoCreatorServer() as server:
        yield server


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("json", "debug", stream)
    try:
        yield stream
    finally:
        reset_logging()


async def full_sync(zoho: ZohoCreatorServer, state: StateStore, **overrides: object) -> GroupSink:
    sink = GroupSink()
    run = pipeline(zoho_source(zoho, **overrides), sink, state)
    try:
        result = await run.run_once("full")
    finally:
        await run.close()
    assert result.status == "success", result.error
    return sink


def assert_exact(zoho: ZohoCreatorServer, sink: GroupSink) -> None:
    held = zoho.records(REGISTRATIONS)
    assert set(sink.rows) == set(held)
    for key, value in held.items():
        assert sink.rows[key] == value, key


async def test_token_expiring_mid_sync_is_refreshed_once_and_no_page_fails(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 2, 450)
    zoho.respond_next(200, 200, 200, "expire")  # the 4th data request finds its token dead
    sink = await full_sync(zoho, state)
    assert_exact(zoho, sink)
    assert zoho.tokens_issued == 2  # the first token, and exactly one refresh
    refused = [r for r in zoho.data_requests() if r.status == 401]
    assert len(refused) == 1
    assert await state.dead_letters() == []


async def test_429_with_retry_after_is_waited_out(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 2, 300)
    zoho.retry_after = 0.05
    zoho.respond_next(200, "429", "429")
    sink = await full_sync(zoho, state)
    assert_exact(zoho, sink)
    assert [r.status for r in zoho.data_requests()].count(429) == 2


async def test_retry_after_is_capped(zoho: ZohoCreatorServer, state: StateStore) -> None:
    seed(zoho, 1, 10)
    zoho.retry_after = 3600  # an hour: the test's timeout would stop a source obeying it
    zoho.respond_next("429")
    sink = await full_sync(zoho, state, max_retry_after="20ms")
    assert_exact(zoho, sink)


async def test_a_5xx_burst_is_retried(zoho: ZohoCreatorServer, state: StateStore) -> None:
    seed(zoho, 2, 250)
    zoho.respond_next(200, 500, 503, 502, 500)
    sink = await full_sync(zoho, state, max_attempts=6)
    assert_exact(zoho, sink)


async def test_a_5xx_burst_longer_than_the_attempts_pauses_and_resumes(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 1, 250)
    zoho.respond_next(200, 500, 500)
    sink = GroupSink()
    run = pipeline(zoho_source(zoho, max_attempts=2), sink, state)
    try:
        first = await run.run_once("full")
        assert first.status == "error" and "HTTP 500" in (first.error or "")
        assert "HTTP 500" in str(run.source.status()["last_error"])  # type: ignore[attr-defined]
        second = await run.run_once("full")
    finally:
        await run.close()
    assert second.status == "success"
    assert_exact(zoho, sink)
    assert len(sink.ends) == 1  # the second run went on with the first one's read


async def test_a_malformed_page_is_read_again(zoho: ZohoCreatorServer, state: StateStore) -> None:
    seed(zoho, 2, 250)
    zoho.respond_next(200, 200, "malformed")
    sink = await full_sync(zoho, state)
    assert_exact(zoho, sink)
    assert await state.dead_letters() == []


async def test_slow_pages_within_the_timeout(zoho: ZohoCreatorServer, state: StateStore) -> None:
    seed(zoho, 1, 250)
    zoho.slow_s = 0.2
    zoho.respond_next("slow", "slow")
    sink = await full_sync(zoho, state)
    assert_exact(zoho, sink)


async def test_a_page_slower_than_the_timeout_is_asked_again(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 1, 250)
    zoho.slow_s = 1.0
    zoho.respond_next(200, "slow")
    sink = await full_sync(zoho, state, timeout="200ms")
    assert_exact(zoho, sink)


async def test_records_without_id_or_not_objects_are_dead_lettered_with_their_page(
    zoho: ZohoCreatorServer, state: StateStore, logs: io.StringIO
) -> None:
    events = seed(zoho, 2, 250)
    lookup = {"Event": {"ID": events[0]}}
    zoho.put_raw(
        REGISTRATIONS, b'{"Name": "no id", "Event": {"ID": "%s"}}' % events[0].encode(), lookup
    )
    zoho.put_raw(REGISTRATIONS, b'"just text"', lookup)
    sink = await full_sync(zoho, state)
    assert_exact(zoho, sink)  # everything else arrived
    letters = await state.dead_letters()
    assert len(letters) == 2
    for letter in letters:
        assert letter.meta["page"] == 2  # rows 251 and 252 of event 0: its second page
        assert letter.meta["group"] == events[0]
        assert "page 2" in letter.error
    by_reason = {("without its id" in letter.error): letter for letter in letters}
    assert by_reason[True].data == {"Name": "no id", "Event": {"ID": events[0]}}
    assert by_reason[False].data["raw"] == '"just text"'
    first = next(end for end in sink.ends if end.group == events[0])
    assert first.count == len(of_event(zoho, events[0])) == 250
    errors = await state.errors()
    assert len([e for e in errors if e.type == "HTTP_SOURCE_RECORD"]) == 2
    assert "http_record_dead_lettered" in logs.getvalue()


async def test_a_repeating_cursor_stops_the_read_with_an_error(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 1, 450)
    zoho.sticky_cursor = True
    sink = GroupSink()
    run = pipeline(zoho_source(zoho), sink, state)
    try:
        result = await run.run_once("full")
    finally:
        await run.close()
    assert result.status != "success"
    assert "cursor already followed" in (result.error or "")
    assert len(zoho.data_requests()) < 10
    assert sink.ends == []  # the group never ended: nothing is removed from the sink
    assert sum(len(write) for write in sink.writes) == 200  # the repeated page is not queued


async def test_refused_credentials_stop_the_pipeline_without_quoting_secrets(
    zoho: ZohoCreatorServer, state: StateStore, logs: io.StringIO
) -> None:
    seed(zoho, 1, 5)
    wrong = "1000.a-refresh-token-that-is-revoked-777"
    source = zoho_source(zoho, refresh_token=wrong)
    run = pipeline(source, GroupSink(), state)
    try:
        with pytest.raises(ConfigRefused) as refused:
            await run.run_once("full")  # the pipeline stops: only a person can fix it
        status = run.status()
    finally:
        await run.close()
    error = "".join(traceback.format_exception(refused.value))
    assert "refresh_token" in str(refused.value)
    for text in (error, str(status), str(source.status()), logs.getvalue()):
        assert wrong not in text
        assert zoho.client_secret not in text


async def test_secrets_never_reach_logs_status_or_errors(
    zoho: ZohoCreatorServer, state: StateStore, logs: io.StringIO
) -> None:
    seed(zoho, 1, 250)
    zoho.respond_next(200, "expire", 500)
    source = zoho_source(zoho, max_attempts=2)
    run = pipeline(source, GroupSink(), state)
    errors: list[BaseException] = []
    try:
        await run.run_once("full")
        status = run.status()
        zoho.expire_tokens()
        zoho.refresh_token = "rotated"  # our refresh token is refused from now on
        again = zoho_source(zoho, refresh_token="1000.fake-refresh-token-4567")
        try:
            await again.open()
            await again.claim(10)
        except ConfigRefused as exc:
            errors.append(exc)
        finally:
            await again.close()
    finally:
        await run.close()
    assert errors, "the refused refresh did not raise"
    secrets = [zoho.client_secret, "1000.fake-refresh-token-4567", *zoho.tokens]
    texts = [logs.getvalue(), str(status), str(source.status())]
    texts += ["".join(traceback.format_exception(e)) for e in errors]
    texts += [str(e.message) for e in await state.errors()]
    for text in texts:
        for secret in secrets:
            assert secret not in text


async def test_the_client_side_limiter_spaces_requests(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 1, 10)
    source = zoho_source(zoho, requests_per_minute=1)
    sink = GroupSink()
    run = pipeline(source, sink, state)
    try:
        # one request a minute: the events listing goes, the report's first page waits
        source._client = None
        await source.open()
        limiter = source._client.limiter  # type: ignore[union-attr]
        await limiter.acquire(f"report/{REGISTRATIONS}")
        assert limiter.delay_s(f"report/{REGISTRATIONS}") > 50
        assert limiter.delay_s(f"report/{EVENTS}") == 0  # per endpoint
    finally:
        await run.close()


async def test_a_dead_letter_the_state_store_refused_is_kept_until_it_takes_it(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    events = seed(zoho, 1, 5)
    zoho.put_raw(REGISTRATIONS, b'"no record"', {"Event": {"ID": events[0]}})
    add = state.add_dead_letters
    failures = [OSError("state store disk full (injected)")]

    async def flaky(letters):  # type: ignore[no-untyped-def]
        if failures:
            raise failures.pop()
        return await add(letters)

    state.add_dead_letters = flaky  # type: ignore[method-assign]
    sink = GroupSink()
    run = pipeline(zoho_source(zoho), sink, state)
    try:
        first = await run.run_once("full")
        second = first if first.status == "success" else await run.run_once("full")
    finally:
        await run.close()
    assert second.status == "success", second.error
    assert_exact(zoho, sink)
    letters = await state.dead_letters()
    assert [letter.data["raw"] for letter in letters] == ['"no record"']
    assert len(sink.ends) == 1


async def test_past_the_per_minute_limit_zoho_answers_429_and_the_run_says_so(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    seed(zoho, 3, 5)
    zoho.per_minute = 2  # the events listing and one event's page; then 429 for a minute
    zoho.retry_after = None  # as Zoho: no Retry-After
    source = zoho_source(zoho, max_attempts=2)
    sink = GroupSink()
    run = pipeline(source, sink, state)
    try:
        result = await run.run_once("full")
        assert result.status != "success"
        assert "HTTP 429" in (result.error or "") and "2945" in (result.error or "")
        assert "HTTP 429" in str(source.status()["last_error"])
        assert zoho.throttled == 2  # both attempts of the second event's page
        assert sink.ends == []  # no event ended yet: nothing was removed from the sink
        zoho.per_minute = 0  # a minute later
        again = await run.run_once("full")
    finally:
        await run.close()
    assert again.status == "success"
    assert_exact(zoho, sink)
    assert len(sink.ends) == 3  # each event once: the first one's read was not done again
    pages = [r for r in zoho.data_requests() if "criteria" in r.query and r.status == 200]
    assert len(pages) == 3


async def test_an_ack_retried_after_the_checkpoint_failed_moves_the_mark_once(
    zoho: ZohoCreatorServer, state: StateStore
) -> None:
    from syncworker.core.protocols import SourceContext

    seed(zoho, 1, 5)
    set_checkpoint = state.set_checkpoint
    failures = [OSError("state store busy (injected)")]

    async def flaky(pipeline: str, name: str, value: str) -> None:
        if failures:
            raise failures.pop()
        await set_checkpoint(pipeline, name, value)

    state.set_checkpoint = flaky  # type: ignore[method-assign]
    source = zoho_source(zoho, events=None)  # the report alone: an incremental read of it
    source.bind(SourceContext("zoho", state=state))
    await source.open()
    try:
        batch = await source.claim(100)
        assert batch is not None and len(batch) == 5
        with pytest.raises(OSError):
            await source.ack(batch)
        await source.ack(batch)  # the runtime's retry
    finally:
        await source.close()
    assert await state.get_checkpoint("zoho", "hwm") is not None
    again = zoho_source(zoho, events=None)
    again.bind(SourceContext("zoho", state=state))
    await again.open()
    try:
        assert await again.claim(100) is None  # nothing read twice
    finally:
        await again.close()
