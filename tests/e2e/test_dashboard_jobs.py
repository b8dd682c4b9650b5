"""The dashboard's Queues view in a real headless Chromium, against an engine running a
jobs: section (SQLite backend) and its API: per-queue figures and charts sampled from
/metrics/queues, the running jobs, failed and dead jobs with Retry (one job, a whole queue),
and no view at all without a jobs: section."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.e2e import test_dashboard as dashboard
from tests.e2e.conftest import TOKEN, RunningApi
from tests.e2e.test_api_jobs import HOSTILE, Gate, JobsApi, running_jobs_api
from tests.waiting import eventually

# The browser fixtures of the dashboard's own tests (Debian's chromium, a fresh context).
chromium = dashboard.chromium
browser = dashboard.browser
page = dashboard.page


@pytest.fixture
async def jobs_api(tmp_path: Path) -> AsyncIterator[JobsApi]:
    async with running_jobs_api(tmp_path, f'{{type: sqlite, path: "{tmp_path}/jobs.db"}}') as api:
        yield api


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url + "/")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "ok")


async def job_state(api: JobsApi, job_id: str) -> str:
    return str((await api.job(job_id))["state"])


async def test_queues_view_follows_the_jobs_and_retries_dead_ones(
    jobs_api: JobsApi, page: Page, tmp_path: Path
) -> None:
    api = jobs_api
    for n in range(2):
        await api.enqueue("hello", {"n": n})
    boom = await api.enqueue("boom", {})
    flaky = await api.enqueue("flaky", {})
    held = await api.enqueue("hold")
    for job_id in (boom, flaky):
        await eventually(lambda job_id=job_id: _is(api, job_id, "dead"), "the job to die")

    await sign_in(page, api.url)
    section = page.locator("#queues-section")
    await expect(section).to_be_visible()
    default = page.locator('[data-queue="default"]')
    slow = page.locator('[data-queue="slow"]')
    await expect(default.locator('[data-counter="completed"]')).to_have_attribute("data-value", "2")
    await expect(default.locator('[data-counter="dead"]')).to_have_attribute("data-value", "2")
    await expect(default.locator('[data-counter="failed"]')).to_have_attribute("data-value", "3")
    await expect(default.locator('[data-counter="concurrency"]')).to_have_attribute(
        "data-value", "3"
    )
    await expect(slow.locator('[data-counter="running"]')).to_have_attribute("data-value", "1")
    await expect(slow.locator('[data-counter="active"]')).to_have_attribute("data-value", "1")
    await expect(page.locator(f'#running-jobs tr[data-job-id="{held}"]')).to_contain_text("hold")

    failed = page.locator("#failed-jobs tbody tr")
    await expect(failed).to_have_count(2)
    boom_row = page.locator(f'#failed-jobs tr[data-job-id="{boom}"]')
    await expect(boom_row).to_contain_text("RuntimeError: refused by the handler")
    await expect(boom_row.locator('[data-field="state"]')).to_have_text("dead")

    flaky_row = page.locator(f'#failed-jobs tr[data-job-id="{flaky}"]')
    await expect(flaky_row.locator("td.err")).to_have_text(f"ValueError: {HOSTILE}")
    assert await page.evaluate("window.pwned") is None

    # The charts grow one point per sample of /metrics/queues.
    await page.wait_for_function(
        """() => Number(document.querySelector(
               '[data-queue="default"] [data-field="depth-chart"]').dataset.points) >= 3"""
    )
    screenshot = tmp_path / "queues.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Retry one dead job: it leaves the list, runs again and completes.
    Gate.flaky_fails = False
    await flaky_row.locator('[data-action="retry"]').click()
    await expect(page.locator("#message")).to_contain_text(f"Job {flaky} is back in its queue.")
    await expect(flaky_row).to_have_count(0)
    await eventually(lambda: _is(api, flaky, "completed"), "the retried job to complete")
    await expect(default.locator('[data-counter="completed"]')).to_have_attribute("data-value", "3")
    await expect(default.locator('[data-counter="dead"]')).to_have_attribute("data-value", "1")

    # Retry a whole queue's dead jobs: boom goes back, and dies again after its two tries.
    await default.locator('[data-action="retry-all"]').click()
    await expect(page.locator("#message")).to_contain_text(
        "default: 1 dead job(s) back in the queue."
    )

    async def died_again() -> bool:
        return bool((await api.queues())["default"]["dead_since_start"] == 2)

    await eventually(died_again, "boom to die a second time")
    await expect(default.locator('[data-counter="failed"]')).to_have_attribute("data-value", "5")
    await expect(boom_row).to_have_count(1)

    Gate.release.set()
    await expect(page.locator(f'#running-jobs tr[data-job-id="{held}"]')).to_have_count(0)
    await expect(page.locator("#running-jobs-empty")).to_be_visible()


async def _is(api: JobsApi, job_id: str, state: str) -> bool:
    return await job_state(api, job_id) == state


async def test_no_queues_view_without_a_jobs_section(api: RunningApi, page: Page) -> None:
    await sign_in(page, api.server.url)
    await page.wait_for_function("() => Number(document.body.dataset.polls) >= 3")
    await expect(page.locator("#queues-section")).to_be_hidden()
    await expect(page.locator("#api-error")).to_be_hidden()  # a 404 here is no API error
