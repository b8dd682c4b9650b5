"""Seed 004's verify: ``syncworker verify`` on a 1,000,000-row ``users`` table against an
identical copy and against a copy with 100 planted differences, beside what a user would pick
instead, all in the same run.

The data set is the peers' (``../shared/bench-peers-sync``): the source table from
``gen_fn.sql`` (``bench/table_sync.py``'s copy of it: bigint id, eight columns with NULLs,
timestamptz with microseconds), in a source database; in a second database ``public.users``
(a binary copy) and ``planted.users`` (a copy with ``plant_diffs.sql`` applied, read from
``--peers-dir``: 40 changed rows, some with a NULL column, 30 missing, 30 extra).

Cases (``--peer``, default all):

- ``baseline``: the hand-written per-segment pass, ``verify_baseline.py verify ... --hash
  record`` (1,000 segments of count + sum(hash_record_extended) on both sides at once, then
  md5 per row of the differing segments), run with the peers' venv-base;
- ``reladiff``: reladiff 0.6.0 hashdiff, ``-k id -c <8 columns> --skip-sort-results`` (the
  peers' ``reladiff_run.sh``; without that flag it stops after 8 keys and exits 0);
- ``data-diff``: data-diff 0.11.2, the same flags and ``--no-tracking``;
- ``syncworker``: ``syncworker verify users --config FILE --json`` in a fresh process: a
  ``pg_table`` source and a ``postgres`` sink whose columns name the eight columns. Its
  bytecode is compiled once, untimed, as in any install (``PYTHONPYCACHEPREFIX`` in the
  run's temporary directory, whatever ``PYTHONDONTWRITEBYTECODE`` says).

Every timed run is a fresh process tree measured from spawn to exit (``bench/table_sync.py``'s
``measure``: wall seconds, peak summed RSS of the tree, tree CPU, host busy CPU), after a
``CHECKPOINT``. After every run the keys it reported are compared with the expected ones,
exactly and by kind (missing, extra, changed); a run that differs is incorrect.

Interleaved: repetition 1 of every case (identical then planted), then 2, ..., the order
rotated per repetition, each under ``--lock``. Cells: median (min-max) of ``--repeat`` runs.
Peers whose venvs are missing under ``--peers-root`` (built per the peers' README / env.sh)
are reported as not installed, never silently left out.

Targets (issue 10): syncworker identical <= 1.5 s, planted <= 2 s, each <= 1.2x the
baseline's median in the same run and >= 3x faster than reladiff, peak RSS <= 150 MB, exactly
the planted keys. ``--check`` exits 1 when one is missed or cannot be evaluated, or when a run
is incorrect.

Services come from ``--pg-dsn`` (an admin DSN) and ``--db-prefix``: the script makes its own
two databases (``<prefix>_<tag>_src`` / ``_dst``) and drops only those (``--keep`` leaves
them). The baseline script takes database names only (host 127.0.0.1:5432, user postgres).

    PS_ROOT=/tmp/peersync python bench/verify.py                    # 1M rows, 3 repetitions
    python bench/verify.py --rows 3000 --repeat 1 --peer syncworker  # the smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from table_sync import (  # noqa: E402 - the sibling benchmark's data set and measuring
    DEFAULT_PEERS_DIR,
    Run,
    Settings,
    bench_lock,
    checkpoint,
    create_databases,
    drop_databases,
    load_source,
    measure,
    print_summary,
    sql_run,
)

TARGET_IDENTICAL_S = 1.5
TARGET_PLANTED_S = 2.0
TARGET_BASELINE_RATIO = 1.2
TARGET_RELADIFF_RATIO = 3.0
TARGET_RSS_MB = 150.0
ALL_PEERS = ("baseline", "reladiff", "data-diff", "syncworker")
CASES = {"identical": "public.users", "planted": "planted.users"}
COMPARED = ("first_name", "last_name", "email", "phone", "status", "avatar_url")
COMPARED += ("created_at", "updated_at")
# check_diff.py's: '- 5' / '+ 5' / '! 5', or reladiff's '- (5, ...)'.
LINE = re.compile(r"^([-+!])\s+\(?'?(\d+)")


def venv(s: Settings, name: str) -> Path:
    return s.peers_root / f"venv-{name}" / "bin"


def missing_peer(s: Settings, peer: str) -> str | None:
    need = {
        "baseline": venv(s, "base") / "python",
        "reladiff": venv(s, "reladiff") / "reladiff",
        "data-diff": venv(s, "datadiff") / "data-diff",
    }.get(peer)
    if need is not None and not need.exists():
        return f"not installed ({need} missing: build the peers' venvs, PS_ROOT)"
    if peer == "baseline" and not (s.peers_dir / "verify_baseline.py").exists():
        return f"not installed ({s.peers_dir / 'verify_baseline.py'} missing)"
    return None


# -- the data (untimed) ------------------------------------------------------------------


def copy_table(s: Settings, target: str) -> None:
    import psycopg

    with (
        psycopg.connect(s.url(s.src_db)) as src,
        psycopg.connect(s.url(s.dst_db)) as dst,
        src.cursor().copy("COPY public.users TO STDOUT (FORMAT binary)") as out,
        dst.cursor().copy(f"COPY {target} FROM STDIN (FORMAT binary)") as into,  # type: ignore[arg-type]
    ):
        for chunk in out:
            into.write(chunk)


def prepare_targets(s: Settings) -> None:
    from table_sync import GEN_USER, USERS_DDL

    sql_run(
        s.url(s.dst_db),
        USERS_DDL.format(schema="public", extra=""),
        USERS_DDL.format(schema="planted", extra=""),
        GEN_USER,
    )
    for table in CASES.values():
        copy_table(s, table)
    # The peers' plant_diffs.sql, verbatim, kept here so the benchmark (and its smoke run in
    # the suite) needs nothing outside the repository.
    plant = HERE / "verify_plant_diffs.sql"
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", s.url(s.dst_db), "-f", str(plant)],
        check=True,
        capture_output=True,
    )
    sql_run(s.url(s.dst_db), "VACUUM ANALYZE public.users")


def expected_planted(s: Settings) -> dict[int, str]:
    """``expected_diffs.py``'s 100 keys, less the changed and missing ones a smaller source
    does not hold (plant_diffs.sql's ids assume 1,000,000 rows)."""
    import psycopg

    changed = [25000 * k + 5 for k in range(40)]
    missing = [i for i in range(17, 1000031, 33334) if i % 33334 == 17]
    extra = list(range(33334, 1000021, 33334))
    with psycopg.connect(s.url(s.src_db)) as conn:
        rows = conn.execute(
            "SELECT id FROM public.users WHERE id = ANY(%s)", (changed + missing,)
        ).fetchall()
    present = {r[0] for r in rows}
    found = {k: "changed" for k in changed if k in present}
    found |= {k: "missing" for k in missing if k in present}
    return found | dict.fromkeys(extra, "extra")


# -- the cases ---------------------------------------------------------------------------


def config_file(s: Settings, table: str) -> Path:
    path = s.root / f"verify-{table.replace('.', '_')}.json"
    config = {
        "state": f"sqlite:///{s.root / 'state.db'}",
        "pipelines": {
            "users": {
                "source": {"type": "pg_table", "url": s.uri(s.src_db), "table": "public.users"},
                "sinks": [
                    {
                        "type": "postgres",
                        "url": s.uri(s.dst_db),
                        "table": table,
                        "key_column": "id",
                        "columns": {c: c for c in COMPARED},
                    }
                ],
            }
        },
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def command(s: Settings, peer: str, table: str, segments: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "COLUMNS": "100000"}  # rich wraps reladiff's lines at 80 otherwise
    columns = [arg for c in COMPARED for arg in ("-c", c)]
    if peer == "baseline":
        script = str(s.peers_dir / "verify_baseline.py")
        args = ["verify", s.src_db, "public.users", s.dst_db, table, "--hash", "record"]
        return [str(venv(s, "base") / "python"), script, *args, "--segments", str(segments)], env
    if peer == "reladiff":
        a, b = s.uri(s.src_db), s.uri(s.dst_db)
        tool = str(venv(s, "reladiff") / "reladiff")
        return [tool, a, "public.users", b, table, "-k", "id", *columns, "--skip-sort-results"], env
    if peer == "data-diff":
        # data-diff needs a password in the URI, even with trust auth.
        a = s.uri(s.src_db, password="unused-trust-auth")
        b = s.uri(s.dst_db, password="unused-trust-auth")
        tool = str(venv(s, "datadiff") / "data-diff")
        return [tool, a, "public.users", b, table, "-k", "id", *columns, "--no-tracking"], env
    # An installed package runs from compiled bytecode: keep it (out of the checkout), even
    # where the environment says PYTHONDONTWRITEBYTECODE; warm_up() compiled it, untimed.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(s.root / "pycache")
    sw = syncworker_bin()
    args = ["verify", "users", "--config", str(config_file(s, table)), "--json", "--no-progress"]
    return [sw, "--log-level", "warning", *args, "--segments", str(segments)], env


def syncworker_bin() -> str:
    return shutil.which("syncworker", path=str(Path(sys.executable).parent)) or "syncworker"


def warm_up(s: Settings) -> None:
    """One untimed ``syncworker verify --help``: the bytecode cache a real install has."""
    _, env = command(s, "syncworker", "public.users", 1)
    subprocess.run([syncworker_bin(), "verify", "--help"], env=env, check=True, capture_output=True)


def reported(peer: str, log: Path) -> dict[int, str]:
    """The keys a run reported, by kind (check_diff.py's reading for the peers)."""
    text = log.read_text(errors="replace")
    if peer == "syncworker":
        start = text.index("{")
        data = json.loads(text[start : text.rindex("}") + 1])
        kinds = {"missing": "missing", "extra": "extra", "different": "changed"}
        return {int(k): kind for name, kind in kinds.items() for k in data[name]["keys"]}
    only_a: set[int] = set()
    only_b: set[int] = set()
    changed: set[int] = set()
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            {"-": only_a, "+": only_b, "!": changed}[m.group(1)].add(int(m.group(2)))
    found = {k: "changed" for k in changed | (only_a & only_b)}
    found |= {k: "missing" for k in only_a - only_b - changed}
    return found | {k: "extra" for k in only_b - only_a - changed}


def run_case(
    s: Settings, peer: str, case: str, rep: int, expected: dict[int, str], seg: int
) -> Run:
    run = Run(peer, case, rep)
    checkpoint(s)
    log = s.root / "logs" / f"{peer}.{case}.r{rep}.log"
    argv, env = command(s, peer, CASES[case], seg)
    run.figures = measure(argv, log, env)
    ok_codes = {0, 1} if peer == "syncworker" else {0}  # verify exits 1 on differences
    if run.figures["rc"] not in ok_codes:
        run.problem = f"exit status {run.figures['rc']}: {log.read_text(errors='replace')[-800:]}"
        run.correct = False
        return run
    want = expected if case == "planted" else {}
    got = reported(peer, log)
    run.correct = got == want
    if peer == "syncworker":
        run.correct = run.correct and run.figures["rc"] == (1 if want else 0)
    if not run.correct:
        extra, lost = sorted(set(got) - set(want))[:10], sorted(set(want) - set(got))[:10]
        wrong = sorted(k for k in set(got) & set(want) if got[k] != want[k])[:10]
        run.problem = (
            f"found {len(got)} expected {len(want)}; false {extra} missed {lost} kind {wrong} "
            f"rc {run.figures['rc']}"
        )
    return run


def run_all(
    s: Settings, peers: list[str], repeat: int, lock: str, expected: dict[int, str], seg: int
) -> list[Run]:
    runs: list[Run] = []
    for rep in range(1, repeat + 1):
        k = (rep - 1) % max(1, len(peers))
        for peer in peers[k:] + peers[:k]:
            for case in CASES:
                with bench_lock(lock):
                    run = run_case(s, peer, case, rep, expected, seg)
                runs.append(run)
                verdict = "ok" if run.correct else f"PROBLEM {str(run.problem)[:300]}"
                print(
                    f"rep {rep} {peer} {case}: {run.figures['wall_s']:.2f} s {verdict}", flush=True
                )
    return runs


# -- summary -----------------------------------------------------------------------------


def summarize(s: Settings, runs: list[Run], absent: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for peer, case in dict.fromkeys((r.peer, r.phase) for r in runs):
        mine = [r for r in runs if r.peer == peer and r.phase == case]
        walls = [r.figures["wall_s"] for r in mine]
        median = statistics.median(walls)
        rows.append(
            {
                "case": f"{peer} {case}",
                "peer": peer,
                "phase": case,
                "rows": s.rows,
                "runs": len(mine),
                "seconds": median,
                "seconds_min": min(walls),
                "seconds_max": max(walls),
                "rows_per_s": s.rows / median,
                "peak_rss_mb": max(r.figures["rss_mb"] for r in mine),
                "cpu_s": statistics.median(r.figures["cpu_s"] for r in mine),
                "host_busy_s": statistics.median(r.figures["host_busy_s"] for r in mine),
                "correct": sum(1 for r in mine if r.correct),
                "problems": [f"rep {r.rep}: {r.problem}" for r in mine if r.problem],
                "all_runs": [{"rep": r.rep, **r.figures, "correct": r.correct} for r in mine],
                "status": "ran",
            }
        )
    for peer, why in absent.items():
        for case in CASES:
            rows.append({"case": f"{peer} {case}", "peer": peer, "phase": case, "runs": 0,
                         "status": why, "problems": [], "correct": 0})  # fmt: skip
    return rows


def evaluate(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """(target, met? (None: cannot tell), detail) for every target."""
    by = {r["case"]: r for r in rows if r.get("status") == "ran"}

    def seconds(case: str) -> float | None:
        row = by.get(case)
        return row["seconds"] if row and row["correct"] == row["runs"] else None

    verdicts: list[tuple[str, bool | None, str]] = []
    for case, limit in (("identical", TARGET_IDENTICAL_S), ("planted", TARGET_PLANTED_S)):
        sw, base = seconds(f"syncworker {case}"), seconds(f"baseline {case}")
        rela = seconds(f"reladiff {case}")
        name = f"{case} <= {limit} s"
        verdicts.append((name, None, "did not run right") if sw is None else
                        (name, sw <= limit, f"{sw:.2f} s"))  # fmt: skip
        name = f"{case} <= {TARGET_BASELINE_RATIO}x baseline"
        if sw is None or base is None:
            verdicts.append((name, None, "a case was not run, or not right"))
        else:
            verdicts.append((name, sw <= TARGET_BASELINE_RATIO * base, f"{sw / base:.2f}x"))
        name = f"{case} >= {TARGET_RELADIFF_RATIO}x faster than reladiff"
        if sw is None or rela is None:
            verdicts.append((name, None, "a case was not run, or not right"))
        else:
            verdicts.append((name, rela >= TARGET_RELADIFF_RATIO * sw, f"{rela / sw:.2f}x"))
        row = by.get(f"syncworker {case}")
        name = f"{case} peak RSS <= {TARGET_RSS_MB:.0f} MB"
        if row is None:
            verdicts.append((name, None, "did not run"))
        else:
            verdicts.append(
                (name, row["peak_rss_mb"] <= TARGET_RSS_MB, f"{row['peak_rss_mb']:.0f} MB")
            )
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the source table")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every case")
    parser.add_argument("--segments", type=int, default=1000, help="first-pass segments (all)")
    parser.add_argument("--peer", action="append", choices=ALL_PEERS, help="default: all")
    parser.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--db-prefix", default="sw_bench_verify", help="databases made here")
    parser.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR)
    parser.add_argument(
        "--peers-root",
        type=Path,
        default=Path(os.environ.get("PS_ROOT", "/tmp/peersync")),
        help="the peers' venvs (venv-base, venv-reladiff, venv-datadiff; PS_ROOT)",
    )
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument("--keep", action="store_true", help="keep the two databases")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="sw-verify-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        s = Settings(
            rows=args.rows,
            changed=1,
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
            prepare_targets(s)
            expected = expected_planted(s)
            print(f"targets in {s.dst_db}: identical, planted ({len(expected)} differences)")
            if "syncworker" in present:
                warm_up(s)
            runs = run_all(s, present, args.repeat, args.lock, expected, args.segments)
        finally:
            if args.keep:
                print(f"kept databases {s.src_db}, {s.dst_db}")
            else:
                drop_databases(s)
        rows = summarize(s, runs, absent)
    verdicts = evaluate(rows)
    print_summary(rows, verdicts, rows_label="rows/side", correct_label="exact keys")
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "targets": verdicts}, indent=2))
    bad = [r["case"] for r in rows if r["status"] == "ran" and r["correct"] != r["runs"]]
    missed = [target for target, met, _ in verdicts if not met]
    if bad:
        print(f"incorrect or failed runs: {', '.join(bad)}")
    return 1 if args.check and (bad or missed) else 0


if __name__ == "__main__":
    sys.exit(main())
