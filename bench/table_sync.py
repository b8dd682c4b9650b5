"""Seed 004's table sync: a 1,000,000-row ``users`` table copied from one PostgreSQL database
into another by syncworker (``pg_table`` source -> ``postgres`` sink), beside what a user
would pick instead, all in the same run.

The data set is the peers' (``../shared/bench-peers-sync``: ``schema.sql``, ``gen_fn.sql``,
``mutate_src.sql``, ``revert_src.sql``; copied verbatim below as ``GEN_USER`` etc.): bigint id,
eight columns with NULLs, timestamptz with microseconds, PK + ``updated_at`` index, in a source
database; targets in a second database on the same server. Two phases per case:

- **full**: an initial copy of every row into an empty, indexed target table;
- **incr**: after 10,000 source rows are updated (``mutate``), bring the target up to date.

Cases (``--peer``, default all):

- ``copy-floor``: the hand-written floor, psql ``COPY (SELECT ...) TO STDOUT (FORMAT binary)``
  piped into psql ``COPY ... FROM STDIN (FORMAT binary)``; incr = watermark ``updated_at >
  max(target)``, COPY into a temp table, ``INSERT ... ON CONFLICT DO UPDATE``
  (``baseline_copy.sh``).
- ``sling``: the sling CLI, ``--mode full-refresh`` / ``--mode incremental --primary-key id
  --update-key updated_at`` (``sync_rep.sh``), the binary from PyPI ``sling-linux-amd64``.
- ``dlt-connectorx-csv``, ``dlt-arrow-csv``, ``dlt-default``: dlt's ``sql_table`` with
  ``incremental("updated_at")``, merge on id (``dlt_sync.py``), its fastest configuration and
  its defaults.
- ``syncworker``: ``syncworker run --once FILE`` in a fresh process per phase, the ``pg_table``
  source with its change capture installed (trigger + change log); full = the snapshot,
  incr = the 10,000 changes from the change log.
  Batches of 20,000 rows, two in flight; with nothing between source and sink the snapshot
  takes the binary-COPY fast path (``connectors/postgres/bulk.py``) in pages of the default
  ``snapshot_page_rows`` (100,000).
- ``syncworker-warm`` (incr only, in the syncworker cycle): the same pipeline already open in a
  running engine (what a deployed worker is), timed from the go signal to the end of one run
  (its first since the engine opened): no interpreter start, connecting or closing.
- ``syncworker-records`` (full only): the same pipeline with a ``set`` processor writing a
  field no column maps: the target gets the same rows, but every row goes through Python as
  a record (the fast path's "before").

Every timed run is a fresh process tree measured from spawn to exit: wall seconds, peak of the
summed RSS of the whole tree (psutil, every 20 ms; PostgreSQL's backends excluded), user+sys
CPU of the tree, busy CPU seconds of the whole host (/proc/stat). A ``CHECKPOINT`` runs before
each. After every run the target is checked against the source: row count, distinct ids and an
order-independent checksum of all nine columns (``check_sync.py``'s, TimeZone UTC); a run that
does not match is reported as incorrect (and fails ``--check``).

Interleaved: repetition 1 of every case, then 2, ... with the case order rotated per
repetition; each timed cycle holds ``--lock`` (the machine's shared benchmark lock). Cells are
median (min-max) of ``--repeat`` runs. Peers whose binaries are not installed (``--peers-root``,
built by the peers' ``setup.sh``) are reported as not installed, never silently left out.

Targets (issue 10): syncworker full >= 0.7x the copy floor's rows/s and >= 2x sling's in the
same run, peak RSS <= 150 MB; incr of 10,000 changed rows <= 0.5 s. ``--check`` exits 1 when
one is missed or cannot be evaluated, or when any run's data is incorrect.

Services come from the options: ``--pg-dsn`` (an admin DSN of the server) and ``--db-prefix``;
the script creates its own two databases (``<prefix>_<tag>_src`` / ``_dst``) and drops only
those (``--keep`` leaves them).

    python bench/table_sync.py                                  # 1M rows, 3 repetitions
    python bench/table_sync.py --rows 2000 --changed 100 --repeat 1 --peer syncworker
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_PEERS_DIR = REPO.parent / "shared" / "bench-peers-sync"

TARGET_FLOOR_RATIO = 0.7
TARGET_SLING_RATIO = 2.0
TARGET_RSS_MB = 150.0
TARGET_INCR_S = 0.5
SYNCWORKER_BATCH = 20_000
SAMPLE_S = 0.02
COLUMNS = (
    "id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "status",
    "avatar_url",
    "created_at",
    "updated_at",
)
ALL_PEERS = (
    "copy-floor",
    "sling",
    "dlt-connectorx-csv",
    "dlt-arrow-csv",
    "dlt-default",
    "syncworker",
    "syncworker-records",
)
DLT = {
    "dlt-default": ("sqlalchemy", "insert_values", "dlt_default"),
    "dlt-arrow-csv": ("pyarrow", "csv", "dlt_arrow"),
    "dlt-connectorx-csv": ("connectorx", "csv", "dlt_cx"),
}

# -- the data set (verbatim from ../shared/bench-peers-sync) -----------------------------

USERS_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {schema}.users (
  id          bigint PRIMARY KEY,
  first_name  text NOT NULL,
  last_name   text NOT NULL,
  email       text NOT NULL,
  phone       text,
  status      text NOT NULL,
  avatar_url  text,
  created_at  timestamptz NOT NULL,
  updated_at  timestamptz NOT NULL{extra}
);
CREATE INDEX ON {schema}.users (updated_at);
"""
# gen_fn.sql (verbatim): gen_user(i), the deterministic generated row for id i.
GEN_USER = (HERE / "table_sync_gen_user.sql").read_text()
# gen_data.sql: ids 1.. skipping the multiples of 33334 (1,000,030 ids give 1,000,000 rows).
FILL = """
INSERT INTO public.users
SELECT g.* FROM (SELECT i FROM generate_series(1, %(rows)s::bigint * 2) i WHERE i %% 33334 <> 0
                 ORDER BY i LIMIT %(rows)s) ids, LATERAL gen_user(ids.i) g
"""
# mutate_src.sql with the step as a parameter (100 for 10,000 of 1,000,000 rows): ids = 7
# mod step are odd, so never a skipped multiple of 33334.
MUTATE = """
UPDATE public.users
   SET last_name  = last_name || '-upd',
       status     = CASE status WHEN 'active' THEN 'inactive' ELSE 'active' END,
       updated_at = timestamptz '2025-06-01 00:00:00+00' + id * interval '1 millisecond'
 WHERE id %% %(step)s = 7 AND id < %(step)s::bigint * %(changed)s::bigint
"""
# revert_src.sql: the mutated rows back to their generated values.
REVERT = """
UPDATE public.users u
   SET first_name = g.first_name, last_name = g.last_name, email = g.email, phone = g.phone,
       status = g.status, avatar_url = g.avatar_url, created_at = g.created_at,
       updated_at = g.updated_at
  FROM generate_series(7, %(step)s::bigint * %(changed)s::bigint - 1, %(step)s) i,
       LATERAL gen_user(i) g
 WHERE u.id = g.id AND u.updated_at >= timestamptz '2025-01-01'
"""
# check_sync.py's checksum.
CHECKSUM = (
    "SELECT count(*), count(DISTINCT id), "
    "coalesce(sum(('x' || left(md5(ROW({cols})::text), 16))::bit(64)::bigint), 0)::text, "
    "max(updated_at)::text FROM {table}"
)
# baseline_copy.sh
COPY_OUT = "COPY (SELECT * FROM public.users) TO STDOUT (FORMAT binary)"
FLOOR_WATERMARK = "SET TimeZone='UTC'; SELECT max(updated_at) FROM base.users"
FLOOR_COPY_NEWER = (
    "COPY (SELECT * FROM public.users WHERE updated_at > '$w') TO STDOUT (FORMAT binary)"
)
FLOOR_STAGE = "CREATE TEMP TABLE stage (LIKE base.users) ON COMMIT DROP"
FLOOR_UPSERT = (
    "INSERT INTO base.users SELECT * FROM stage ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
)


