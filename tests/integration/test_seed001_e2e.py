"""Seed 001's acceptance runs: `examples/postgres_to_algolia/` as shipped, real PostgreSQL,
workers as `syncworker run` processes, and the fake Algolia server with the official client.

Each test gets a fresh database (``pg_url``), applies the example's ``schema.sql``, installs
the outbox with ``syncworker pg install --config``, and compares the fake's indexes with the
tables at the end (products through the example's own transform).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conformance.services import PrivatePostgres
from tests.fakes.algolia import AlgoliaServer
from tests.waiting import eventually

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "postgres_to_algolia"
CONFIG = EXAMPLE / "syncworker.yaml"
QUEUE = "algolia_sync_queue"
sys.path.insert(0, str(EXAMPLE))
from transforms import product  # noqa: E402  (the example's module, as the worker loads it)


async def sql(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    await eventually(check, what, timeout_s=timeout_s)


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "syncworker.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


class Worker:
    """One `syncworker run` of the example config, its output in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> Worker:
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "syncworker.cli", "run", str(CONFIG),
                env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> int:
        """SIGTERM, then the exit code (the engine exits 0 after a clean stop)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), timeout=60)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Run:
    """The example's environment for one test, and its workers."""

    def __init__(self, pg_url: str, fake: AlgoliaServer, tmp_path: Path, **env: str) -> None:
        self.pg_url = pg_url
        self.fake = fake
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "DATABASE_URL": pg_url,
            "ALGOLIA_APP_ID": fake.app_id,
            "ALGOLIA_ADMIN_KEY": fake.api_key,
            "ALGOLIA_HOSTS": fake.url,
            "SYNC_API_LISTEN": "127.0.0.1:0",
            "LOG_LEVEL": "info",
            **env,
        }
        self.workers: list[Worker] = []

    async def install(self) -> None:
        await sql(self.pg_url, (EXAMPLE / "schema.sql").read_text())
        out = await asyncio.to_thread(cli, self.env, "pg", "install", "--config", str(CONFIG))
        assert "watching products, categories" in out

    async def worker(self) -> Worker:
        n = len(self.workers)
        env = {**self.env, "SYNC_STATE_PATH": str(self.tmp_path / f"state-{n}.db")}
        worker = await Worker(env, self.tmp_path / f"worker-{n}.log").start()
        self.workers.append(worker)
        return worker

    async def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                code = await worker.stop()
                assert code == 0, worker.output()[-3000:]

    async def unfinished(self) -> int:
        rows = await sql(
            self.pg_url,
            f"SELECT count(*) FROM {QUEUE} WHERE status IN ('pending', 'processing')",
        )
        return int(rows[0][0])

    async def drained(self, timeout_s: float) -> None:
        async def done() -> bool:
            return await self.unfinished() == 0

        await until(done, timeout_s, "the outbox to drain")

    async def assert_index_equals_tables(self) -> None:
        products = await sql(self.pg_url, "SELECT id::text, to_jsonb(p) FROM products p")
        expected = {key: {**product(row), "objectID": key} for key, row in products}
        assert _without_meta(self.fake.objects("products")) == expected
        categories = await sql(
            self.pg_url, "SELECT id::text, name, slug, to_jsonb(c)->>'updated_at' FROM categories c"
        )
        expected = {
            key: {"name": name, "slug": slug, "updated_at": updated_at, "objectID": key}
            for key, name, slug, updated_at in categories
        }
        assert _without_meta(self.fake.objects("categories")) == expected


