"""The dashboard in a real headless Chromium against a real engine and its control API.

The browser is Debian's ``chromium`` (``SYNCWORKER_CHROMIUM`` overrides the path), driven by
Playwright; nothing is downloaded. The test asks for the token like a user would, watches the
``processed`` counter follow messages enqueued while the page is open, requeues one dead
letter (which the pipeline then writes) and deletes another, and leaves a screenshot.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from syncworker.api.server import ApiServer
from syncworker.config import parse_config
from syncworker.connectors.postgres import outbox
from syncworker.connectors.sqlite.queue import SqliteQueue
from syncworker.core.engine import Engine
from syncworker.state import state_store_from_url
from tests.e2e.conftest import TOKEN, RunningApi
from tests.integration.conftest import REDIS_URL, pg_url, redis_prefix  # noqa: F401 - fixtures
from tests.waiting import eventually

CHROMIUM = os.environ.get("SYNCWORKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOO_LONG = "far too long for the messages table"  # the sink's CHECK allows 20 characters
HOSTILE_KEY = "bad-2<img src=x onerror=window.pwned=1>"  # must show as text, never run


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's chromium or set SYNCWORKER_CHROMIUM"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    playwright = await async_playwright().start()
    try:
        # launch() gives every run a fresh temporary profile (user-data-dir), removed on close.
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()
    finally:
        await playwright.stop()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    expect.set_options(timeout=15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert errors == [], f"the page raised: {errors}"


async def produce(api: RunningApi, stop: asyncio.Event) -> int:
    """Enqueue small batches until ``stop``; returns how many messages went in."""
    sent = 0
    while not stop.is_set():
        batch = [{"id": f"live{sent + i}", "text": f"hello {i}"} for i in range(10)]
        await asyncio.to_thread(api.enqueue, *batch)
        sent += len(batch)
        await asyncio.sleep(0.1)
    return sent


def relax_check_constraint(root: Path) -> None:
    """Rebuild the sink table without its CHECK, so a requeued letter can be written."""
    with sqlite3.connect(root / "sink.db", timeout=10) as conn:
        conn.executescript(
            """
            BEGIN IMMEDIATE;
            ALTER TABLE messages RENAME TO messages_old;
            CREATE TABLE messages (key TEXT PRIMARY KEY, text TEXT);
            INSERT INTO messages SELECT key, text FROM messages_old;
            DROP TABLE messages_old;
            COMMIT;
            """
        )


def sink_text(root: Path, key: str) -> str | None:
    with sqlite3.connect(root / "sink.db", timeout=10) as conn:
        row = conn.execute("SELECT text FROM messages WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


async def dead_letter_ids(api: RunningApi) -> dict[str, int]:
    body = (await api.client.get("/dead-letters", params={"status": "dead"})).json()
    return {item["record_key"]: item["id"] for item in body["items"]}


async def processed_shown(page: Page) -> int:
    counter = page.locator('[data-pipeline="chat"] [data-counter="processed"]')
    return int(await counter.get_attribute("data-value") or 0)


async def test_dashboard_live_counters_and_dead_letters(
    api: RunningApi, page: Page, tmp_path: Path
) -> None:
    api.enqueue(
        *({"id": f"m{n}", "text": "hi"} for n in range(5)),
        {"id": "bad-1", "text": TOO_LONG},
        {"id": HOSTILE_KEY, "text": TOO_LONG},
    )

    async def both_dead() -> dict[str, int] | None:
        letters = await dead_letter_ids(api)
        return letters if len(letters) == 2 else None

    letters = await eventually(both_dead, "two dead letters")
    assert set(letters) == {"bad-1", HOSTILE_KEY}

    # The page shell needs no token; the data does, so the page asks for it.
    await page.goto(api.server.url + "/")
    await expect(page.locator("#token-panel")).to_be_visible()
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "auth")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "ok")
    assert await page.evaluate("sessionStorage.getItem('syncworker.apiToken')") == TOKEN

    chat = page.locator('[data-pipeline="chat"]')
    await expect(chat.locator('[data-field="state"]')).to_have_text("running")
    await expect(page.locator('[data-pipeline="idle"] [data-field="state"]')).to_have_text(
        "running"
    )
    await expect(chat.locator('[data-counter="dead_lettered"]')).to_have_attribute(
        "data-value", "2"
    )
    await expect(chat.locator('[data-field="health"]')).to_have_attribute(
        "data-health", re.compile("HEALTHY|DEGRADED|UNHEALTHY")
    )
    before = await processed_shown(page)

    # Messages arrive while the page is open: the counter follows them, poll after poll.
    stop = asyncio.Event()
    producer = asyncio.create_task(produce(api, stop), name="test-producer")
    try:
        await page.wait_for_function(
            """(n) => Number(document.querySelector(
                   '[data-pipeline="chat"] [data-counter="processed"]').dataset.value) >= n""",
            arg=before + 50,
        )
        middle = await processed_shown(page)
        await page.wait_for_function(
            """(n) => Number(document.querySelector(
                   '[data-pipeline="chat"] [data-counter="processed"]').dataset.value) > n""",
            arg=middle,
        )
    finally:
        stop.set()
        sent = await producer
    total = 7 + sent
    await expect(chat.locator('[data-counter="processed"]')).to_have_attribute(
        "data-value", str(total)
    )
    await expect(chat.locator('[data-counter="written"]')).to_have_attribute(
        "data-value", str(total - 2)
    )
    points = await chat.locator('[data-field="sparkline"] polyline').get_attribute("points")
    assert points and len(points.split()) >= 2
    await expect(chat.locator('[data-field="rate"]')).to_have_text(re.compile(r"rec/s$"))
    await expect(chat.locator('[data-field="last-sync"]')).to_have_text(re.compile(r"ago"))

    rows = page.locator("#dead-letters tbody tr[data-dead-letter-id]")
    await expect(rows).to_have_count(2)
    await expect(page.locator("#errors li[data-error-id]").first).to_be_visible()
    hostile = page.locator(f'[data-dead-letter-id="{letters[HOSTILE_KEY]}"] td.key')
    await expect(hostile).to_have_text(HOSTILE_KEY)
    assert await page.evaluate("window.pwned") is None

    screenshot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 10_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Requeue: the letter leaves the list at once, and the pipeline writes it.
    relax_check_constraint(api.root)
    requeued = page.locator(f'[data-dead-letter-id="{letters["bad-1"]}"]')
    await requeued.locator('[data-action="requeue"]').click()
    await expect(requeued).to_have_count(0)
    await expect(page.locator("#message")).to_contain_text(
        f"Requeued dead letter {letters['bad-1']}"
    )
    await eventually(lambda: sink_text(api.root, "bad-1") == TOO_LONG, "the requeued write")
    await expect(requeued).to_have_count(0)  # written, so not back as a new "dead" row either

    # Delete takes a second click to confirm.
    deleted = page.locator(f'[data-dead-letter-id="{letters[HOSTILE_KEY]}"]')
    delete = deleted.locator('[data-action="delete"]')
    await delete.click()
    await expect(delete).to_have_attribute("data-armed", "1")
    await expect(deleted).to_have_count(1)
    await delete.click()
    await expect(deleted).to_have_count(0)
    await expect(page.locator("#dead-letters-empty")).to_be_visible()
    gone = await api.client.get(f"/dead-letters/{letters[HOSTILE_KEY]}")
    assert gone.status_code == 404


async def test_dashboard_stop_start_and_sync(api: RunningApi, page: Page) -> None:
    await page.goto(api.server.url + "/")
    await page.fill("#token-input", TOKEN)
    await page.click("#token-save")
    idle = page.locator('[data-pipeline="idle"]')
    state = idle.locator('[data-field="state"]')
    await expect(state).to_have_text("running")
    await expect(idle.locator('[data-action="start"]')).to_be_disabled()

    await idle.locator('[data-action="stop"]').click()
    await expect(state).to_have_text("stopped")
    await expect(idle.locator('[data-action="sync"]')).to_be_disabled()
    assert api.engine.pipeline("idle").status()["state"] == "stopped"

    await idle.locator('[data-action="start"]').click()
    await expect(state).to_have_text("running")
    with SqliteQueue(api.root / "idle.db") as queue:
        queue.enqueue({"id": "manual-1", "text": "hi"})
    await idle.locator('[data-action="sync"]').click()
    await expect(page.locator("#message")).to_contain_text("idle: sync success")
    await expect(idle.locator('[data-counter="processed"]')).to_have_attribute("data-value", "1")


async def test_dashboard_rejects_a_wrong_token(api: RunningApi, page: Page) -> None:
    await page.goto(api.server.url + "/")
    await page.fill("#token-input", "not-the-token")
    await page.click("#token-save")
    await expect(page.locator("#token-error")).to_have_text("The API refused this token.")
    await expect(page.locator("#token-panel")).to_be_visible()
    await expect(page.locator("[data-pipeline]")).to_have_count(0)


async def login(page: Page, url: str, token: str | None = TOKEN) -> None:
    await page.goto(url + "/")
    if token is not None:
        await page.fill("#token-input", token)
        await page.click("#token-save")
    await expect(page.locator("#conn-status")).to_have_attribute("data-state", "ok")


async def test_dashboard_shows_the_engines_history_on_load(api: RunningApi, page: Page) -> None:
    # Everything moved before the page opens: the engine's history still draws it at once.
    api.enqueue(
        *({"id": f"m{n}", "text": "hi"} for n in range(5)),
        {"id": "bad-1", "text": TOO_LONG},
        {"id": "bad-2", "text": TOO_LONG},
    )

    async def settled() -> bool:
        return len(await dead_letter_ids(api)) == 2

    await eventually(settled, "two dead letters")
    await login(page, api.server.url)
    await expect(page.locator("body")).to_have_attribute("data-polls", "1")
    chat = page.locator('[data-pipeline="chat"]')
    # drawn from the first answer, not built up by this tab
    assert (
        int(await chat.locator('[data-field="sparkline"]').get_attribute("data-points") or 0) >= 1
    )
    assert float(await chat.locator('[data-field="rate"]').get_attribute("data-value") or 0) > 0
    await expect(chat.locator('[data-field="sinks"]')).to_have_text(
        "jsonl 7 · sqlite 5 (2 refused)"
    )
    await expect(chat.locator('[data-field="latency"]')).to_have_text(
        re.compile(r"^p50 \d.* · p95 \d.* · last \d.* \(\d+ batches\)$")
    )
    await expect(chat.locator('[data-field="lock"]')).to_have_text("none configured")
    await expect(chat.locator('[data-field="oldest-waiting"]')).to_have_text(
        re.compile("none waiting|unknown")
    )
    # The two refusals say the same: one line, counted; and the card names the error too.
    group = page.locator('#errors li[data-error-id][data-count="2"]')
    await expect(group).to_have_count(1)
    await expect(group.locator(".times")).to_have_text("×2")  # noqa: RUF001
    await expect(page.locator("#error-count")).to_have_text("1 kind, 2 in all")
    last_error = chat.locator('[data-field="last-error"]')
    await expect(last_error).not_to_have_text("none")
    await expect(last_error).to_contain_text("dead_letter")
    await expect(last_error).to_have_attribute("title", re.compile("CHECK constraint failed"))


OUTBOX_CONFIG = """\
state: "sqlite:///{root}/state.db"
pipelines:
  outbox:
    source:
      type: pg_outbox
      url: "{pg_url}"
      queue_table: dash_sync_queue
      tables: [products]
      max_retries: 1
      poll_interval: 50ms
    sinks:
      - {{type: sqlite, path: "{root}/sink.db", table: products, columns: {{name: name}}}}
    batch: {{size: 50, max_wait: 20ms}}
    retry: {{attempts: 1, delay: 10ms}}
    dead_letter: {{store: source}}
    lock: {{url: "{redis_url}", key: "{lock_key}", ttl: 30s}}
