"""The SQLite state store: checkpoints, run log, error log, dead letters."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from syncworker.errors import ConnectionClosed
from syncworker.state import DeadLetter, ErrorRecord, RunRecord, SqliteStateStore


def letter(key: str, pipeline: str = "p", **overrides: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "pipeline": pipeline,
        "stream": "in",
        "key": key,
        "op": "upsert",
        "data": {"id": key},
        "error": f"ValueError: bad {key}",
        "error_type": "ValueError",
        "sink": "sink:memory",
    }
    values.update(overrides)
    return DeadLetter(**values)


def run(pipeline: str, started_at: float, **overrides: Any) -> RunRecord:
    values: dict[str, Any] = {
        "pipeline": pipeline,
        "mode": "incremental",
        "started_at": started_at,
        "finished_at": started_at + 1.5,
        "status": "success",
    }
    values.update(overrides)
    return RunRecord(**values)


@pytest.fixture
async def second(tmp_path: Path) -> AsyncIterator[SqliteStateStore]:
    """Another store on the same file, as the CLI would open next to a running engine."""
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    yield store
    await store.close()


# -- checkpoints ---------------------------------------------------------------------------


async def test_checkpoint_is_none_until_set_then_overwritten(state: SqliteStateStore) -> None:
    assert await state.get_checkpoint("p", "cursor") is None
    await state.set_checkpoint("p", "cursor", "100")
    assert await state.get_checkpoint("p", "cursor") == "100"
    await state.set_checkpoint("p", "cursor", "250")
    assert await state.get_checkpoint("p", "cursor") == "250"


async def test_checkpoints_are_per_pipeline_and_name(state: SqliteStateStore) -> None:
    await state.set_checkpoint("a", "cursor", "1")
    await state.set_checkpoint("a", "snapshot", "2")
    await state.set_checkpoint("b", "cursor", "3")
    assert await state.get_checkpoint("a", "cursor") == "1"
    assert await state.get_checkpoint("a", "snapshot") == "2"
    assert await state.get_checkpoint("b", "cursor") == "3"
    assert await state.get_checkpoint("b", "snapshot") is None


# -- runs ----------------------------------------------------------------------------------


async def test_runs_newest_first_and_filtered_by_pipeline(state: SqliteStateStore) -> None:
    ids = [
        await state.record_run(run("a", 1000.0, processed=1)),
        await state.record_run(run("b", 1001.0, processed=2)),
        await state.record_run(run("a", 1002.0, processed=3)),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [r.id for r in await state.runs()] == ids[::-1]
    only_a = await state.runs("a")
    assert [r.processed for r in only_a] == [3, 1]
    assert {r.pipeline for r in only_a} == {"a"}
    assert [r.id for r in await state.runs(limit=2)] == ids[:0:-1]
    assert await state.runs("nobody") == []


async def test_run_record_round_trips_with_its_duration(state: SqliteStateStore) -> None:
    sent = run(
        "p",
        1700000000.25,
        finished_at=1700000002.75,
        status="partial",
        processed=10,
        written=7,
        dead_lettered=2,
        filtered=1,
        streams={"in": 6, "out": 4},
        error="SinkUnavailable: down",
        mode="full",
    )
    sent_id = await state.record_run(sent)
    [got] = await state.runs("p")
    assert got.id == sent_id
    assert got.duration_ms == pytest.approx(2500.0)
    assert (got.mode, got.status, got.error) == ("full", "partial", "SinkUnavailable: down")
    assert (got.processed, got.written, got.dead_lettered, got.filtered) == (10, 7, 2, 1)
    assert got.streams == {"in": 6, "out": 4}
    assert got.started_at == sent.started_at and got.finished_at == sent.finished_at


def test_duration_ms_is_the_difference_in_milliseconds() -> None:
    assert run("p", 10.0, finished_at=10.125).duration_ms == pytest.approx(125.0)
    assert run("p", 10.0, finished_at=10.0).duration_ms == 0.0


# -- errors --------------------------------------------------------------------------------


async def test_errors_unresolved_only_and_resolve(state: SqliteStateStore) -> None:
    first = await state.record_error(
        ErrorRecord(type="batch_failed", pipeline="p", message="boom", metadata={"n": 1})
    )
    second_id = await state.record_error(
        ErrorRecord(type="dead_letter", pipeline="p", message="bad", record_key="k1")
    )
    other = await state.record_error(ErrorRecord(type="open_failed", pipeline="q", message="x"))
    assert [e.id for e in await state.errors()] == [other, second_id, first]
    assert [e.id for e in await state.errors("p")] == [second_id, first]

    assert await state.resolve_errors([first]) == 1
    unresolved = await state.errors("p", unresolved_only=True)
    assert [e.id for e in unresolved] == [second_id]
    everything = {e.id: e for e in await state.errors("p")}
    assert everything[first].resolved and not everything[second_id].resolved
    assert everything[first].metadata == {"n": 1}
    assert everything[second_id].record_key == "k1"
    assert everything[first].created_at is not None

    assert await state.resolve_errors([second_id, 999_999]) == 1
    assert await state.errors("p", unresolved_only=True) == []
    assert [e.id for e in await state.errors(unresolved_only=True)] == [other]


async def test_errors_limit(state: SqliteStateStore) -> None:
    for i in range(5):
        await state.record_error(ErrorRecord(type="t", pipeline="p", message=str(i)))
    assert [e.message for e in await state.errors(limit=2)] == ["4", "3"]


# -- dead letters --------------------------------------------------------------------------


async def test_add_dead_letters_returns_their_ids(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter("a"), letter("b"), letter("c")])
    assert len(ids) == 3 and ids == sorted(ids)
    assert [d.key for d in await state.dead_letters()] == ["a", "b", "c"]
    assert [d.id for d in await state.dead_letters()] == ids
    assert await state.add_dead_letters([]) == []


async def test_dead_letter_by_id_has_every_field(state: SqliteStateStore) -> None:
    [letter_id] = await state.add_dead_letters(
        [
            letter(
                "k",
                op="delete",
                meta={"position": 12},
                stack="Traceback ...",
                attempts=3,
                created_at=1700000000.0,
            )
        ]
    )
    got = await state.dead_letter(letter_id)
    assert got is not None
    assert (got.id, got.pipeline, got.stream, got.key, got.op) == (
        letter_id,
        "p",
        "in",
        "k",
        "delete",
    )
    assert got.data == {"id": "k"} and got.meta == {"position": 12}
    assert (got.error, got.error_type, got.sink) == (
        "ValueError: bad k",
        "ValueError",
        "sink:memory",
    )
    assert got.stack == "Traceback ..." and got.attempts == 3
    assert got.status == "dead"
    assert got.created_at == 1700000000.0 and got.updated_at is not None
    assert await state.dead_letter(letter_id + 1000) is None


async def test_add_dead_letters_is_all_or_nothing(state: SqliteStateStore) -> None:
    broken = letter("bad", error=None)  # NOT NULL column: the insert fails
    with pytest.raises(sqlite3.IntegrityError):
        await state.add_dead_letters([letter("good"), broken])
    assert await state.dead_letters() == []


async def test_dead_letters_filters_and_pages(state: SqliteStateStore) -> None:
    a_ids = await state.add_dead_letters([letter(f"a{i}", "a") for i in range(5)])
    await state.add_dead_letters([letter("b0", "b")])
    await state.requeue_dead_letters(ids=a_ids[:2])

    assert [d.key for d in await state.dead_letters("a")] == [f"a{i}" for i in range(5)]
    assert [d.key for d in await state.dead_letters("b")] == ["b0"]
    assert [d.key for d in await state.dead_letters(status="requeued")] == ["a0", "a1"]
    assert [d.key for d in await state.dead_letters(status="dead")] == ["a2", "a3", "a4", "b0"]
    assert [d.key for d in await state.dead_letters("b", status="requeued")] == []
    assert [d.key for d in await state.dead_letters(limit=2)] == ["a0", "a1"]
    assert [d.key for d in await state.dead_letters(limit=2, offset=2)] == ["a2", "a3"]
    assert [d.key for d in await state.dead_letters("a", limit=10, offset=4)] == ["a4"]
    assert await state.dead_letters(offset=6) == []


async def test_count_dead_letters_by_status(state: SqliteStateStore) -> None:
    assert await state.count_dead_letters() == {}
    ids = await state.add_dead_letters([letter(str(i)) for i in range(4)])
    await state.add_dead_letters([letter("x", "q")])
    await state.requeue_dead_letters(ids=ids[:1])
    assert await state.count_dead_letters("p") == {"dead": 3, "requeued": 1}
    assert await state.count_dead_letters("q") == {"dead": 1}
    assert await state.count_dead_letters() == {"dead": 4, "requeued": 1}


async def test_requeue_by_ids_only_changes_dead_ones(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter(str(i)) for i in range(3)])
    assert await state.requeue_dead_letters(ids=[ids[0]]) == 1
    await state.claim_requeued("p", 10)  # ids[0] is now replaying
    before = await state.dead_letter(ids[0])
    assert before is not None and before.status == "replaying"
    # the replaying one and an unknown id are left alone; only the dead one moves
    assert await state.requeue_dead_letters(ids=[ids[0], ids[1], 999_999]) == 1
    statuses = {d.id: d.status for d in await state.dead_letters()}
    assert statuses == {ids[0]: "replaying", ids[1]: "requeued", ids[2]: "dead"}
    assert await state.requeue_dead_letters(ids=[]) == 0


async def test_requeue_by_pipeline_and_all(state: SqliteStateStore) -> None:
    p_ids = await state.add_dead_letters([letter("p0"), letter("p1")])
    await state.add_dead_letters([letter("q0", "q")])
    await state.requeue_dead_letters(ids=[p_ids[0]])
    assert await state.requeue_dead_letters(pipeline="p") == 1  # p0 already requeued
    assert await state.count_dead_letters("p") == {"requeued": 2}
    assert await state.count_dead_letters("q") == {"dead": 1}
    assert await state.requeue_dead_letters() == 1
    assert await state.count_dead_letters() == {"requeued": 3}


async def test_requeue_updates_updated_at(state: SqliteStateStore) -> None:
    [letter_id] = await state.add_dead_letters([letter("k")])
    before = await state.dead_letter(letter_id)
    assert before is not None and before.updated_at is not None
    await state.requeue_dead_letters(ids=[letter_id])
    after = await state.dead_letter(letter_id)
    assert after is not None and after.updated_at is not None
    assert after.updated_at >= before.updated_at and after.status == "requeued"


async def test_claim_requeued_in_id_order_with_limit(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter(str(i)) for i in range(5)])
    await state.add_dead_letters([letter("other", "q")])
    await state.requeue_dead_letters()
    first = await state.claim_requeued("p", 3)
    assert [d.id for d in first] == ids[:3]
    assert {d.status for d in first} == {"replaying"}
    second_claim = await state.claim_requeued("p", 3)
    assert [d.id for d in second_claim] == ids[3:]
    assert await state.claim_requeued("p", 3) == []
    assert await state.count_dead_letters("p") == {"replaying": 5}
    assert await state.count_dead_letters("q") == {"requeued": 1}


async def test_claim_requeued_ignores_dead_letters_not_requeued(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter("a"), letter("b")])
    await state.requeue_dead_letters(ids=[ids[1]])
    assert [d.key for d in await state.claim_requeued("p", 10)] == ["b"]
    assert (await state.count_dead_letters("p")) == {"dead": 1, "replaying": 1}


async def test_release_requeued_puts_only_replaying_back(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter("a"), letter("b"), letter("c")])
    await state.requeue_dead_letters(ids=ids[:2])
    claimed = await state.claim_requeued("p", 1)
    assert [d.id for d in claimed] == [ids[0]]
    await state.release_requeued([ids[0], ids[2]])  # ids[2] is dead: stays dead
    statuses = {d.id: d.status for d in await state.dead_letters()}
    assert statuses == {ids[0]: "requeued", ids[1]: "requeued", ids[2]: "dead"}
    # released letters are claimed again, first in id order
    assert [d.id for d in await state.claim_requeued("p", 10)] == ids[:2]


async def test_recover_replaying_requeues_one_pipeline(state: SqliteStateStore) -> None:
    await state.add_dead_letters([letter("p0"), letter("p1"), letter("q0", "q")])
    await state.requeue_dead_letters()
    await state.claim_requeued("p", 10)
    await state.claim_requeued("q", 10)
    assert await state.recover_replaying("p") == 2
    assert await state.count_dead_letters("p") == {"requeued": 2}
    assert await state.count_dead_letters("q") == {"replaying": 1}
    assert await state.recover_replaying("p") == 0


async def test_delete_dead_letters(state: SqliteStateStore) -> None:
    ids = await state.add_dead_letters([letter("a"), letter("b"), letter("c")])
    assert await state.delete_dead_letters([ids[0], ids[2], 999_999]) == 2
    assert [d.key for d in await state.dead_letters()] == ["b"]
    assert await state.dead_letter(ids[0]) is None
    assert await state.delete_dead_letters([]) == 0


async def test_purge_by_ids_pipeline_and_all(state: SqliteStateStore) -> None:
    p_ids = await state.add_dead_letters([letter("p0"), letter("p1"), letter("p2")])
    await state.add_dead_letters([letter("q0", "q"), letter("q1", "q")])
    await state.add_dead_letters([letter("r0", "r")])
    await state.requeue_dead_letters(ids=[p_ids[2]])  # purge ignores status

    assert await state.purge_dead_letters(ids=[p_ids[0]]) == 1
    assert [d.key for d in await state.dead_letters("p")] == ["p1", "p2"]
    assert await state.purge_dead_letters(pipeline="p") == 2
    assert await state.dead_letters("p") == []
    assert [d.key for d in await state.dead_letters()] == ["q0", "q1", "r0"]
    assert await state.purge_dead_letters() == 3
    assert await state.dead_letters() == []
    assert await state.count_dead_letters() == {}


# -- shared file, data, lifecycle ---------------------------------------------------------


async def test_two_stores_on_one_file_see_each_others_writes(
    state: SqliteStateStore, second: SqliteStateStore
) -> None:
    # "state" plays the engine, "second" the CLI
    await state.set_checkpoint("p", "cursor", "42")
    assert await second.get_checkpoint("p", "cursor") == "42"
    [letter_id] = await state.add_dead_letters([letter("k")])
    assert [d.id for d in await second.dead_letters("p")] == [letter_id]

    assert await second.requeue_dead_letters(pipeline="p") == 1
    claimed = await state.claim_requeued("p", 10)
    assert [d.id for d in claimed] == [letter_id]
    assert await second.count_dead_letters("p") == {"replaying": 1}

    run_id = await second.record_run(run("p", 5.0))
    assert [r.id for r in await state.runs("p")] == [run_id]
    error_id = await state.record_error(ErrorRecord(type="t", pipeline="p", message="m"))
    assert await second.resolve_errors([error_id]) == 1
    assert await state.errors("p", unresolved_only=True) == []

    assert await second.purge_dead_letters(pipeline="p") == 1
    assert await state.dead_letter(letter_id) is None


async def test_unicode_and_nested_json_round_trip(state: SqliteStateStore) -> None:
    data = {
        "text": "olá 👋 — 你好 \u0000 end",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["ü", {"x": []}]}], "empty": {}},
        "ключ": "значение",
    }
    meta = {"position": {"stream": "in", "offset": 2**53}, "tags": ["a", "ß"]}
    [letter_id] = await state.add_dead_letters(
        [letter("ключ-🔑", data=data, meta=meta, error="ValueError: naïve ☃")]
    )
    got = await state.dead_letter(letter_id)
    assert got is not None
    assert got.data == data and got.meta == meta
    assert got.key == "ключ-🔑" and got.error == "ValueError: naïve ☃"

    await state.record_run(run("p", 1.0, streams={"файл": 3, "日本": 1}))
    [got_run] = await state.runs("p")
    assert got_run.streams == {"файл": 3, "日本": 1}

    await state.record_error(
        ErrorRecord(type="t", pipeline="p", message="échec ✗", metadata={"where": {"n": [1]}})
    )
    [got_error] = await state.errors("p")
    assert got_error.message == "échec ✗" and got_error.metadata == {"where": {"n": [1]}}

    await state.set_checkpoint("p", "cursor", '{"après": "✓"}')
    assert await state.get_checkpoint("p", "cursor") == '{"après": "✓"}'


async def test_state_survives_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"
    store = SqliteStateStore(path)
    await store.open()
    await store.set_checkpoint("p", "cursor", "7")
    await store.add_dead_letters([letter("k")])
    await store.close()
    assert path.exists()

    again = SqliteStateStore(path)
    await again.open()
    try:
        assert await again.get_checkpoint("p", "cursor") == "7"
        assert [d.key for d in await again.dead_letters()] == ["k"]
    finally:
        await again.close()


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "state.db")
    await store.open()
    await store.close()
    with pytest.raises(ConnectionClosed):
        await store.get_checkpoint("p", "cursor")
    await store.close()  # closing twice is harmless