# -- the run's settings ------------------------------------------------------------------


@dataclass(slots=True)
class Settings:
    rows: int
    changed: int
    pg_dsn: str
    src_db: str
    dst_db: str
    root: Path
    peers_dir: Path
    peers_root: Path

    @property
    def step(self) -> int:
        step = max(8, self.rows // self.changed)
        return step - step % 2  # even, so every id = 7 (mod step) exists

    def url(self, database: str, **extra: str) -> str:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.pg_dsn)
        params.update(dbname=database, **extra)
        return make_conninfo(**params)

    def uri(self, database: str, *, scheme: str = "postgresql", password: str = "") -> str:
        """A URL form for tools that take no conninfo string (sling, dlt)."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(self.pg_dsn)
        user = params.get("user", "postgres")
        secret = (
            f":{password or params.get('password', '')}" if password or "password" in params else ""
        )
        host, port = params.get("host", "127.0.0.1"), params.get("port", "5432")
        return f"{scheme}://{user}{secret}@{host}:{port}/{database}"

    @property
    def sling_bin(self) -> Path:
        return (
            self.peers_root
            / "venv-sling/lib/python3.11/site-packages/sling_linux_amd64/bin/sling-linux-amd64"
        )

    @property
    def dlt_python(self) -> Path:
        return self.peers_root / "venv-dlt/bin/python"


def sql_run(url: str, *statements: str, params: dict[str, Any] | None = None) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement, params)  # type: ignore[arg-type]


def checksum(url: str, table: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        row = conn.execute(CHECKSUM.format(cols=", ".join(COLUMNS), table=table)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return {"rows": row[0], "distinct_ids": row[1], "sum": row[2], "max_updated_at": row[3]}


def create_databases(s: Settings) -> None:
    for name in (s.src_db, s.dst_db):
        sql_run(s.url("postgres"), f'CREATE DATABASE "{name}"')


def drop_databases(s: Settings) -> None:
    for name in (s.src_db, s.dst_db):
        sql_run(s.url("postgres"), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def load_source(s: Settings) -> float:
    """The users table in the source database; returns the seconds it took (untimed)."""
    started = time.perf_counter()
    src = s.url(s.src_db)
    sql_run(src, USERS_DDL.format(schema="public", extra=""), GEN_USER)
    sql_run(src, FILL, params={"rows": s.rows})
    sql_run(src, "VACUUM ANALYZE public.users")
    return time.perf_counter() - started


def mutate(s: Settings) -> None:
    sql_run(s.url(s.src_db), MUTATE, params={"step": s.step, "changed": s.changed})
    sql_run(s.url(s.src_db), "ANALYZE public.users")


def revert(s: Settings) -> None:
    sql_run(s.url(s.src_db), REVERT, params={"step": s.step, "changed": s.changed})
    sql_run(s.url(s.src_db), "VACUUM ANALYZE public.users")


def checkpoint(s: Settings) -> None:
    sql_run(s.url(s.dst_db), "CHECKPOINT")


def fresh_schema(s: Settings, schema: str, *, create_users: bool, extra: str = "") -> None:
    statements = [f"DROP SCHEMA IF EXISTS {schema} CASCADE"]
    if create_users:
        statements.append(USERS_DDL.format(schema=schema, extra=extra))
    sql_run(s.url(s.dst_db), *statements)


# -- measuring one command ---------------------------------------------------------------


def host_busy_s() -> float:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (sum(parts) - parts[3] - parts[4]) / os.sysconf("SC_CLK_TCK")


class TreeSampler:
    """Peak of the summed RSS of a process and its descendants, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._root = psutil.Process(pid)
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            try:
                for proc in [self._root, *self._root.children(recursive=True)]:
                    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                        total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            self.peak_bytes = max(self.peak_bytes, total)
            self._stop.wait(SAMPLE_S)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes / 2**20


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    command: list[str], log: Path, env: dict[str, str] | None = None, timeout_s: float = 1800
) -> dict[str, Any]:
    """Run ``command`` (output to ``log``); wall, peak tree RSS, tree CPU, host busy CPU."""
    cpu0, busy0 = children_cpu_s(), host_busy_s()
    started = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        sampler = TreeSampler(proc.pid)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            rc = proc.wait()
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "rss_mb": sampler.stop(),
        "cpu_s": children_cpu_s() - cpu0,
        "host_busy_s": host_busy_s() - busy0,
        "rc": rc,
        "log": str(log),
    }


