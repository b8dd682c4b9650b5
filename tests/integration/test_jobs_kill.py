"""Issue 12's SIGKILL acceptance on PostgreSQL, Redis and SQLite: two worker processes, N jobs,
a worker SIGKILLed K times at random moments (restarted each time), a 2 s lease so the killed
worker's jobs come back.

Every job completes; none completes twice while its worker lived; the extra runs (runs of the
killed workers' jobs that had to start again) are counted and printed. Each run is recorded by
the child (``jobs_kill_child.py``) as a start and a done line keyed by job id, attempt and pid;
the job rows say which run's completion was applied.

The suite runs a bounded smoke (1,000 jobs, 3 kills). ``make chaos`` runs the acceptance size:
``SYNCWORKER_CHAOS_ROUNDS=20 SYNCWORKER_JOBS_KILL_JOBS=10000 pytest -q -s
tests/integration/test_jobs_kill.py``. ``SYNCWORKER_JOBS_KILL_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from syncworker.queue.base import JobState, NewJob, QueueBackend
from syncworker.queue.config import build_backend
from tests.integration.conftest import REDIS_URL
from tests.waiting import eventually

pytestmark = pytest.mark.integration

JOBS = int(os.environ.get("SYNCWORKER_JOBS_KILL_JOBS", "1000"))
KILLS = int(os.environ.get("SYNCWORKER_CHAOS_ROUNDS", "3"))
SEED = int(os.environ.get("SYNCWORKER_JOBS_KILL_SEED", str(random.randrange(2**32))))
LEASE_S = 2.0
CONCURRENCY = 4  # per worker: jobs last 5-40 ms, so a kill always finds some in flight
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120 + KILLS * 10 + JOBS // 100


@dataclass(frozen=True, slots=True)
class Run:
    kind: str  # "S" started, "D" done (about to return)
    job_id: str
    attempt: int
    pid: int
    at: float


class Workers:
    """The two child worker processes, restarted after each kill."""

    def __init__(self, backend_json: str, records: Path, logs: Path) -> None:
        self.backend_json = backend_json
        self.records = records
        self.logs = logs
        self.procs: list[subprocess.Popen[bytes]] = []
        self.killed_at: dict[int, float] = {}

    def spawn(self) -> subprocess.Popen[bytes]:
        out = (self.logs / f"child-{len(self.procs) + len(self.killed_at)}.log").open("wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.jobs_kill_child",
                self.backend_json,
                str(self.records),
                str(LEASE_S),
                str(CONCURRENCY),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs.append(proc)
        return proc

    def busy(self) -> list[subprocess.Popen[bytes]]:
        """Live children that have started jobs (their record file has lines)."""
        found = []
        for proc in self.procs:
            path = self.records / f"{proc.pid}.log"
            if proc.poll() is None and path.exists() and path.stat().st_size > 0:
                found.append(proc)
        return found

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        self.killed_at[proc.pid] = time.time()  # before the signal: every later start is after
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.procs.remove(proc)

    def stop(self) -> None:
        """Graceful stop (SIGTERM) of the children still running; SIGKILL if one hangs."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def read_runs(records: Path) -> list[Run]:
    runs = []
    for path in records.glob("*.log"):
        for line in path.read_text().splitlines():
            kind, job_id, attempt, pid, at = line.split()
            runs.append(Run(kind, job_id, int(attempt), int(pid), float(at)))
    return runs


def _backend_settings(kind: str, request: pytest.FixtureRequest, tmp: Path) -> dict[str, Any]:
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp / "jobs.db")}
    if kind == "postgres":
        return {"type": "postgres", "url": request.getfixturevalue("pg_url"), "schema": "swh1"}
    prefix = request.getfixturevalue("redis_prefix") + "swh1kill"
    return {"type": "redis", "url": REDIS_URL, "prefix": prefix}


async def _completed(backend: QueueBackend) -> int:
    return (await backend.counts()).get("kill", {}).get(JobState.COMPLETED, 0)


