"""What the Zoho source tests share: seeded events, a grouped memory sink, a pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from syncworker.connectors.http.zoho import ZohoCreatorSource
from syncworker.core.pipeline import Pipeline, PipelineSettings
from syncworker.core.policies import BreakerPolicy, RetryPolicy
from syncworker.core.protocols import GroupEnd, WriteResult
from syncworker.core.record import Record
from syncworker.reconcile.digest import group_hash, record_digest
from syncworker.state.base import StateStore
from syncworker.testing import MemorySink
from tests.fakes.zoho_creator import ZohoCreatorServer, zoho_time

EVENTS = "All_Events"
REGISTRATIONS = "All_Registrations"
AN_HOUR_AGO = zoho_time(datetime.now(UTC) - timedelta(hours=1))


def seed(zoho: ZohoCreatorServer, events: int, per_event: int) -> list[str]:
    """``events`` events with ``per_event`` registrations each, modified an hour ago, with
    values that must arrive exactly (a long integer, a decimal that is no double)."""
    ids: list[str] = []
    for e in range(events):
        event_id = zoho.add(EVENTS, {"Event_Name": f"Event {e}", "Modified_Time": AN_HOUR_AGO})
        ids.append(event_id)
        for r in range(per_event):
            zoho.add(
                REGISTRATIONS,
                {
                    "Event": {"ID": event_id, "display_value": f"Event {e}"},
                    "Name": f"Guest {e}-{r}",
                    "Ticket": 12345678901234567890 + r,
                    "Price": "0.1",
                    "Score": 1.10,
                    "Modified_Time": AN_HOUR_AGO,
                },
            )
    return ids


@dataclass
class GroupSink(MemorySink):
    """A ``MemorySink`` that keeps records per group and replaces a group on its
    ``GroupEnd`` as the redis sink does (``ReplacesGroups``), and counts groups."""

    ends: list[GroupEnd] = field(default_factory=list)
    groups: dict[str, set[str]] = field(default_factory=dict)
    staged: dict[str, set[str]] = field(default_factory=dict)
    counts_asked: int = 0
    count_offsets: dict[str, int] = field(default_factory=dict)

    async def write(self, records: Sequence[Record]) -> WriteResult | None:
        result = await super().write(records)
        failed = result.failed if result is not None else {}
        for index, record in enumerate(records):
            group = record.meta.get("group")
            if index in failed or group is None:
                continue
            if record.op == "delete":
                self.groups.get(group, set()).discard(record.key)
                continue
            self.groups.setdefault(group, set()).add(record.key)
            run = record.meta.get("sync_run")
            if run is not None:
                self.staged.setdefault(run, set()).add(record.key)
        return result

    async def finish_group(self, end: GroupEnd) -> int:
        self.ends.append(end)
        kept = self.staged.pop(end.run, set())
        gone = self.groups.get(end.group, set()) - kept
        for key in gone:
            self.rows.pop(key, None)
        self.groups[end.group] = kept
        return len(gone)

    async def group_counts(self, stream: str, groups: Sequence[str]) -> dict[str, int]:
        self.counts_asked += 1
        return {g: len(self.groups.get(g, set())) + self.count_offsets.get(g, 0) for g in groups}


def settings(batch_size: int = 100) -> PipelineSettings:
    return PipelineSettings(
        batch_size=batch_size,
        max_wait_s=0.01,
        retry=RetryPolicy(attempts=2, delay_s=0.01, jitter=0),
        breaker=BreakerPolicy(delay_s=0.05, max_delay_s=0.2),
    )


def zoho_source(zoho: ZohoCreatorServer, **overrides: Any) -> ZohoCreatorSource:
    options: dict[str, Any] = {"events": {"report": EVENTS}, "max_records": 200, "overlap": "1s"}
    config = zoho.source_config(REGISTRATIONS, **{**options, **overrides})
    return ZohoCreatorSource(config, name="zoho")


def pipeline(
    source: ZohoCreatorSource, sink: MemorySink, state: StateStore, batch_size: int = 100
) -> Pipeline:
    return Pipeline("zoho", source, [sink], settings=settings(batch_size), state=state)


def expected_hash(records: list[dict[str, Any]]) -> str:
    return group_hash(record_digest(r) for r in records)


def of_event(zoho: ZohoCreatorServer, event_id: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in zoho.records(REGISTRATIONS).items() if v["Event"]["ID"] == event_id}