@contextlib.contextmanager
def bench_lock(path: str) -> Iterator[None]:
    """The machine's benchmark lock (shared with the other benchmarks), if one is given."""
    if not path:
        yield
        return
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  waiting for {path}", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the cases ---------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    peer: str
    phase: str
    rep: int
    figures: dict[str, Any] = field(default_factory=dict)
    correct: bool | None = None
    problem: str | None = None


def missing_peer(s: Settings, peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if peer == "copy-floor" and shutil.which("psql") is None:
        return "psql not on PATH"
    if peer == "sling" and not s.sling_bin.exists():
        return f"not installed ({s.sling_bin} missing: run the peers' setup.sh)"
    if peer in DLT:
        if not s.dlt_python.exists():
            return f"not installed ({s.dlt_python} missing: run the peers' setup.sh)"
        if not (s.peers_dir / "dlt_sync.py").exists():
            return f"not installed ({s.peers_dir / 'dlt_sync.py'} missing)"
    return None


def timed(s: Settings, run: Run, command: list[str], env: dict[str, str] | None = None) -> bool:
    checkpoint(s)
    log = s.root / "logs" / f"{run.peer}.{run.phase}.r{run.rep}.log"
    run.figures = measure(command, log, env)
    if run.figures["rc"] != 0:
        tail = log.read_text(errors="replace")[-1500:]
        run.problem = f"exit status {run.figures['rc']}: {tail}"
        return False
    return True


def verify(s: Settings, run: Run, table: str) -> None:
    """Target == source: count, distinct ids, checksum of the nine columns."""
    source = checksum(s.url(s.src_db), "public.users")
    target = checksum(s.url(s.dst_db), table)
    run.correct = source == target
    if not run.correct:
        run.problem = f"target {target} != source {source}"


def cycle_copy_floor(s: Settings, rep: int) -> list[Run]:
    fresh_schema(s, "base", create_users=True)
    psql = "psql -X -q -v ON_ERROR_STOP=1"
    src, dst = s.url(s.src_db), s.url(s.dst_db)
    full = Run("copy-floor", "full", rep)
    copy_out = f"{psql} -d '{src}' -c '{COPY_OUT}'"
    copy_in = f"{psql} -d '{dst}' -c 'COPY base.users FROM STDIN (FORMAT binary)'"
    if timed(s, full, ["bash", "-o", "pipefail", "-c", f"{copy_out} | {copy_in}"]):
        verify(s, full, "base.users")
    mutate(s)
    incr = Run("copy-floor", "incr", rep)
    script = s.root / "floor_incr.sh"
    script.write_text(
        "set -euo pipefail\n"
        f"w=$({psql} -d '{dst}' -At -c \"{FLOOR_WATERMARK}\")\n"
        f"{psql} -d '{src}' -c \"{FLOOR_COPY_NEWER}\""
        f" | {psql} -1 -d '{dst}' -c '{FLOOR_STAGE}'"
        " -c 'COPY stage FROM STDIN (FORMAT binary)'"
        f" -c '{FLOOR_UPSERT}'\n"
    )
    if timed(s, incr, ["bash", str(script)]):
        verify(s, incr, "base.users")
    return [full, incr]


def peer_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SRC_PG=s.uri(s.src_db) + "?sslmode=disable",
        DST_PG=s.uri(s.dst_db) + "?sslmode=disable",
        SLING_HOME_DIR=str(s.root / "sling-home"),
        SLING_DISABLE_TELEMETRY="true",
        RUNTIME__DLTHUB_TELEMETRY="false",
        DLT_PIPELINES_DIR=str(s.root / "dlt-pipelines"),
        # dlt: SQLAlchemy 2.1 defaults to psycopg 3, dlt[postgres] ships psycopg2; its
        # destination refuses credentials without a password even on a trust server.
        SRC_DSN=s.uri(s.src_db, scheme="postgresql+psycopg2"),
        DST_DSN=s.uri(s.dst_db, password="unused-trust-auth"),
    )
    return env


