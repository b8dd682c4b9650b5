"""The control API over real HTTP: a running engine, httpx, every endpoint and its errors."""

from __future__ import annotations

import socket
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncworker.connectors.sqlite.queue import SqliteQueue
from tests.e2e.conftest import RunningApi, start_api
from tests.waiting import eventually


def msg(n: int, text: str = "hello") -> dict[str, object]:
    return {"id": f"m{n}", "text": text}


async def test_health_and_ready_need_no_token(api: RunningApi) -> None:
    async with httpx.AsyncClient(base_url=api.server.url) as anonymous:
        health = await anonymous.get("/health")
        ready = await anonymous.get("/ready")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert ready.status_code == 200 and ready.json() == {"ready": True, "reasons": []}


async def test_every_other_endpoint_needs_the_token(api: RunningApi) -> None:
    async with httpx.AsyncClient(base_url=api.server.url) as anonymous:
        for method, path in [
            ("GET", "/status"),
            ("GET", "/pipelines/chat"),
            ("POST", "/pipelines/chat/stop"),
            ("GET", "/dead-letters"),
            ("GET", "/metrics"),
            ("GET", "/metrics/system"),
            ("GET", "/openapi.json"),
            ("POST", "/shutdown"),
            ("GET", "/api/sync-worker/status"),
        ]:
            missing = await anonymous.request(method, path)
            wrong = await anonymous.request(method, path, headers={"Authorization": "Bearer nope"})
            for answer in (missing, wrong):
                assert answer.status_code == 401, (method, path)
                assert answer.json() == {"error": "missing or wrong API token", "detail": None}
                assert answer.headers["www-authenticate"] == "Bearer"
    assert not api.engine.stopping  # the refused /shutdown did nothing
    assert api.engine.pipeline("chat").status()["running"]


async def test_status_counts_what_moved(api: RunningApi) -> None:
    api.enqueue(*(msg(n) for n in range(30)))
    await eventually(lambda: _processed(api, 30))
    body = (await api.client.get("/status")).json()
    chat = body["pipelines"]["chat"]
    assert chat["totals"]["processed"] == 30 and chat["state"] == "running"
    assert chat["schedule"] == "stream" and chat["sinks"] == ["jsonl", "sqlite"]
    assert chat["health"]["status"] in {"HEALTHY", "DEGRADED", "UNHEALTHY"}
    assert body["pipelines"]["idle"]["schedule"] == "manual"
    assert body["pid"] > 0 and body["stopping"] is False
    detail = (await api.client.get("/pipelines/chat")).json()
    assert detail["recent_runs"] and detail["recent_runs"][0]["pipeline"] == "chat"
    assert api.sink_rows() == 30


async def _processed(api: RunningApi, count: int) -> bool:
    status = (await api.client.get("/status")).json()
    return bool(status["pipelines"]["chat"]["totals"]["processed"] >= count)


async def test_unknown_pipeline_is_404(api: RunningApi) -> None:
    for method, path in [
        ("GET", "/pipelines/nope"),
        ("POST", "/pipelines/nope/start"),
        ("POST", "/pipelines/nope/stop"),
        ("POST", "/pipelines/nope/sync"),
        ("POST", "/pipelines/nope/force/k1"),
        ("GET", "/pipelines/nope/discrepancies"),
    ]:
        answer = await api.client.request(method, path)
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "no pipeline named 'nope'"
        assert answer.json()["detail"] == {"pipelines": ["chat", "idle"]}


async def test_stop_start_and_readiness(api: RunningApi) -> None:
    stopped = await api.client.post("/pipelines/chat/stop")
    assert stopped.json() == {"pipeline": "chat", "state": "stopped"}
    ready = await api.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["reasons"] == ["pipeline 'chat' is stopped"]
    api.enqueue(msg(1))
    refused = await api.client.post("/pipelines/chat/sync")
    assert refused.status_code == 409 and "start it first" in refused.json()["error"]
    assert not api.engine.stopping  # stopping one pipeline leaves the engine running
    started = await api.client.post("/pipelines/chat/start")
    assert started.status_code == 200 and started.json()["pipeline"] == "chat"
    await eventually(lambda: _processed(api, 1))
    assert (await api.client.get("/ready")).status_code == 200