"""


async def pg(url: str, statement: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement)
        return await cursor.fetchall() if cursor.description else []


@pytest.fixture
async def outbox_api(
    pg_url: str,  # noqa: F811 - the fixture imported above
    redis_prefix: str,  # noqa: F811
    tmp_path: Path,
) -> AsyncIterator[str]:
    await pg(pg_url, "CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL)")
    await outbox.install(pg_url, "dash_sync_queue", ["products"])
    with sqlite3.connect(tmp_path / "sink.db") as conn:
        conn.execute(
            "CREATE TABLE products (key TEXT PRIMARY KEY, name TEXT CHECK (length(name) <= 10))"
        )
    config = parse_config(
        OUTBOX_CONFIG.format(
            root=tmp_path, pg_url=pg_url, redis_url=REDIS_URL, lock_key=f"{redis_prefix}dashLock"
        )
    )
    state = state_store_from_url(config.app.state)
    engine = Engine(config.build(state), state, shutdown_timeout_s=5)
    server = ApiServer(engine, port=0)
    engine.services.append(server)
    await engine.start()
    try:
        yield server.url
    finally:
        await engine.stop()


async def test_dashboard_shows_source_failures_oldest_waiting_and_the_lock_holder(
    outbox_api: str,
    pg_url: str,  # noqa: F811 - the fixture imported above
    redis_prefix: str,  # noqa: F811
    page: Page,
) -> None:
    await pg(
        pg_url,
        "INSERT INTO products VALUES (1, 'ok'), (2, 'much too long a name'), (3, 'fine'),"
        " (4, 'also far too long')",
    )
    await login(page, outbox_api, token=None)  # no token: loopback, no token asked
    card = page.locator('[data-pipeline="outbox"]')
    # failed and kept by the outbox, not dead letters: counted as what they are
    await expect(card.locator('[data-counter="source_failed"]')).to_have_attribute(
        "data-value", "2", timeout=30_000
    )
    await expect(card.locator('[data-counter="dead_lettered"]')).to_have_attribute(
        "data-value", "0"
    )
    await expect(card.locator('[data-field="health"]')).to_have_attribute("data-health", "DEGRADED")
    await expect(card.locator('[data-field="recommendations"]')).to_contain_text(
        "syncworker outbox retry-failed"
    )
    await expect(card.locator('[data-field="sinks"]')).to_have_text("sqlite 2 (2 refused)")
    await expect(card.locator('[data-field="lock"]')).to_have_text(
        re.compile(
            rf"^held by this worker \(.+\), fencing token \d+ · redis key {redis_prefix}dashLock$"
        )
    )
    # a change held back by its retry backoff waits: its age shows
    await pg(
        pg_url,
        "INSERT INTO dash_sync_queue (table_name, record_id, operation, next_attempt_at,"
        " created_at) VALUES ('products', '9', 'INSERT', now() + interval '1 hour',"
        " now() - interval '90 seconds')",
    )
    await expect(card.locator('[data-field="oldest-waiting"]')).to_have_text(
        re.compile(r"^1 min 3\d s$"), timeout=30_000
    )