def cycle_sling(s: Settings, rep: int) -> list[Run]:
    fresh_schema(s, "sling", create_users=False)
    env = peer_env(s)
    common = [str(s.sling_bin), "run", "--src-conn", "SRC_PG", "--src-stream", "public.users"]
    common += ["--tgt-conn", "DST_PG", "--tgt-object", "sling.users"]
    full = Run("sling", "full", rep)
    if timed(s, full, [*common, "--mode", "full-refresh"], env):
        verify(s, full, "sling.users")
    mutate(s)
    incr = Run("sling", "incr", rep)
    keys = ["--primary-key", "id", "--update-key", "updated_at"]
    if timed(s, incr, [*common, "--mode", "incremental", *keys], env):
        verify(s, incr, "sling.users")
    return [full, incr]


def cycle_dlt(s: Settings, peer: str, rep: int) -> list[Run]:
    backend, fmt, dataset = DLT[peer]
    sql_run(
        s.url(s.dst_db),
        f"DROP SCHEMA IF EXISTS {dataset} CASCADE",
        f"DROP SCHEMA IF EXISTS {dataset}_staging CASCADE",
    )
    env = peer_env(s)
    shutil.rmtree(s.root / "dlt-pipelines" / f"ps_users_{dataset}", ignore_errors=True)
    command = [str(s.dlt_python), str(s.peers_dir / "dlt_sync.py"), backend, fmt, dataset]
    runs = []
    for phase in ("full", "incr"):
        if phase == "incr":
            mutate(s)
        run = Run(peer, phase, rep)
        if timed(s, run, command, env):
            verify(s, run, f"{dataset}.users")
        runs.append(run)
    return runs