def _without_meta(objects: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {key: dict(value) for key, value in objects.items()}


@contextlib.asynccontextmanager
async def example_run(pg_url: str, tmp_path: Path, **env: str) -> AsyncIterator[Run]:
    async with AlgoliaServer() as fake:
        run = Run(pg_url, fake, tmp_path, **env)
        await run.install()
        try:
            yield run
        finally:
            for worker in run.workers:
                if worker.process is not None and worker.process.returncode is None:
                    worker.kill()
                    await worker.process.wait()


def worker_pid(worker_id: str) -> int:
    """The pid in a default worker id (host:pid:random)."""
    return int(worker_id.split(":")[-2])


# 111,000 changes on two tables, made while three workers run: inserts, updates (one row
# changed several times), deletes, a category renamed.
CHANGES = [
    "INSERT INTO categories (id, name, slug) SELECT n, 'Category ' || n, 'c-' || n"
    " FROM generate_series(1, 200) AS n",
    *[
        "INSERT INTO products (id, name, description, price, category_id)"
        " SELECT n, 'Product ' || n, 'About product ' || n, (n % 997) + 0.99, n % 200 + 1"
        f" FROM generate_series({start}, {start + 4999}) AS n"
        for start in range(1, 40001, 5000)
    ],
    "UPDATE products SET price = price + 1, updated_at = now() WHERE id % 2 = 0",
    "UPDATE categories SET name = name || ' (renamed)', updated_at = now()",
    "DELETE FROM products WHERE id % 5 = 0",
    "UPDATE products SET name = name || ' v2' WHERE id % 3 = 0",
    *[
        "INSERT INTO products (id, name, price, category_id)"
        " SELECT n, 'Late ' || n, 5.00, 1"
        f" FROM generate_series({start}, {start + 4999}) AS n"
        for start in range(40001, 60001, 5000)
    ],
    "UPDATE products SET in_stock = false WHERE id % 4 = 1",
]


async def test_three_workers_sync_100k_changes_once_each_and_split_the_work(
    pg_url: str, tmp_path: Path
) -> None:
    async with example_run(pg_url, tmp_path, BATCH_SIZE="500") as run:
        for _ in range(3):
            await run.worker()
        # The shares are compared below: a worker still starting when the changes come would
        # find most of them taken (a busy machine starts a process in seconds, not ms).
        await until(lambda: _listeners(pg_url, 3), 60, "three workers listening")
        for statement in CHANGES:
            await sql(pg_url, statement)
            await asyncio.sleep(0.2)  # the workers are syncing while changes keep coming
        [(changes,)] = await sql(pg_url, f"SELECT count(*) FROM {QUEUE}")
        assert changes >= 100_000
        await run.drained(timeout_s=300)
        await run.stop_all()

        await run.assert_index_equals_tables()
        statuses = await sql(pg_url, f"SELECT status, count(*) FROM {QUEUE} GROUP BY status")
        # Rows a later change overtook in flight were queued once more (a few at most).
        [(_, queued)] = statuses
        assert statuses == [("completed", queued)] and changes <= queued < changes * 1.05
        changes = queued
        # Every queue row is in exactly one success row of the log, so no two workers (and
        # no worker twice) sent it.
        logged = await sql(
            pg_url,
            "SELECT q, count(*) FROM algolia_sync_log, unnest(queue_ids) AS q"
            " WHERE result = 'success' GROUP BY q HAVING count(*) <> 1",
        )
        assert logged == []
        [(distinct, total)] = await sql(
            pg_url,
            "SELECT count(DISTINCT q), count(*) FROM algolia_sync_log, unnest(queue_ids) AS q",
        )
        assert distinct == total == changes
        shares = Counter(
            {
                worker_pid(worker): n
                for worker, n in await sql(
                    pg_url,
                    "SELECT worker, sum(cardinality(queue_ids)) FROM algolia_sync_log"
                    " GROUP BY worker",
                )
            }
        )
        assert set(shares) == {w.pid for w in run.workers}
        for pid, n in shares.items():
            # roughly even: each of three workers took at least half of a fair third
            assert n >= changes / 6, f"worker {pid} synced {n} of {changes}: {dict(shares)}"


async def test_a_worker_killed_mid_batch_leaves_its_rows_to_another_after_the_lease(
    pg_url: str, tmp_path: Path
) -> None:
    async with example_run(pg_url, tmp_path, BATCH_SIZE="50", SYNC_LEASE_MS="3000") as run:
        run.fake.delay_s = 1.0  # every Algolia call is slow: batches stay in flight
        first = await run.worker()
        await sql(
            pg_url,
            "INSERT INTO products (id, name, price) SELECT n, 'p' || n, n FROM"
            " generate_series(1, 400) AS n",
        )

        async def first_mid_batch() -> bool:
            rows = await sql(
                pg_url,
                f"SELECT count(*) FROM {QUEUE} WHERE status = 'processing'"
                " AND split_part(locked_by, ':', 2) = %s",
                (str(first.pid),),
            )
            return int(rows[0][0]) > 0

        await until(first_mid_batch, 30, "the first worker to hold a batch")
        first.kill()
        await first.process.wait()  # type: ignore[union-attr]
        orphaned = {
            row[0]
            for row in await sql(
                pg_url,
                f"SELECT id FROM {QUEUE} WHERE status = 'processing'"
                " AND split_part(locked_by, ':', 2) = %s",
                (str(first.pid),),
            )
        }
        assert orphaned
        run.fake.delay_s = 0.0
        second = await run.worker()
        await run.drained(timeout_s=60)
        await run.stop_all()

        await run.assert_index_equals_tables()
        rows = await sql(
            pg_url,
            f"SELECT id, status, attempts FROM {QUEUE} WHERE id = ANY(%s)",
            (list(orphaned),),
        )
        assert {(status, attempts) for _, status, attempts in rows} == {("completed", 2)}
        takers = await sql(
            pg_url,
            "SELECT DISTINCT worker FROM algolia_sync_log, unnest(queue_ids) AS q"
            " WHERE q = ANY(%s) AND result = 'success'",
            (list(orphaned),),
        )
        assert [worker_pid(w) for (w,) in takers] == [second.pid]


async def _listeners(pg_url: str, count: int) -> bool:
    rows = await sql(
        pg_url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'syncworker:algolia_sync.source:listen'",
    )
    return int(rows[0][0]) >= count


async def listener_pid(pg_url: str) -> int | None:
    rows = await sql(
        pg_url,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'syncworker:algolia_sync.source:listen'",
    )
    return rows[0][0] if rows else None


async def prompt_syncs(run: Run, first_id: int, count: int = 5) -> list[float]:
    """Insert ``count`` products one at a time; seconds until each is in the index."""
    latencies = []
    for product_id in range(first_id, first_id + count):
        await sql(
            run.pg_url, "INSERT INTO products (id, name, price) VALUES (%s, 'x', 1)", (product_id,)
        )
        started = time.monotonic()

        async def arrived(key: str = str(product_id)) -> bool:
            return key in run.fake.objects("products")

        await until(arrived, 30, f"product {product_id} in the index")
        latencies.append(time.monotonic() - started)
    return latencies


@pytest.fixture
def private_cluster() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own: it restarts it, and the shared one is not ours
    to restart (other tests, other suites on this machine, use it meanwhile)."""
    cluster = PrivatePostgres()
    # Any free port, not the lowest free one of a shared range: two runs starting together
    # (the conformance suite, another clone) would both pick that one.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        cluster.port = int(sock.getsockname()[1])
    cluster.init()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def test_worker_reconnects_and_listens_again_after_restart_and_terminate(
    private_cluster: PrivatePostgres, tmp_path: Path
) -> None:
    pg_url = await asyncio.to_thread(private_cluster.create_database, "seed001")
    # Polling every 10 minutes: only NOTIFY can bring a change over within a second.
    async with example_run(
        pg_url, tmp_path, POLLING_INTERVAL="600000", SYNC_LEASE_MS="5000", BATCH_SIZE="50"
    ) as run:
        run.fake.delay_s = 0.05
        await run.worker()
        await until(lambda: _has_listener(pg_url), 30, "the worker to LISTEN")
        assert max(await prompt_syncs(run, 1_000_001)) < 1.0
        await sql(
            pg_url,
            "INSERT INTO products (id, name, price) SELECT n, 'p' || n, n FROM"
            " generate_series(1, 3000) AS n",
        )
        await until(lambda: _in_flight(pg_url), 30, "batches in flight")
        await asyncio.to_thread(private_cluster.stop)  # a fast shutdown, then start again
        await asyncio.to_thread(private_cluster.start)
        await sql(pg_url, "UPDATE products SET price = price + 1 WHERE id <= 100")
        await until(lambda: _has_listener(pg_url), 60, "LISTEN again after the restart")
        await run.drained(timeout_s=120)  # the queue is FIFO: the backlog goes first
        assert max(await prompt_syncs(run, 2_000_001)) < 1.0

        await sql(pg_url, "UPDATE products SET price = price + 1 WHERE id <= 3000")
        await until(lambda: _in_flight(pg_url), 30, "batches in flight again")
        old = await listener_pid(pg_url)
        await sql(
            pg_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'syncworker:%%'",
        )

        async def new_listener() -> bool:
            pid = await listener_pid(pg_url)
            return pid is not None and pid != old

        await until(new_listener, 60, "LISTEN again after pg_terminate_backend")
        await run.drained(timeout_s=120)
        assert max(await prompt_syncs(run, 3_000_001)) < 1.0
        await run.stop_all()
        await run.assert_index_equals_tables()
        output = run.workers[0].output()
        assert "pg_outbox_listen_lost" in output or "pg_outbox_listen_unavailable" in output


async def _has_listener(pg_url: str) -> bool:
    try:
        return await listener_pid(pg_url) is not None
    except psycopg.OperationalError:
        return False  # the server is still starting


async def _in_flight(pg_url: str) -> bool:
    rows = await sql(pg_url, f"SELECT count(*) FROM {QUEUE} WHERE status = 'processing'")
    return int(rows[0][0]) > 0


async def test_algolia_errors_retry_and_a_refused_record_ends_failed_until_retried(
    pg_url: str, tmp_path: Path
) -> None:
    async with example_run(pg_url, tmp_path, MAX_RETRIES="3", BATCH_SIZE="50") as run:
        fake = run.fake
        fake.retry_after = "1"
        # Algolia struggles for a while: rate limits and server errors, then answers again.
        fake.respond_next("429", 503, 500, "429", 502, 503, "429", 500)
        fake.reject_object_ids = {"13"}
        await run.worker()
        await sql(
            pg_url,
            "INSERT INTO products (id, name, price) SELECT n, 'p' || n, n FROM"
            " generate_series(1, 200) AS n",
        )

        async def settled() -> bool:
            rows = await sql(
                pg_url,
                f"SELECT count(*) FILTER (WHERE status = 'completed'),"
                f" count(*) FILTER (WHERE status = 'failed') FROM {QUEUE}",
            )
            return rows[0] == (199, 1)

        await until(settled, 90, "199 rows completed and one failed")
        [(queue_id, attempts, error)] = await sql(
            pg_url, f"SELECT id, attempts, last_error FROM {QUEUE} WHERE status = 'failed'"
        )
        assert attempts == 3
        assert "Record 13 is invalid" in error
        # The outage used none of the other rows' retries.
        [(most,)] = await sql(
            pg_url, f"SELECT max(attempts) FROM {QUEUE} WHERE id <> %s", (queue_id,)
        )
        assert most == 1
        results = await sql(
            pg_url,
            "SELECT result FROM algolia_sync_log WHERE record_id = '13' ORDER BY id",
        )
        # outage hand-backs (retry) may come first; then two refusals and the last one failed
        assert [r for (r,) in results if r != "retry"] == ["failed"]
        assert [r for (r,) in results].count("retry") >= 2
        assert "13" not in fake.objects("products")
        assert len(fake.objects("products")) == 199
        scripted = [r.status for r in fake.requests if r.status in (429, 500, 502, 503)]
        assert len(scripted) == 8

        fake.reject_object_ids = set()  # the cause is fixed
        out = await asyncio.to_thread(
            cli, run.env, "outbox", "retry-failed", "--config", str(CONFIG), "--id", str(queue_id)
        )
        assert "1 failed row(s) back to pending" in out
        await run.drained(timeout_s=30)
        await run.stop_all()
        await run.assert_index_equals_tables()
        rows = await sql(
            pg_url, f"SELECT status, last_error FROM {QUEUE} WHERE id = %s", (queue_id,)
        )
        assert rows == [("completed", None)]
