"""The PostgreSQL pool a kit keeps for its rows (the seed's tables): opened on the kit's
``open``, its failures ``ConnectionFailed`` with the URL's password left out."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool


async def open_kit_pool(
    kit: str,
    url: str,
    *,
    pool_size: int,
    connect_timeout_s: float,
    statement_timeout_s: float = 30.0,
) -> AsyncConnectionPool:
    """An open pool of at most ``pool_size`` connections named after ``kit`` (its
    ``application_name`` is ``syncworker-{kit}``); psycopg is imported only here, so a
    kit's module loads without the driver until it opens."""
    from syncworker.connectors.postgres.client import (
        ConnectSettings,
        create_pool,
        describe_url,
        open_pool,
    )

    settings = ConnectSettings(
        url=url,
        connect_timeout_s=connect_timeout_s,
        statement_timeout_s=statement_timeout_s,
        application_name=f"syncworker-{kit}",
    )
    pool = create_pool(settings, min_size=1, max_size=pool_size, name=kit)
    await open_pool(pool, connect_timeout_s, f"{kit} kit database {describe_url(url)!r}")
    return pool