# -- syncworker --------------------------------------------------------------------------


def syncworker_config(
    s: Settings, state: Path, *, schema: str = "sw", record_path: bool = False
) -> dict[str, Any]:
    """One pipeline: users in the source -> <schema>.users in the target, every column
    mapped, the stale-write guard on (source_updated_at), batches of 20,000, two in flight,
    snapshot pages at the default size (100,000 rows when copied, a batch when read).
    ``record_path``: a ``set`` processor writing a field no column maps, which changes
    nothing in the target but keeps the snapshot on the record path (the binary-COPY fast
    path needs records to reach the sink unchanged)."""
    processors = [{"type": "set", "fields": {"bench_record_path": True}}] if record_path else []
    return {
        "state": f"sqlite:///{state}",
        "pipelines": {
            "users": {
                "source": {
                    "type": "pg_table",
                    "url": s.uri(s.src_db),
                    "table": "public.users",
                    "key": "id",
                    "updated_at": "updated_at",
                },
                "sinks": [
                    {
                        "type": "postgres",
                        "url": s.uri(s.dst_db),
                        "table": f"{schema}.users",
                        "key_column": "id",
                        "columns": {c: c for c in COLUMNS[1:]},
                        "version_column": "source_updated_at",
                        "version": "updated_at",
                    }
                ],
                "processors": processors,
                "batch": {"size": SYNCWORKER_BATCH, "max_wait": "10ms", "max_in_flight": 2},
                "schedule": {"manual": True},
            }
        },
    }


def syncworker_bin() -> str:
    candidate = Path(sys.executable).with_name("syncworker")
    return str(candidate) if candidate.exists() else "syncworker"


def install_capture(s: Settings) -> None:
    """The pg_table change capture on the source table (trigger + change log), once."""
    from syncworker.connectors.postgres import table_capture

    asyncio.run(table_capture.install(s.url(s.src_db), "public.users", "id"))


def clear_change_log(s: Settings) -> None:
    """Changes the peers' mutations left in the log: the snapshot covers them."""
    sql_run(s.url(s.src_db), "DELETE FROM public.syncworker_users_changes")