async def test_sync_now_waits_for_the_run(api: RunningApi) -> None:
    with SqliteQueue(api.root / "idle.db") as queue:
        queue.enqueue([msg(n) for n in range(5)], stream="x")
    run = await api.client.post("/pipelines/idle/sync", json={"mode": "incremental"})
    assert run.status_code == 200
    body = run.json()
    assert body["processed"] == 5 and body["status"] == "success" and body["mode"] == "incremental"
    accepted = await api.client.post("/pipelines/idle/sync", json={"wait": False})
    assert accepted.status_code == 202
    assert accepted.json() == {"pipeline": "idle", "mode": "incremental", "accepted": True}


async def test_unsupported_operations_are_501(api: RunningApi) -> None:
    full = await api.client.post("/pipelines/chat/sync", json={"mode": "full"})
    assert full.status_code == 501 and "cannot do a full sync" in full.json()["error"]
    force = await api.client.post("/pipelines/chat/force/m1")
    assert force.status_code == 501 and force.json()["detail"] == {"record_key": "m1"}
    discrepancies = await api.client.get("/pipelines/chat/discrepancies")
    assert discrepancies.status_code == 501
    assert "does not support reconciliation" in discrepancies.json()["error"]


async def test_bad_bodies_are_422(api: RunningApi) -> None:
    cases = [{"mode": "sideways"}, {"mode": "full", "extra": 1}, {"wait": "maybe"}]
    for body in cases:
        answer = await api.client.post("/pipelines/chat/sync", json=body)
        assert answer.status_code == 422, body
        assert answer.json()["error"] == "invalid request" and answer.json()["detail"]
    not_json = await api.client.post(
        "/pipelines/chat/sync", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 422
    bad_limit = await api.client.get("/dead-letters", params={"limit": 0})
    assert bad_limit.status_code == 422


async def test_dead_letters_list_requeue_and_delete(api: RunningApi) -> None:
    api.enqueue(msg(1), msg(2, "far too long for the table"), msg(3, "also much too long here"))
    await eventually(lambda: _dead_letters(api, 2))
    page = (await api.client.get("/dead-letters", params={"status": "dead"})).json()
    assert page["total"] == 2
    first, second = page["items"]
    assert {first["record_key"], second["record_key"]} == {"m2", "m3"}
    assert first["where"] == "sink:sqlite" and "CHECK constraint failed" in first["error"]
    one = (await api.client.get(f"/dead-letters/{first['id']}")).json()
    assert one["data"]["text"] and "Traceback" in one["stack"]

    # widen the table, then requeue: the record goes through now
    with closing(sqlite3.connect(api.root / "sink.db")) as conn, conn:
        conn.execute("ALTER TABLE messages RENAME TO old")
        conn.execute("CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT)")
    requeued = await api.client.post(f"/dead-letters/{first['id']}/requeue")
    assert requeued.json() == {"id": first["id"], "status": "requeued"}
    again = await api.client.post(f"/dead-letters/{first['id']}/requeue")
    assert again.status_code in (404, 409)
    await eventually(lambda: _dead_letters(api, 1))
    deleted = await api.client.delete(f"/dead-letters/{second['id']}")
    assert deleted.json() == {"id": second["id"], "deleted": True}
    assert (await api.client.get("/dead-letters")).json() == {"items": [], "total": 0}
    for method in ("GET", "DELETE"):
        missing = await api.client.request(method, f"/dead-letters/{second['id']}")
        assert missing.status_code == 404
        assert missing.json()["error"] == f"no dead letter with id {second['id']}"


async def _dead_letters(api: RunningApi, count: int) -> bool:
    return bool((await api.client.get("/dead-letters")).json()["total"] == count)


async def test_metrics_parse_and_equal_the_records_moved(api: RunningApi) -> None:
    api.enqueue(*(msg(n) for n in range(40)), stream="in")
    api.enqueue(*(msg(n) for n in range(40, 50)), stream="out")
    api.enqueue(msg(99, "this one is far too long"), stream="out")
    await eventually(lambda: _processed(api, 51))
    text = (await api.client.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("syncworker_records_read_total", pipeline="chat", stream="in") == 40
    assert value("syncworker_records_read_total", pipeline="chat", stream="out") == 11
    assert (
        value("syncworker_records_written_total", pipeline="chat", sink="jsonl", stream="out") == 11
    )
    assert (
        value("syncworker_records_written_total", pipeline="chat", sink="sqlite", stream="out")
        == 10
    )
    assert value("syncworker_records_failed_total", pipeline="chat", sink="sqlite") == 1
    assert value("syncworker_records_dead_lettered_total", pipeline="chat", stream="out") == 1
    assert value("syncworker_queue_depth", pipeline="chat", queue="dead_letters", state="dead") == 1
    assert value("syncworker_source_backlog", pipeline="chat") == 0
    assert value("syncworker_pipeline_running", pipeline="chat") == 1
    assert value("syncworker_batch_duration_seconds_count", pipeline="chat") >= 1
    assert value("syncworker_last_success_timestamp_seconds", pipeline="chat") > 0
    assert api.sink_rows() == 50


async def test_system_metrics(api: RunningApi) -> None:
    body = (await api.client.get("/metrics/system")).json()
    assert body["process_rss_bytes"] > 0 and body["memory_total_bytes"] > 0
    assert len(body["load_average"]) == 3 and body["pid"] > 0


async def test_seed_002_paths_work_unchanged(api: RunningApi) -> None:
    status = (await api.client.get("/api/sync-worker/status")).json()
    assert status["is_running"] is True and set(status["pipelines"]) == {"chat", "idle"}
    assert "total_syncs" in status["stats"]
    incremental = await api.client.post("/api/sync-worker/incremental-sync")
    assert incremental.status_code == 200 and set(incremental.json()["results"]) == {"chat", "idle"}
    assert (await api.client.post("/api/sync-worker/full-sync")).status_code == 501
    assert (await api.client.post("/api/sync-worker/force-sync/4433")).status_code == 501
    assert (await api.client.get("/api/sync-worker/discrepancy-check")).status_code == 501
    stopped = (await api.client.post("/api/sync-worker/stop")).json()
    assert stopped == {"success": True, "pipelines": {"chat": "stopped", "idle": "stopped"}}
    started = (await api.client.post("/api/sync-worker/start")).json()
    assert started["success"] is True
    await eventually(lambda: _running(api))


async def _running(api: RunningApi) -> bool:
    status = (await api.client.get("/status")).json()
    return all(p["state"] == "running" for p in status["pipelines"].values())


async def test_openapi_document(api: RunningApi) -> None:
    doc = (await api.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/health",
        "/ready",
        "/status",
        "/pipelines/{name}/sync",
        "/dead-letters",
        "/metrics",
        "/api/sync-worker/status",
    ):
        assert path in doc["paths"], path
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


async def test_shutdown_stops_the_engine(api: RunningApi) -> None:
    answer = await api.client.post("/shutdown")
    assert answer.status_code == 202 and answer.json() == {"shutting_down": True}
    assert api.engine.stopping


async def test_without_a_token_the_api_binds_to_loopback_only(tmp_path: Path) -> None:
    engine, server = await start_api(tmp_path, token=None, host="0.0.0.0")
    try:
        assert server.host == "127.0.0.1"
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/status")).status_code == 200
    finally:
        await engine.stop()


async def test_errors_endpoint_lists_recent_errors(api: RunningApi) -> None:
    api.enqueue(msg(7, "x" * 40))
    await eventually(lambda: _dead_letters(api, 1))
    errors = (await api.client.get("/errors", params={"limit": 5})).json()["items"]
    assert errors[0]["type"] == "dead_letter" and errors[0]["record_key"] == "m7"


async def test_a_closed_state_store_is_503_with_the_reason(api: RunningApi) -> None:
    # as while the engine stops: the client may try again, so no 500 and no traceback
    await api.engine.state.close()
    try:
        answer = await api.client.get("/errors")
    finally:
        await api.engine.state.open()
    assert answer.status_code == 503
    body = answer.json()
    assert body["error"] == "a dependency is unavailable"
    assert "ConnectionClosed" in body["detail"]["reason"] and "not open" in body["detail"]["reason"]


async def test_answers_are_sent_without_waiting_for_the_client_s_ack(api: RunningApi) -> None:
    # TCP_NODELAY on every accepted connection: without it a response written in two parts
    # (headers, body) waited for the client's delayed ACK, 40 ms on each kept-alive request.
    assert (await api.client.get("/health")).status_code == 200
    server = api.server._server
    assert server is not None
    connections = list(server.server_state.connections)
    assert connections, "the client's connection is kept alive"
    for connection in connections:
        sock = connection.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx honours proxy variables; the engine is on loopback.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
