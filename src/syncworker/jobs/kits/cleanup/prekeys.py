"""Prekey rotation: used one-time prekeys (used_at set) deleted, or replaced by fresh ones.

In the Signal model the server only holds the public halves of prekeys its clients
generated and uploaded; their private halves never leave the device. A key made here has
no private half anyone keeps (it is thrown away at once), so no session can be completed
with it: ``replace`` only keeps each user's stock of public prekeys from running dry for
deployments that want that, and is opt-in (``prekeys_action``). ``delete_used`` is what a
Signal server does by itself: a one-time prekey handed out once is never handed out again.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections import Counter

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from syncworker.connectors.postgres.client import Connection
from syncworker.jobs.kits.cleanup import queries
from syncworker.jobs.kits.cleanup.sweep import Rows, Run, sweep


def public_keys(count: int) -> list[str]:
    """``count`` fresh X25519 public keys, base64 of the 32 raw bytes."""
    return [
        base64.b64encode(
            X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).decode("ascii")
        for _ in range(count)
    ]


async def prekeys(run: Run) -> None:
    action = run.config.prekeys_action
    run.extra["action"] = action
    run.counts.update(rows_deleted=0, keys_created=0)
    if action == "off":
        return

    async def batch(conn: Connection, rows: Rows) -> None:
        if action == "replace":
            await _replace(run, conn, rows)
        if not run.dry_run:
            await conn.execute(queries.delete_ids("user_prekeys"), {"ids": [r[0] for r in rows]})
        run.add("rows_deleted", len(rows))

    await sweep(run, "user_prekeys", queries.PREKEY_COLUMNS, queries.PREKEYS_USED, {}, batch)


async def _replace(run: Run, conn: Connection, rows: Rows) -> None:
    """As many new prekeys per user as it used, numbered after its highest prekey_id
    (used ones included, so no id a client has seen is issued again)."""
    wanted = Counter(row[1] for row in rows)
    run.add("keys_created", len(rows))
    if run.dry_run:
        return
    cursor = await conn.execute(queries.PREKEY_MAX_IDS, {"users": list(wanted)})
    highest: dict[object, int] = dict(await cursor.fetchall())
    users: list[object] = []
    prekey_ids: list[int] = []
    for user, count in wanted.items():
        start = int(highest.get(user) or 0) + 1
        users += [user] * count
        prekey_ids += range(start, start + count)
    keys = await asyncio.to_thread(public_keys, len(users))
    await conn.execute(
        queries.INSERT_PREKEYS,
        {
            "ids": [uuid.uuid4() for _ in users],
            "users": users,
            "prekey_ids": prekey_ids,
            "keys": keys,
        },
    )