def cycle_syncworker(s: Settings, rep: int) -> list[Run]:
    fresh_schema(s, "sw", create_users=True, extra=",\n  source_updated_at timestamptz")
    clear_change_log(s)
    state = s.root / f"sw-state-{rep}.db"
    state.unlink(missing_ok=True)
    config = s.root / f"sw-{rep}.yaml"
    config.write_text(json.dumps(syncworker_config(s, state)))
    command = [syncworker_bin(), "--log-level", "warning", "run", "--once", str(config)]
    full = Run("syncworker", "full", rep)
    if timed(s, full, command):
        verify(s, full, "sw.users")
    mutate(s)
    warm = Run("syncworker-warm", "incr", rep)
    if warm_run(s, warm, config):
        verify(s, warm, "sw.users")
    # Back to the pristine source through the pipeline (untimed), then the cold incr.
    revert(s)
    subprocess.run(command, check=False, capture_output=True)
    mutate(s)
    cold = Run("syncworker", "incr", rep)
    if timed(s, cold, command):
        verify(s, cold, "sw.users")
    return [full, warm, cold]


def cycle_syncworker_records(s: Settings, rep: int) -> list[Run]:
    """The full snapshot forced onto the record path, for the fast path's before/after."""
    fresh_schema(s, "sw_rec", create_users=True, extra=",\n  source_updated_at timestamptz")
    clear_change_log(s)
    state = s.root / f"sw-rec-state-{rep}.db"
    state.unlink(missing_ok=True)
    config = s.root / f"sw-rec-{rep}.yaml"
    config.write_text(json.dumps(syncworker_config(s, state, schema="sw_rec", record_path=True)))
    full = Run("syncworker-records", "full", rep)
    command = [syncworker_bin(), "--log-level", "warning", "run", "--once", str(config)]
    if timed(s, full, command):
        verify(s, full, "sw_rec.users")
    return [full]


def warm_run(s: Settings, run: Run, config: Path) -> bool:
    """One run in an engine opened beforehand (a child process): timed from "go" to its
    result, RSS of the child's tree, CPU as the child counts it."""
    checkpoint(s)
    log = s.root / "logs" / f"{run.peer}.{run.phase}.r{run.rep}.log"
    command = [sys.executable, __file__, "--child-warm", str(config)]
    with open(log, "w") as err:
        child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
        )
        sampler = TreeSampler(child.pid)
        assert child.stdin is not None and child.stdout is not None
        try:
            if child.stdout.readline().strip() != "ready":
                child.wait(30)
                run.problem = f"engine did not open: {log.read_text()[-1500:]}"
                sampler.stop()
                return False
            busy0, started = host_busy_s(), time.perf_counter()
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline()
            wall = time.perf_counter() - started
            busy = host_busy_s() - busy0
            child.stdin.close()
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    rss = sampler.stop()
    if not line:
        run.problem = f"engine failed: {log.read_text()[-1500:]}"
        return False
    result = json.loads(line)
    run.figures = {"wall_s": wall, "rss_mb": rss, "cpu_s": result["cpu_s"], "host_busy_s": busy}
    run.figures.update(rc=0, log=str(log), processed=result["processed"])
    if result["status"] != "success":
        run.problem = f"run {result['status']}: {result.get('error')}"
        return False
    return True


async def child_warm(config_path: Path) -> None:
    from syncworker.config import config_from_dict
    from syncworker.core.engine import Engine
    from syncworker.observe.logging import configure_logging
    from syncworker.state import state_store_from_url

    configure_logging("console", "warning")
    raw = json.loads(await asyncio.to_thread(config_path.read_text))
    parsed = config_from_dict(raw, environ={})
    state = state_store_from_url(parsed.app.state)
    engine = Engine(parsed.build(state), state)
    await state.open()
    await engine.pipeline("users").open()
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    # The run alone, as a deployed worker's scheduled run: the engine stays open after it
    # (Engine.run_once would also close every connection inside the timed span).
    run = await engine.pipeline("users").run_once()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    result = {"status": run.status, "processed": run.processed, "error": run.error, "cpu_s": cpu}
    print(json.dumps(result), flush=True)
    await engine.pipeline("users").close()
    await state.close()


def run_cycle(s: Settings, peer: str, rep: int) -> list[Run]:
    revert(s)
    if peer == "copy-floor":
        return cycle_copy_floor(s, rep)
    if peer == "sling":
        return cycle_sling(s, rep)
    if peer in DLT:
        return cycle_dlt(s, peer, rep)
    if peer == "syncworker-records":
        return cycle_syncworker_records(s, rep)
    return cycle_syncworker(s, rep)


