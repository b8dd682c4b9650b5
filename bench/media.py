"""Thumbnails through the media kit (issue 13) beside a plain Pillow loop doing the same
pixel work, in the same run, on the same files, 2 at a time (the machine's 2 cores).

Inputs: ``--images`` (24) photos made for the run, ``--size`` (3000x2000) JPEGs at quality
90 with EXIF orientation 6, each different (a gradient and shapes). Both cases turn each into
a 2048 px WebP (quality 82) and a 320 px WebP thumbnail (quality 70), the kit's defaults.

- ``kit``: ``MediaKit.image`` (the ``kit:media.image`` handler) with a local directory store
  and its messages row in PostgreSQL: a database this bench creates on the server of
  ``--pg-dsn`` (``--db-prefix``_<random>, the seed's schema.sql) and drops at the end. Per
  image: the row checked, the original copied in from the store, decoded (JPEG draft),
  oriented, resized, encoded, thumbnailed, blurhash and dominant colour computed, both
  outputs copied to the store, the row updated. Two handler calls run at once.
- ``pillow``: a ``ThreadPoolExecutor(2)`` over the same files: open, ``draft`` (as the kit
  does: a careful Pillow program would), ``exif_transpose``, ``thumbnail`` to 2048 px, save
  WebP, ``thumbnail`` to 320 px, save WebP, and the same placeholders the kit stores (a 4x3
  blurhash of a 32 px copy, the dominant colour of a 64 px copy), so both do the same
  pixel work. No storage, no database, no JSON.

After one untimed warm-up run of each case (2 images: imports, codec set-up), interleaved
(kit, pillow, kit, pillow, ...) ``--repeat`` (3) times, each run into a fresh
output directory; every output must exist (and for the kit every row hold its media_url),
else the run is incorrect. Figures: images/s, median (min-max) over the runs, and the
process's CPU time per image (user + system, median), which a busy shared machine
disturbs far less than the wall clock.

Target (issue 13): the kit >= 90% of the plain loop's images/s, as the median of the paired
ratios (each kit run over the plain run beside it); ``--check`` exits 1 when it is missed or a
run is incorrect.

    python bench/media.py                              # 24 images, 3 runs per case
    python bench/media.py --images 4 --repeat 1        # the smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import structlog
from PIL import Image, ImageDraw, ImageOps

from syncworker.jobs.kits.media.image import blurhash_of  # the C encoder the kit calls

sys.path.insert(0, str(Path(__file__).parent))
from table_sync import bench_lock

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "messenger_worker" / "schema.sql"
CONCURRENCY = 2
MAX_EDGE = 2048
THUMB_EDGE = 320
QUALITY = 82
THUMB_QUALITY = 70
TARGET_RATIO = 0.90


def make_inputs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        image = Image.linear_gradient("L").resize(size).convert("RGB")
        draw = ImageDraw.Draw(image)
        for shape in range(12):
            x = (index * 97 + shape * 211) % size[0]
            y = (index * 53 + shape * 131) % size[1]
            colour = ((index * 40 + shape * 20) % 256, (shape * 70) % 256, (index * 15) % 256)
            draw.ellipse((x, y, x + size[0] // 5, y + size[1] // 4), fill=colour)
        exif = Image.Exif()
        exif[0x0112] = 6
        path = folder / f"photo_{index:03d}.jpg"
        image.save(path, format="JPEG", quality=90, exif=exif.tobytes())
        paths.append(path)
    return paths


# -- the plain loop ------------------------------------------------------------------------


def plain_one(source: Path, out: Path) -> list[Path]:
    with Image.open(source) as opened:
        opened.draft("RGB", (MAX_EDGE, MAX_EDGE))
        image = ImageOps.exif_transpose(opened).convert("RGB")
    image.thumbnail((MAX_EDGE, MAX_EDGE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    main = out / f"{source.stem}.webp"
    image.save(main, format="WEBP", quality=QUALITY, method=4)
    tiny = image.copy()
    tiny.thumbnail((32, 32), Image.Resampling.BILINEAR)
    blurhash_of(tiny, 4, 3)
    small = image.copy()
    small.thumbnail((64, 64), Image.Resampling.BILINEAR)
    small.quantize(colors=5).getcolors()
    image.thumbnail((THUMB_EDGE, THUMB_EDGE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    thumb = out / f"{source.stem}_thumb.webp"
    image.save(thumb, format="WEBP", quality=THUMB_QUALITY, method=4)
    return [main, thumb]


def run_plain(inputs: list[Path], out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        written = [p for paths in pool.map(lambda s: plain_one(s, out), inputs) for p in paths]
    elapsed_s = time.perf_counter() - started
    missing = [str(p) for p in written if not p.is_file() or p.stat().st_size == 0]
    missing += ["(outputs)"] * (2 * len(inputs) - len(written))
    return {"elapsed_s": elapsed_s, "missing": missing}


# -- the kit -------------------------------------------------------------------------------


async def run_kit(inputs: list[Path], work: Path, db_url: str) -> dict[str, Any]:
    from syncworker.jobs.kits.media.config import MediaKitConfig
    from syncworker.jobs.kits.media.kit import MediaKit
    from syncworker.jobs.kits.media.models import MediaJob

    store = work / "store"
    (store / "up").mkdir(parents=True)
    jobs = []
    rows = []
    for source in inputs:
        shutil.copyfile(source, store / "up" / source.name)
        message_id = str(uuid.uuid4())
        rows.append(message_id)
        jobs.append(MediaJob(type="image", s3Key=f"up/{source.name}", userId="bench",
                             messageId=message_id))  # fmt: skip
    insert_rows(db_url, rows)
    config = MediaKitConfig.model_validate(
        {
            "storage": {"type": "local", "path": str(store)},
            "database": db_url,
            "pool_size": CONCURRENCY,
            "tmp_dir": str(work / "tmp"),
            "image": {"max_width": MAX_EDGE, "max_height": MAX_EDGE, "quality": QUALITY,
                      "thumbnail_sizes": [THUMB_EDGE], "thumbnail_quality": THUMB_QUALITY},
        }
    )  # fmt: skip
    async with MediaKit(config) as kit:
        pending = list(jobs)

        async def lane() -> None:
            while pending:
                await kit.image(pending.pop())

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
        elapsed_s = time.perf_counter() - started
    return {"elapsed_s": elapsed_s, "missing": kit_missing(store, db_url, rows)}


def insert_rows(db_url: str, ids: list[str]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO messages (id, sender_id, chat_id) VALUES (%s, %s, %s)",
            [(i, uuid.uuid4(), uuid.uuid4()) for i in ids],
        )


def kit_missing(store: Path, db_url: str, ids: list[str]) -> list[str]:
    missing = []
    for message_id in ids:
        for name in ("image.webp", f"thumb_{THUMB_EDGE}.webp"):
            path = store / "media" / "bench" / message_id / name
            if not path.is_file() or path.stat().st_size == 0:
                missing.append(str(path))
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM messages WHERE id = ANY(%s) AND media_url IS NOT NULL "
            "AND media_metadata ? 'blurhash'",
            ([uuid.UUID(i) for i in ids],),
        ).fetchone()
    done = found[0] if found else 0
    if done != len(ids):
        missing.append(f"{len(ids) - done} messages rows without media_url")
    return missing


# -- the run -------------------------------------------------------------------------------


class Database:
    """A database of its own on the server of ``admin_dsn``, with the seed's schema."""

    def __init__(self, admin_dsn: str, prefix: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.url = f"{admin_dsn.rsplit('/', 1)[0]}/{self.name}"

    def __enter__(self) -> Database:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(SCHEMA.read_text())
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def one_run(case: str, inputs: list[Path], root: Path, db_url: str, rep: int) -> dict[str, Any]:
    work = root / f"{case}_{rep}"
    work.mkdir()
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    try:
        if case == "kit":
            figures = asyncio.run(run_kit(inputs, work, db_url))
        else:
            out = work / "out"
            out.mkdir()
            figures = run_plain(inputs, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    figures.update(case=case, rep=rep, images=len(inputs), load=os.getloadavg()[0])
    # CPU per image: what the work costs, whatever else the shared machine runs meanwhile.
    figures["cpu_ms_per_image"] = cpu_s * 1000 / len(inputs)
    figures["images_per_s"] = len(inputs) / figures["elapsed_s"]
    figures["correct"] = not figures["missing"]
    return figures


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    cases = {}
    for case in ("kit", "pillow"):
        mine = [r for r in runs if r["case"] == case]
        rates = [r["images_per_s"] for r in mine if r["correct"]]
        cases[case] = {
            "runs": len(mine),
            "correct": len(rates),
            "images_per_s": statistics.median(rates) if rates else None,
            "images_per_s_min": min(rates) if rates else None,
            "images_per_s_max": max(rates) if rates else None,
            "cpu_ms_per_image": statistics.median(r["cpu_ms_per_image"] for r in mine)
            if mine
            else None,
        }
    kit, plain = cases["kit"]["images_per_s"], cases["pillow"]["images_per_s"]
    per_rep = [
        k["images_per_s"] / p["images_per_s"]
        for k in runs
        for p in runs
        if k["case"] == "kit" and p["case"] == "pillow" and k["rep"] == p["rep"]
    ]
    # The figure is the median of the paired ratios: each kit run beside the plain run that
    # followed it, so drift in a shared machine's speed between repetitions cancels out.
    return {
        "cases": cases,
        "ratio": statistics.median(per_rep) if kit and plain and per_rep else None,
        "ratio_of_medians": kit / plain if kit and plain else None,
        "ratio_per_rep": per_rep,
        "runs": runs,
    }


def print_summary(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print("| case | runs (correct) | images/s median | min-max | CPU ms per image |")
    print("|---|---:|---:|---:|---:|")
    for case, row in summary["cases"].items():
        rate = row["images_per_s"]
        spread = f"{row['images_per_s_min']:.2f}-{row['images_per_s_max']:.2f}" if rate else "-"
        shown = f"{rate:.2f}" if rate else "-"
        cpu = f"{row['cpu_ms_per_image']:.0f}" if row["cpu_ms_per_image"] else "-"
        print(f"| {case} | {row['runs']} ({row['correct']}) | {shown} | {spread} | {cpu} |")
    ratio = summary["ratio"]
    per_rep = ", ".join(f"{r:.2f}" for r in summary["ratio_per_rep"])
    print(
        f"kit / pillow: {ratio:.2f} median of pairs (per repetition: {per_rep}; of the medians "
        f"{summary['ratio_of_medians']:.2f}); target >= {args.target:.2f}; "
        f"{args.images} images {args.size}, {CONCURRENCY} at a time, {os.cpu_count()} CPUs"
        if ratio
        else "kit / pillow: not measured (a case had no correct run)"
    )


def missed(summary: dict[str, Any], target: float) -> list[str]:
    found = [
        f"{r['case']} run {r['rep']}: {len(r['missing'])} outputs missing, first {r['missing'][0]}"
        for r in summary["runs"]
        if not r["correct"]
    ]
    ratio = summary["ratio"]
    if ratio is None or ratio < target:
        found.append(f"kit / pillow {ratio if ratio is None else round(ratio, 3)} < {target}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="photos per run")
    parser.add_argument("--size", default="3000x2000", help="the photos' size, WxH")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (medians kept)")
    parser.add_argument("--lock", default="/tmp/bench.lock", help="benchmark lock ('' = none)")
    parser.add_argument(
        "--pg-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin DSN"
    )
    parser.add_argument("--db-prefix", default="sw_bench_media", help="the database made here")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument(
        "--target", type=float, default=TARGET_RATIO, help="kit / pillow at least (0.90)"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    # The kit's per-image info events would drown the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    width, height = (int(v) for v in args.size.lower().split("x"))
    runs = []
    with bench_lock(args.lock), tempfile.TemporaryDirectory(prefix="sw-bench-media-") as tmp:
        root = Path(tmp)
        inputs = make_inputs(root / "inputs", args.images, (width, height))
        with Database(args.pg_dsn, args.db_prefix) as db:
            # Untimed, so the first timed run does not pay the imports and codec set-up.
            for case in ("kit", "pillow"):
                one_run(case, inputs[:CONCURRENCY], root, db.url, 0)
            for rep in range(1, args.repeat + 1):
                for case in ("kit", "pillow"):
                    run = one_run(case, inputs, root, db.url, rep)
                    print(
                        f"  {case} run {rep}: {run['images_per_s']:.2f} images/s "
                        f"({run['elapsed_s']:.2f} s, {run['cpu_ms_per_image']:.0f} CPU ms/image, "
                        f"load {run['load']:.2f})"
                        + ("" if run["correct"] else f"  INCORRECT: {run['missing'][:3]}"),
                        flush=True,
                    )
                    runs.append(run)
    summary = summarize(runs)
    print_summary(summary, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    problems = missed(summary, args.target)
    for problem in problems:
        print(f"MISSED: {problem}")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
