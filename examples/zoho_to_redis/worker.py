"""Seed 002's programmatic usage (its SyncWorker's methods) on syncworker's compat module.

Run it beside the config: python examples/zoho_to_redis/worker.py (the ZOHO_* variables and
REDIS_URL set as README.md says).
"""

import asyncio
from pathlib import Path

from syncworker.compat.zoho_worker import SyncWorker

CONFIG = Path(__file__).with_name("syncworker.yaml")


async def main() -> None:
    worker = SyncWorker(CONFIG)
    await worker.start()  # auto sync every SYNC_INTERVAL_MS unless ENABLE_AUTO_SYNC=false
    full = await worker.perform_full_sync()
    print("full sync:", full["status"], full["processed"], "records,", full["removed"], "removed")
    incremental = await worker.perform_incremental_sync()
    print("incremental sync:", incremental["status"], incremental["processed"], "records")
    status = worker.get_status()
    print("status:", status["is_running"], status["stats"], status["last_sync_time"])
    report = await worker.check_discrepancies()
    print("discrepancies:", report["totals"])
    for group in report["groups"][:1]:
        forced = await worker.force_sync_event(group["group"])  # the first event that differs
        print("force sync", group["group"], forced["status"], forced["processed"], "records")
    await worker.stop()


if __name__ == "__main__":
    asyncio.run(main())