# -- summary -----------------------------------------------------------------------------


def summarize(s: Settings, runs: list[Run], absent: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    order = [(r.peer, r.phase) for r in runs]
    for peer, phase in dict.fromkeys(order):
        mine = [r for r in runs if r.peer == peer and r.phase == phase]
        timed_runs = [r for r in mine if r.figures]
        walls = [r.figures["wall_s"] for r in timed_runs]
        moved = s.rows if phase == "full" else s.changed
        median = statistics.median(walls) if walls else None
        rows.append(
            {
                "case": f"{peer} {phase}",
                "peer": peer,
                "phase": phase,
                "rows": moved,
                "runs": len(mine),
                "seconds": median,
                "seconds_min": min(walls) if walls else None,
                "seconds_max": max(walls) if walls else None,
                "rows_per_s": moved / median if median else None,
                "peak_rss_mb": max(r.figures["rss_mb"] for r in timed_runs) if walls else None,
                "cpu_s": statistics.median(r.figures["cpu_s"] for r in timed_runs)
                if walls
                else None,
                "host_busy_s": statistics.median(r.figures["host_busy_s"] for r in timed_runs)
                if walls
                else None,
                "correct": sum(1 for r in mine if r.correct),
                "problems": [f"rep {r.rep}: {r.problem}" for r in mine if r.problem],
                "all_runs": [
                    {"rep": r.rep, **r.figures, "correct": r.correct, "problem": r.problem}
                    for r in mine
                ],
                "status": "ran",
            }
        )
    for peer, why in absent.items():
        for phase in ("full",) if peer == "syncworker-records" else ("full", "incr"):
            rows.append(
                {"case": f"{peer} {phase}", "peer": peer, "phase": phase, "runs": 0}
                | {"status": why, "problems": [], "correct": 0}
            )
    return rows


def evaluate(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """(target, met? (None: cannot tell), detail) for every target."""
    by = {r["case"]: r for r in rows if r.get("status") == "ran"}

    def seconds(case: str) -> float | None:
        row = by.get(case)
        return row["seconds"] if row and row["correct"] == row["runs"] else None

    sw_full = seconds("syncworker full")
    floor, sling = seconds("copy-floor full"), seconds("sling full")
    verdicts: list[tuple[str, bool | None, str]] = []
    if sw_full is None or floor is None:
        verdicts.append((f">= {TARGET_FLOOR_RATIO}x copy floor", None, "a case did not run right"))
    else:
        ratio = floor / sw_full
        verdicts.append(
            (f">= {TARGET_FLOOR_RATIO}x copy floor", ratio >= TARGET_FLOOR_RATIO, f"{ratio:.2f}x")
        )
    if sw_full is None or sling is None:
        verdicts.append((f">= {TARGET_SLING_RATIO}x sling", None, "a case did not run right"))
    else:
        ratio = sling / sw_full
        verdicts.append(
            (f">= {TARGET_SLING_RATIO}x sling", ratio >= TARGET_SLING_RATIO, f"{ratio:.2f}x")
        )
    full = by.get("syncworker full")
    if full is None or full["correct"] != full["runs"]:
        verdicts.append((f"full peak RSS <= {TARGET_RSS_MB:.0f} MB", None, "did not run"))
    else:
        rss = full["peak_rss_mb"]
        verdicts.append(
            (f"full peak RSS <= {TARGET_RSS_MB:.0f} MB", rss <= TARGET_RSS_MB, f"{rss:.0f} MB")
        )
    warm = seconds("syncworker-warm incr")
    if warm is None:
        verdicts.append((f"incr <= {TARGET_INCR_S} s (warm)", None, "did not run right"))
    else:
        verdicts.append(
            (f"incr <= {TARGET_INCR_S} s (warm)", warm <= TARGET_INCR_S, f"{warm:.3f} s")
        )
    return verdicts


def cell(row: dict[str, Any]) -> str:
    return f"{row['seconds']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"


def print_summary(
    rows: list[dict[str, Any]],
    verdicts: list[tuple[str, bool | None, str]],
    *,
    rows_label: str = "rows",
    correct_label: str = "correct",
) -> None:
    """The results table and the verdicts (bench/verify.py prints its own with these too)."""
    print(
        f"| case | {rows_label} | runs | wall s median (min-max) | rows/s | peak RSS MiB (tree) "
        f"| client CPU s | host busy CPU s | {correct_label} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["status"] != "ran":
            print(f"| {r['case']} | | 0 | {r['status']} | | | | | |")
            continue
        if r["seconds"] is None:
            print(f"| {r['case']} | {r['rows']:,} | {r['runs']} | failed | | | | | 0/{r['runs']} |")
            continue
        print(
            f"| {r['case']} | {r['rows']:,} | {r['runs']} | {cell(r)} | {r['rows_per_s']:,.0f} | "
            f"{r['peak_rss_mb']:.0f} | {r['cpu_s']:.1f} | {r['host_busy_s']:.1f} | "
            f"{r['correct']}/{r['runs']} |"
        )
    for r in rows:
        for problem in r["problems"]:
            print(f"  !! {r['case']}: {problem[:600]}")
    print("targets (syncworker):")
    for target, met, detail in verdicts:
        verdict = "cannot tell" if met is None else ("met" if met else "NOT met")
        print(f"  {target}: {verdict} ({detail})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the source table")
    parser.add_argument("--changed", type=int, default=10_000, help="rows updated for incr")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every case")
    parser.add_argument("--peer", action="append", choices=ALL_PEERS, help="default: all")
    parser.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--db-prefix", default="sw_bench_table", help="databases made here")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="dlt_sync.py")
    parser.add_argument(
        "--peers-root",
        type=Path,
        default=Path(os.environ.get("PS_ROOT", "/tmp/peersync")),
        help="the peers' venvs (built by their setup.sh; PS_ROOT)",
    )
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child-warm", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_warm:
        asyncio.run(child_warm(args.child_warm))
        return 0
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="sw-table-sync-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        s = Settings(
            rows=args.rows,
            changed=args.changed,
            pg_dsn=args.pg_dsn,
            src_db=f"{args.db_prefix}_{tag}_src",
            dst_db=f"{args.db_prefix}_{tag}_dst",
            root=root,
            peers_dir=args.peers_dir,
            peers_root=args.peers_root,
        )
        peers = list(dict.fromkeys(args.peer or ALL_PEERS))
        absent = {p: why for p in peers if (why := missing_peer(s, p))}
        present = [p for p in peers if p not in absent]
        create_databases(s)
        try:
            print(f"source {s.src_db}: {args.rows:,} rows in {load_source(s):.1f} s (untimed)")
            if {"syncworker", "syncworker-records"} & set(present):
                install_capture(s)
            runs = run_all(s, present, args.repeat, args.lock)
        finally:
            if args.keep:
                print(f"kept databases {s.src_db}, {s.dst_db}")
            else:
                drop_databases(s)
        rows = summarize(s, runs, absent)
    verdicts = evaluate(rows)
    print_summary(rows, verdicts)
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "targets": verdicts}, indent=2))
    bad = [r["case"] for r in rows if r["status"] == "ran" and r["correct"] != r["runs"]]
    missed = [target for target, met, _ in verdicts if not met]
    if bad:
        print(f"incorrect or failed runs: {', '.join(bad)}")
    return 1 if args.check and (bad or missed) else 0


def run_all(s: Settings, peers: list[str], repeat: int, lock: str) -> list[Run]:
    """Repetition 1 of every case, then 2, ...; the order rotates by one per repetition."""
    runs: list[Run] = []
    for rep in range(1, repeat + 1):
        k = (rep - 1) % max(1, len(peers))
        for peer in peers[k:] + peers[:k]:
            with bench_lock(lock):
                found = run_cycle(s, peer, rep)
            runs += found
            for r in found:
                figures = f"{r.figures['wall_s']:.2f} s" if r.figures else "-"
                verdict = "ok" if r.correct else f"PROBLEM {str(r.problem)[:300]}"
                print(f"rep {rep} {r.peer} {r.phase}: {figures} {verdict}", flush=True)
    return runs


if __name__ == "__main__":
    sys.exit(main())
