"""Seed 000's programmatic usage, unchanged in spirit, on syncworker's compat module."""

import asyncio

from syncworker.compat.sync_worker import FileWriter, SyncWorker, WebhookWriter, create_sync_worker


async def main() -> None:
    worker = create_sync_worker()  # everything from the environment, as the seed does
    worker.on("sync_success", lambda e: print("synced", e["processedCount"], "messages",
                                              f"(in {e['inProcessed']}, out {e['outProcessed']})"))
    worker.on("sync_error", lambda e: print("sync failed:", e["error"]))
    worker.start()
    await worker.manual_sync()
    print(worker.get_status())
    await worker.stop()

    # custom configuration and writers, as in the seed's README
    custom = SyncWorker(None, {"syncInterval": 30_000, "batchSize": 50},
                        [FileWriter("./custom/path"), WebhookWriter("https://api.example.com/webhook")])
    print(custom.get_status())


if __name__ == "__main__":
    asyncio.run(main())
