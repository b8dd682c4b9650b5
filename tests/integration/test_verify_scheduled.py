"""The scheduled verify inside an engine: it runs on its schedule, and its last result is in
/status (schema-checked by the response model), /metrics and the dashboard's data."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from syncworker.api.app import create_app
from syncworker.config import load_config
from syncworker.core.engine import Engine
from syncworker.observe.metrics import EngineMetrics
from syncworker.reconcile.scheduled import VerifyService, verify_services
from syncworker.state import state_store_from_url
from tests.integration.pg_table_support import sql, target_url
from tests.integration.test_verify import CHAT_USERS, USER_ROWS, USERS, sync_users, users_config
from tests.waiting import eventually

__all__ = ["target_url"]

pytestmark = pytest.mark.integration


async def test_last_result_in_status_and_metrics(
    pg_url: str, target_url: str, tmp_path: Path
) -> None:
    await sql(pg_url, USERS)
    await sql(pg_url, USER_ROWS, {"rows": 300})
    from syncworker.connectors.postgres import table_capture

    await table_capture.install(pg_url, "users")
    await sql(target_url, CHAT_USERS)
    path = users_config(tmp_path, pg_url, target_url)
    await sync_users(path)
    path.write_text(path.read_text() + "    verify: {every: 1h, ignore_recent: 0s}\n")
    await sql(target_url, "DELETE FROM chat_users WHERE id IN (7, 8)")
    config = load_config(path)
    state = state_store_from_url(config.app.state)
    await state.open()
    engine = Engine(config.build(state), state)
    [service] = verify_services(config)
    engine.services.append(service)
    metrics = EngineMetrics(engine)
    app = create_app(engine, token=None, metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            before = (await client.get("/status")).json()["pipelines"]["users"]["verify"]
            assert before["runs"] == 0 and before["last"] is None
            assert before["every_s"] == 3600
            report = await service.run_now("users")
            assert report is not None and report.missing.keys == [7, 8]
            status = await client.get("/status")
            assert status.status_code == 200, status.text
            verify = status.json()["pipelines"]["users"]["verify"]
            assert verify["runs"] == 1 and verify["last_error"] is None
            assert verify["last"]["status"] == "inconsistent"
            assert verify["last"]["missing"] == {"count": 2, "keys": [7, 8]}
            assert verify["last"]["difference"] == 2
            text = (await client.get("/metrics")).text
            assert 'syncworker_verify_differences{kind="missing",pipeline="users"} 2.0' in text
            assert 'syncworker_verify_consistent{pipeline="users"} 0.0' in text
            assert 'syncworker_verify_failed{pipeline="users"} 0.0' in text
            assert "syncworker_verify_last_run_timestamp_seconds" in text
    finally:
        for pipeline in engine.pipelines.values():
            await pipeline.close()
        await state.close()


async def test_runs_on_its_schedule_and_keeps_a_failure(tmp_path: Path, pg_url: str) -> None:
    # A target database that does not exist: every run fails, is logged and kept, and the
    # next run is still scheduled.
    missing = pg_url.rsplit("/", 1)[0] + "/sw_test_no_such_database"
    path = users_config(tmp_path, pg_url, missing)
    path.write_text(path.read_text() + "    verify: {every: 50ms}\n")
    [service] = verify_services(load_config(path))
    assert isinstance(service, VerifyService)
    await service.start()
    try:
        job = service.jobs["users"]
        await eventually(lambda: job.runs >= 2, "two scheduled runs")
        status = service.verify_status("users")
        assert status is not None and status["last"] is None
        assert "sw_test_no_such_database" in (status["last_error"] or "")
        assert status["next_run_at"] is not None
    finally:
        await service.stop()
    assert service.verify_status("other") is None


def test_no_service_without_a_verify_section(tmp_path: Path) -> None:
    path = users_config(tmp_path, "postgresql://u@h/a", "postgresql://u@h/b")
    assert verify_services(load_config(path)) == []
