"""The ``jobs`` sink: routes by routing key to the seed's queues, deduplication of
redeliveries, refusals with their reason, and its config errors (SQLite and PostgreSQL
queue backends; the conformance cases are in tests/conformance/jobs_sink.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from syncworker.connectors.jobs.sink import JobsSink, record_key_of
from syncworker.core.record import Record, wrap
from syncworker.queue.base import Job

pytestmark = pytest.mark.integration

SEED_ROUTES = [
    {"match": "media.image", "task": "media", "queue": "media", "priority": 2},
    {"match": "media.*", "task": "media", "queue": "media", "priority": 1},
    {"match": "notification.push", "task": "notification", "queue": "notification", "priority": 3},
    {"match": "notification.#", "task": "notification", "queue": "notification", "priority": 1},
    {"match": "cleanup.#", "task": "cleanup", "queue": "cleanup"},
]


def sqlite_backend(tmp_path: Path) -> dict[str, Any]:
    return {"type": "sqlite", "path": str(tmp_path / "jobs.db")}


async def jobs_of(sink: JobsSink) -> list[Job]:
    return sorted(await sink.backend.list_jobs(limit=1000), key=lambda job: int(job.id))


def rec(key: str, data: Any, stream: str = "in", op: str = "upsert") -> Record:
    return Record(key=key, data=data, stream=stream, op=op)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path)
    return {"type": "postgres", "url": request.getfixturevalue("pg_url"), "schema": "sw_h4"}


async def test_routing_keys_become_jobs_of_the_seeds_queues(backend: dict[str, Any]) -> None:
    sink = JobsSink({"type": "jobs", "backend": backend, "routes": SEED_ROUTES}, name="jobs")
    await sink.open()
    try:
        records = [
            rec(
                "m-1", {"type": "image", "s3Key": "a.png", "n": 12345678901234567890}, "media.image"
            ),
            rec("m-2", {"type": "video"}, "media.video"),
            rec("n-1", {"type": "push"}, "notification.push"),
            rec("n-2", {"type": "email"}, "notification.email.daily"),
            rec("c-1", {"type": "stories"}, "cleanup"),
            rec("x-1", {"v": 1}, "unknown.key"),
        ]
        result = await sink.write(records)
        jobs = await jobs_of(sink)
    finally:
        await sink.close()
    assert result is not None and list(result.failed) == [5]  # no route, no task: refused
    assert "no route matches stream 'unknown.key'" in str(result.failed[5])
    placed = [(record_key_of(j.unique_key or ""), j.task, j.queue, j.priority) for j in jobs]
    assert placed == [
        ("m-1", "media", "media", 2),
        ("m-2", "media", "media", 1),
        ("n-1", "notification", "notification", 3),
        ("n-2", "notification", "notification", 1),
        ("c-1", "cleanup", "cleanup", 0),
    ]
    assert jobs[0].payload == {"type": "image", "s3Key": "a.png", "n": 12345678901234567890}
    assert {(j.max_attempts, j.timeout_s) for j in jobs} == {(4, None)}  # retries: 3


async def test_retries_and_timeout_reach_the_job_rows(tmp_path: Path) -> None:
    config = {"type": "jobs", "backend": sqlite_backend(tmp_path), "task": "t"}
    sink = JobsSink({**config, "retries": 2, "timeout": "5m"}, name="jobs")
    await sink.open()
    try:
        await sink.write([rec("k", {"v": 1})])
        (job,) = await jobs_of(sink)
    finally:
        await sink.close()
    assert (job.max_attempts, job.timeout_s) == (3, 300.0)


async def test_a_redelivery_adds_no_job_and_other_data_is_a_new_one(
    backend: dict[str, Any],
) -> None:
    sink = JobsSink({"type": "jobs", "backend": backend, "task": "t"}, name="jobs")
    await sink.open()
    try:
        first = [rec("k-1", {"v": 1}), rec("k-2", {"v": 1})]
        await sink.write(first)
        await sink.write(first)  # redelivered after a crash: nothing new
        await sink.write([rec("k-1", {"v": 2})])  # another message under the same key
        jobs = await jobs_of(sink)
    finally:
        await sink.close()
    assert [(record_key_of(j.unique_key or ""), j.payload) for j in jobs] == [
        ("k-1", {"v": 1}),
        ("k-2", {"v": 1}),
        ("k-1", {"v": 2}),
    ]


async def test_dedupe_by_key_keeps_one_live_job_per_key(tmp_path: Path) -> None:
    config = {
        "type": "jobs",
        "backend": sqlite_backend(tmp_path),
        "task_field": "kind",
        "task": "fallback",
        "unique_key_field": "user",
        "dedupe": "key",
    }
    sink = JobsSink(config, name="jobs")
    await sink.open()
    try:
        await sink.write([rec("a", {"kind": "reindex", "user": "u-1", "v": 1})])
        await sink.write([rec("b", {"kind": "reindex", "user": "u-1", "v": 2})])  # dropped
        await sink.write([rec("c", {"user": "u-2"})])  # no kind: the fallback task
        jobs = await jobs_of(sink)
    finally:
        await sink.close()
    assert [(j.task, record_key_of(j.unique_key or ""), j.payload.get("v")) for j in jobs] == [
        ("reindex", "u-1", 1),
        ("fallback", "u-2", None),
    ]


async def test_refusals_name_their_reason(tmp_path: Path) -> None:
    sink = JobsSink({"type": "jobs", "backend": sqlite_backend(tmp_path), "task": "t"}, name="j")
    await sink.open()
    try:
        result = await sink.write(
            [
                rec("ok", {"v": 1}),
                rec("gone", {}, op="delete"),
                rec("bad", wrap(b"not json {", "not_json")),
                rec("nul\x00key", {"v": 1}),
                rec("long" * 1000, {"v": 1}),
            ]
        )
        jobs = await jobs_of(sink)
    finally:
        await sink.close()
    assert result is not None
    reasons = {index: str(error) for index, error in result.failed.items()}
    assert sorted(reasons) == [1, 2, 3, 4]
    assert "no delete_task is set" in reasons[1]
    assert "not a JSON object message (not_json)" in reasons[2]
    assert "NUL" in reasons[3] and "longer than 2000 bytes" in reasons[4]
    assert [record_key_of(j.unique_key or "") for j in jobs] == ["ok"]


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="set task, task_field or routes"):
        JobsSink({"type": "jobs", "backend": sqlite_backend(tmp_path)}, name="j")
    with pytest.raises(ValidationError, match="type: expected one of sqlite, postgres"):
        JobsSink({"type": "jobs", "backend": {"type": "mysql"}, "task": "t"}, name="j")
    with pytest.raises(ValidationError, match="bath_size"):
        JobsSink({"type": "jobs", "backend": sqlite_backend(tmp_path), "bath_size": 1}, name="j")
