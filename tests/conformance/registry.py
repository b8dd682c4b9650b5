"""Every connector under the conformance suite: one harness entry each.

A new source or sink adds its harness here (``tests/conformance/sources.py`` or
``sinks.py`` show the shape) and every case in ``test_sources.py`` / ``test_sinks.py`` runs
for it; ``test_registry.py`` fails while a connector the registry knows has no entry.
"""

from __future__ import annotations

from tests.conformance.amqp import AmqpHarness
from tests.conformance.harness import SinkHarness, SourceHarness
from tests.conformance.jobs_sink import JobsPostgresHarness, JobsSqliteHarness
from tests.conformance.redis_sink import RedisSinkHarness
from tests.conformance.sinks import (
    AlgoliaHarness,
    JsonlHarness,
    PostgresSinkHarness,
    SqliteSinkHarness,
    WebhookHarness,
)
from tests.conformance.sources import (
    PgOutboxHarness,
    PgTableHarness,
    RedisListHarness,
    RedisStreamHarness,
    SqliteQueueHarness,
)
from tests.conformance.sources_http import HttpHarness, ZohoCreatorHarness
from tests.conformance.sources_jobs import JobQueueHarness

SOURCES: list[type[SourceHarness]] = [
    SqliteQueueHarness,
    RedisListHarness,
    RedisStreamHarness,
    PgOutboxHarness,
    PgTableHarness,
    HttpHarness,
    ZohoCreatorHarness,
    AmqpHarness,
    JobQueueHarness,
]
SINKS: list[type[SinkHarness]] = [
    JsonlHarness,
    SqliteSinkHarness,
    PostgresSinkHarness,
    WebhookHarness,
    AlgoliaHarness,
    RedisSinkHarness,
    JobsSqliteHarness,  # the jobs sink on two queue backends
    JobsPostgresHarness,
]