@pytest.mark.timeout(TIMEOUT_S)
@pytest.mark.parametrize("kind", ["postgres", "redis", "sqlite"])
async def test_sigkilled_workers_lose_no_job_and_never_run_one_twice_while_alive(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    settings = _backend_settings(kind, request, tmp_path)
    backend = build_backend(settings)
    await backend.open()
    records, logs = tmp_path / "runs", tmp_path / "logs"
    records.mkdir()
    logs.mkdir()
    workers = Workers(orjson.dumps(settings).decode(), records, logs)
    started = time.monotonic()
    try:
        # A job can be in flight at several kills: enough attempts that none goes dead.
        await backend.enqueue_many(
            [NewJob("work", {"n": i}, queue="kill", max_attempts=KILLS + 3) for i in range(JOBS)]
        )
        workers.spawn()
        workers.spawn()
        # Kill at random points of the run (by jobs completed), each time a busy worker.
        thresholds = sorted(rng.sample(range(JOBS // 20, JOBS * 8 // 10), KILLS))
        for threshold in thresholds:

            async def due(at: int = threshold) -> list[subprocess.Popen[bytes]]:
                return workers.busy() if await _completed(backend) >= at else []

            busy = await eventually(due, f"{threshold} jobs done and a busy worker", timeout_s=60)
            workers.kill(rng.choice(busy))
            assert await _completed(backend) < JOBS, "the jobs ran out before every kill landed"
            workers.spawn()

        async def all_done() -> bool:
            return await _completed(backend) == JOBS

        await eventually(all_done, f"{JOBS} jobs completed", timeout_s=60 + JOBS / 50)
        counts = (await backend.counts())["kill"]
        assert counts[JobState.COMPLETED] == JOBS and sum(counts.values()) == JOBS, counts
        rows = await backend.list_jobs(queue="kill", state=JobState.COMPLETED, limit=JOBS + 1)
    finally:
        workers.stop()
        await backend.close()
    elapsed_s = time.monotonic() - started

    runs = read_runs(records)
    assert len(rows) == JOBS
    applied = {row.id: (row.result["pid"], row.result["attempt"]) for row in rows}
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_job[run.job_id].append(run)
    killed = workers.killed_at
    problems = []
    for job_id, (pid, attempt) in applied.items():
        job_runs = by_job[job_id]
        starts = [r for r in job_runs if r.kind == "S"]
        dones = [r for r in job_runs if r.kind == "D"]
        winner = [r for r in dones if (r.pid, r.attempt) == (pid, attempt)]
        if len(winner) != 1:
            problems.append(f"job {job_id}: applied run pid {pid} attempt {attempt} not recorded")
            continue
        for run in dones:
            if run is not winner[0] and run.pid not in killed:
                problems.append(f"job {job_id}: completed twice, pid {run.pid} was never killed")
        for run in starts:
            finished = any((d.pid, d.attempt) == (run.pid, run.attempt) for d in dones)
            if not finished and run.pid not in killed:
                problems.append(f"job {job_id}: run of live pid {run.pid} cut short")
        # A rerun starts only after the earlier runner died (its lease ran out), never while
        # it lived: the next start of a killed pid's run is after the kill.
        for earlier in starts:
            if earlier.pid in killed:
                later = [s for s in starts if s.attempt > earlier.attempt]
                if any(s.at < killed[earlier.pid] for s in later):
                    problems.append(f"job {job_id}: taken from pid {earlier.pid} while it lived")
            elif any(s.attempt > earlier.attempt for s in starts):
                problems.append(f"job {job_id}: taken from live pid {earlier.pid}")
    extra_runs = sum(1 for r in runs if r.kind == "S") - JOBS
    extra_completions = sum(1 for r in runs if r.kind == "D") - JOBS
    print(
        f"\njobs_kill[{kind}]: jobs={JOBS} kills={len(killed)} extra_runs={extra_runs} "
        f"extra_completions={extra_completions} time_s={elapsed_s:.1f} seed={SEED}"
    )
    assert not problems, problems[:20]
    assert len(killed) == KILLS
    assert set(applied) == set(by_job)
