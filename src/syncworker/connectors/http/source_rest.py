"""``http``: a source that reads a paginated REST listing (seed 002's Zoho Creator reports).

A run is planned at its first claim from the run's mode (``SourceContext``):

- ``full``: every group of the parent listing is read fully (ungrouped: the whole listing);
- ``incremental``: the records modified since the high-water mark minus ``overlap`` (one
  filtered read; records already read with the same modified time are skipped), then a full
  read of every group that is stale (never read, last full read older than
  ``groups.stale_after``, parent modified since, or a count that differs);
- ``force``: one group (``force_key``) fully, now.

Each full read of a group tags its records ``meta["sync_run"]``; once every batch of it is
acked the source claims one ``GroupEnd`` (count, content hash of ``record_digest``s, newest
modified time), after which sinks that replace groups drop what the read did not deliver. A
nacked batch is served again, in order, before any ``GroupEnd`` of its read. The high-water
mark and each group's last full read live in checkpoints (``hwm``, ``group:<value>``).

A record that is not an object, or has no id, is dead-lettered by the source (state store,
with the page it came from) and the page goes on; a page that stays undecodable after every
attempt is dead-lettered whole when the next page can still be found (a header cursor),
else the read fails (``ConnectorError``) and is retried by the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

import orjson
import structlog

from syncworker.connectors.http.auth import Auth, OAuthRefresh, StaticAuth
from syncworker.connectors.http.client import (
    ClientSettings,
    HttpClient,
    Page,
    Verdict,
    default_verdict,
)
from syncworker.connectors.http.config import HttpSourceConfig
from syncworker.connectors.http.pagination import Pager, PageRequest, PagerSettings, dig
from syncworker.core import jsonvalue
from syncworker.core.protocols import CountsGroups, GroupEnd, SourceContext
from syncworker.core.record import Batch, Record, key_from_bytes, key_text, wrap
from syncworker.errors import ConnectorError
from syncworker.reconcile.digest import record_digest
from syncworker.state.base import DeadLetter

log = structlog.get_logger(__name__)

HWM_CHECKPOINT = "hwm"
GROUP_CHECKPOINT = "group:"
SOURCE_ERROR = "HTTP_SOURCE_RECORD"
_MASK64 = (1 << 64) - 1
MAX_SEEN = 10_000
"""Ids kept (with their modified time) to skip unchanged records read again in the overlap
window; past this many the window's records are simply delivered again."""
ReadKind = Literal["all", "group", "incremental", "resync"]


@dataclass(eq=False)
class _Read:
    """One paginated read of the listing, and what it delivered."""

    kind: ReadKind
    filter: str | None
    pager: Pager
    group: str | None = None
    tag: str | None = None
    ids: set[str] | None = None
    parent_modified: str | None = None
    request: PageRequest | None = None
    started: bool = False
    done: bool = False
    count: int = 0
    digest: int = 0
    newest: tuple[datetime, str] | None = None
    unsettled: int = 0
    found: set[str] = field(default_factory=set)
    seen: dict[str, str] = field(default_factory=dict)
    end_claimed: bool = False
    committed: bool = False


@dataclass(slots=True)
class _Claim:
    parts: list[tuple[_Read, int]]
    settled: bool = False


@dataclass(slots=True)
class _EndClaim:
    read: _Read


@dataclass(slots=True)
class _GroupState:
    full_at: float
    count: int
    modified: str | None = None
    content_hash: str = ""

    def dump(self) -> str:
        return orjson.dumps(
            {
                "full_at": self.full_at,
                "count": self.count,
                "modified": self.modified,
                "content_hash": self.content_hash,
            }
        ).decode()

    @classmethod
    def load(cls, text: str | None) -> _GroupState | None:
        if not text:
            return None
        try:
            raw = orjson.loads(text)
            return cls(
                float(raw["full_at"]),
                int(raw["count"]),
                raw.get("modified"),
                str(raw.get("content_hash", "")),
            )
        except (ValueError, KeyError, TypeError):
            return None


class HttpSource:
    """Reads ``config.path`` page by page; see the module docstring."""

    config_model: ClassVar[type[HttpSourceConfig]] = HttpSourceConfig
    full_sync: ClassVar[bool] = True
    force_sync: ClassVar[bool] = True
    """``force KEY``: a group's full read (ungrouped: the record with that id)."""

    def __init__(self, config: HttpSourceConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, HttpSourceConfig):
            config = HttpSourceConfig.model_validate(config)
        self.name = name
        self.config = config
        self.stream = config.stream or config.path.rstrip("/").rsplit("/", 1)[-1] or name
        self._context = SourceContext(pipeline=name)
        # Bound to a pipeline, a run is planned once (each run has its number); on its own
        # (no pipeline), the source reads again every poll_interval once idle.
        self._bound = False
        self._client: HttpClient | None = None
        self._shown: HttpClient | None = None
        self._counts: CountsGroups | None = None
        self._ready: deque[tuple[_Read, Record]] = deque()
        self._reads: deque[_Read] = deque()
        self._resyncs: deque[_Read] = deque()
        self._reading: _Read | None = None
        # The next page, asked for while the records of the last one are written: the wait
        # for the API overlaps the sink's write instead of following it.
        self._ahead: tuple[_Read, PageRequest, asyncio.Task[Page]] | None = None
        self._finishing: list[_Read] = []
        self._planned: tuple[int, str, str | None] | None = None
        self._idle_since = 0.0
        self._hwm: tuple[datetime, str] | None = None
        self._seen: dict[str, str] = {}
        self._hwm_loaded = False
        self._plan_newest: tuple[datetime, str] | None = None
        self._plan_seen: dict[str, str] | None = {}
        self._plan_covers_all = False
        self._parsed_times: dict[str, datetime | None] = {}
        self._unsent_letters: list[tuple[_Read, Any, int, str]] = []
        self._runs = itertools.count(1)
        self._settled = asyncio.Event()
        self._status: dict[str, Any] = {
            "groups_total": 0,
            "groups_done": 0,
            "group": None,
            "page": 0,
            "pages_read": 0,
            "records_read": 0,
            "dead_lettered": 0,
            "last_error": None,
            "hwm": None,
        }

    # -- protocol ---------------------------------------------------------------------------

    def bind(self, context: SourceContext) -> None:
        self._context = context
        self._bound = True

    def offer_group_counts(self, sink: CountsGroups) -> None:
        self._counts = sink

    async def open(self) -> None:
        """Create the client (connections open lazily). Nothing is sent: the first claim
        reads (and fails with the dependency's error class if it must)."""
        if self._client is None:
            self._client = self._make_client()
            await self._client.open()
            self._shown = self._client

    async def close(self) -> None:
        """Close the connections; records read but not claimed are read again next time."""
        await self._drop_ahead()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        self._ready.clear()
        self._reads.clear()
        self._reading = None
        self._finishing.clear()
        self._planned = None

    async def wait(self, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(self._settled.wait(), min(timeout_s, self.config.poll_interval))
        except TimeoutError:
            return
        finally:
            self._settled.clear()

    async def claim(self, limit: int) -> Batch | None:
        """The next records of the run (at most ``limit``), a ``GroupEnd`` alone, or
        ``None`` when the run has nothing left now (the run's last ``GroupEnd``s may still
        come once their batches are acked). Raises what the client raises (module
        docstring of ``client.py``); the read keeps its position and the next claim tries
        the same page again."""
        if self._client is None:
            raise ConnectorError(f"http source {self.name!r}: not open")
        try:
            await self._send_letters()  # kept from a claim whose state store failed
            await self._plan_if_due()
            while True:
                end = self._end_ready()
                if end is not None:
                    return end
                if self._ready:
                    batch = self._take(limit)
                    if len(self._ready) < limit:
                        self._read_ahead()
                    return batch
                read = self._next_read()
                if read is None:
                    return None
                await self._fetch(read)
        except Exception as exc:
            self._status["last_error"] = self._client.scrub(f"{type(exc).__name__}: {exc}")
            raise

    async def ack(self, batch: Batch) -> None:
        """Every sink wrote ``batch``: a ``GroupEnd`` records its group's full read in the
        group's checkpoint; records settle their read (an incremental read fully settled
        moves the high-water mark). Raises what the state store raises; the runtime's retry
        of the same ack settles nothing twice."""
        token = batch.token
        if isinstance(token, _EndClaim):
            await self._group_done(token.read)
        elif isinstance(token, _Claim):
            if not token.settled:
                token.settled = True
                for read, count in token.parts:
                    read.unsettled -= count
            for read, _ in token.parts:
                await self._commit_if_settled(read)
        self._settled.set()

    async def _commit_if_settled(self, read: _Read) -> None:
        if read.kind not in ("incremental", "all") or not read.done or read.unsettled:
            return
        if read.committed:
            return
        overflow = len(read.seen) > MAX_SEEN
        await self._commit_hwm(read.newest, {} if overflow else read.seen, overflow=overflow)
        read.committed = True
        read.seen = {}

    async def nack(self, batch: Batch, error: BaseException | None = None) -> None:
        """Hand ``batch`` back: its records are served again first, in order (a group's
        ``GroupEnd`` waits for them); a ``GroupEnd`` is served again."""
        token = batch.token
        if isinstance(token, _EndClaim):
            token.read.end_claimed = False
        elif isinstance(token, _Claim):
            reads = [read for read, count in token.parts for _ in range(count)]
            self._ready.extendleft(reversed(list(zip(reads, batch.records, strict=True))))
        self._settled.set()

    async def resync_group(self, group: str, ids: list[str]) -> int:
        """Queue ``ids`` of ``group`` to be read again (by id, ``ids_per_request`` at a
        time); an id the API no longer has is delivered as a delete with ``meta["group"]``.
        Served before the run's other reads. Returns how many ids were queued."""
        return self._queue_resync(group, ids)

    async def resync(self, keys: list[str]) -> int:
        """Ungrouped ``resync_group``."""
        return self._queue_resync(None, keys)

    def status(self) -> dict[str, Any]:
        client = self._shown  # the last client's counters stay shown after close
        picture = dict(self._status)
        if client is not None:
            picture.update(
                requests=client.requests,
                retries=client.retries,
                rate_limit_waits=client.limiter.waits,
                rate_limit_waited_s=round(client.limiter.waited_s, 3),
                auth=client.auth.status() if client.auth is not None else None,
            )
        return picture

    async def list_groups(self) -> list[str]:
        """The groups the parent listing names now (a discrepancy check's group list).
        Raises ``ConnectorError`` when the source is not open or has no groups."""
        if self._client is None or self.config.groups is None:
            raise ConnectorError(f"http source {self.name!r}: not open, or not grouped")
        return list(await self._list_groups())

    async def iter_group(self, group: str | None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Every record of ``group`` (ungrouped: of the listing) as ``(id, data)``, page by
        page, read now and delivered to nobody (a discrepancy check's side). Records without
        an id or that are no object are left out (the source dead-letters them)."""
        if self._client is None:
            raise ConnectorError(f"http source {self.name!r}: not open")
        pager = self._pager()
        request: PageRequest | None = pager.first()
        criteria = self._group_filter(group) if group is not None else None
        while request is not None:
            page = await self._get(self.config.path, request, criteria)
            if page.error is not None:
                raise ConnectorError(f"http source {self.name!r}: page {pager.page} is no JSON")
            items = self._items(page)
            for item in items:
                if isinstance(item, dict):
                    key = key_text(item.get(self.config.id_field))
                    if key:
                        yield key, item
            request = pager.next(page.response, page.body, len(items))

    # -- building ---------------------------------------------------------------------------

    def _make_client(self) -> HttpClient:
        c = self.config
        settings = ClientSettings(
            timeout_s=c.timeout,
            max_attempts=c.max_attempts,
            backoff_initial_s=c.backoff,
            backoff_max_s=c.max_backoff,
            max_retry_after_s=c.max_retry_after,
            rate_limit_requests=c.rate_limit.requests,
            rate_limit_per_s=c.rate_limit.per,
            http2=c.http2,
        )
        return HttpClient(
            settings,
            label=f"http source {self.name!r}",
            auth=self._auth_factory(),
            headers=c.headers,
            verdict=self.verdict,
            public_headers=frozenset(c.public_headers),
        )

    def _auth_factory(self) -> Callable[[Any], Auth]:
        c = self.config
        if c.oauth is not None:
            o = c.oauth

            def oauth(client: Any) -> Auth:
                return OAuthRefresh(
                    client,
                    token_url=o.token_url,
                    client_id=o.client_id,
                    client_secret=o.client_secret,
                    refresh_token=o.refresh_token,
                    scheme=o.scheme,
                    scope=o.scope,
                )

            return oauth
        headers = {"Authorization": f"Bearer {c.bearer_token}"} if c.bearer_token else {}
        return lambda _client: StaticAuth(headers)

    def verdict(self, status: int, body: Any) -> Verdict:
        """What an answer means; presets (Zoho) read the body's own code too."""
        return default_verdict(status, body)

    def _pager(self, page_size: int | None = None) -> Pager:
        p = self.config.pagination
        return Pager(
            PagerSettings(
                kind=p.kind,
                page_size=page_size or self.config.page_size,
                size_param=p.size_param,
                page_param=p.page_param,
                first_page=p.first_page,
                offset_param=p.offset_param,
                cursor_path=p.cursor_path,
                cursor_param=p.cursor_param,
                cursor_header=p.cursor_header,
                cursor_request_header=p.cursor_request_header,
            )
        )

    # -- filters ----------------------------------------------------------------------------

    def _and(self, *conditions: str | None) -> str | None:
        present = [c for c in conditions if c]
        if not present:
            return None
        if len(present) == 1:
            return present[0]
        return self.config.filters.and_join.join(f"({c})" for c in present)

    def _group_filter(self, group: str) -> str | None:
        groups = self.config.groups
        if groups is None or not self.config.filters.param:
            return None
        return self.config.filters.group.format(field=groups.child_field, value=group)

    def _modified_filter(self) -> str | None:
        c = self.config
        if self._hwm is None or not c.modified_field or not c.filters.param:
            return None
        since = self._hwm[0] - timedelta(seconds=c.overlap)
        text = (
            since.isoformat() if c.modified_format == "iso" else since.strftime(c.modified_format)
        )
        return c.filters.modified.format(field=c.modified_field, since=text)

    def _ids_filter(self, ids: list[str]) -> str:
        f = self.config.filters
        return f.or_join.join(f.id.format(field=self.config.id_field, value=i) for i in ids)

    def parse_modified(self, raw: Any) -> datetime | None:
        """A modified time as written by the API, or ``None`` when it cannot be read."""
        if not isinstance(raw, str) or not raw:
            return None
        cache = self._parsed_times
        if raw in cache:
            return cache[raw]
        if len(cache) >= 4096:
            cache.clear()  # records of one read share few distinct times: keep it small
        cache[raw] = parsed = self._parse_time(raw)
        return parsed

    def _parse_time(self, raw: str) -> datetime | None:
        try:
            if self.config.modified_format == "iso":
                return datetime.fromisoformat(raw.replace("Z", "+00:00"))
            return datetime.strptime(raw, self.config.modified_format)
        except ValueError:
            return None

    # -- planning ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        return (
            not self._ready
            and not self._reads
            and not self._resyncs
            and (self._reading is None or self._reading.done)
            and not self._finishing
        )

    async def _plan_if_due(self) -> None:
        ctx = self._context
        key = (ctx.run, ctx.mode, ctx.force_key)
        poll_s = self.config.poll_interval
        if key == self._planned and (
            self._bound or not self._idle() or time.monotonic() - self._idle_since < poll_s
        ):
            return
        self._planned = key
        self._idle_since = time.monotonic()
        self._plan_newest = None
        self._plan_seen = {}
        await self._load_hwm()
        self._plan_covers_all = ctx.mode == "full" or (
            ctx.mode == "incremental" and self._hwm is None
        )
        reads = self._merge(await self._plan(ctx.mode, ctx.force_key))
        self._reads = deque(reads)
        self._status["groups_total"] = sum(1 for r in reads if r.kind == "group")
        self._status["groups_done"] = 0
        log.info(
            "http_run_planned",
            source=self.name,
            mode=ctx.mode,
            reads=len(reads),
            groups=self._status["groups_total"],
        )

    def _merge(self, planned: list[_Read]) -> list[_Read]:
        """The reads of a run that starts while the last one's are unfinished (it ended on
        an error, or a stream run was cut): those go on first, where they were, and the new
        plan adds what they do not already cover."""
        unfinished = [r for r in [self._reading, *self._reads] if r is not None and not r.done]
        # a group read to its end whose GroupEnd is still to come covers its group too
        groups = {r.group for r in [*unfinished, *self._finishing] if r.kind == "group"}
        whole = any(r.kind in ("incremental", "all") for r in unfinished)
        fresh = [
            r
            for r in planned
            if not (r.kind == "group" and r.group in groups)
            and not (whole and r.kind in ("incremental", "all"))
        ]
        return [r for r in self._reads if not r.done] + fresh

    async def _plan(self, mode: str, force_key: str | None) -> list[_Read]:
        groups = self.config.groups
        if mode == "force" and force_key is not None:
            if groups is None:
                return [self._new_read("resync", self._ids_filter([force_key]), ids={force_key})]
            return [self._group_read(force_key, None)]
        if groups is None:
            if mode == "full":
                return [self._new_read("all", None)]
            return [self._incremental_read()]
        parents = await self._list_groups()
        if mode == "full":
            return [self._group_read(value, modified) for value, modified in parents.items()]
        reads: list[_Read] = []
        if self.config.modified_field and self._hwm is not None:
            reads.append(self._incremental_read())
        for value in await self._stale_groups(parents):
            reads.append(self._group_read(value, parents[value]))
        return reads

    def _new_read(self, kind: ReadKind, filter_: str | None, **extra: Any) -> _Read:
        return _Read(kind, filter_, self._pager(), **extra)

    def _incremental_read(self) -> _Read:
        return self._new_read("incremental", self._modified_filter())

    def _group_read(self, group: str, parent_modified: str | None) -> _Read:
        tag = f"{self._context.run}.{next(self._runs)}.{uuid.uuid4().hex[:12]}"
        return self._new_read(
            "group",
            self._group_filter(group),
            group=group,
            tag=tag,
            parent_modified=parent_modified,
        )

    def _queue_resync(self, group: str | None, ids: list[str]) -> int:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        step = self.config.filters.ids_per_request
        for start in range(0, len(wanted), step):
            chunk = wanted[start : start + step]
            criteria = self._and(
                self._group_filter(group) if group else None, self._ids_filter(chunk)
            )
            self._resyncs.append(self._new_read("resync", criteria, group=group, ids=set(chunk)))
        return len(wanted)

    async def _list_groups(self) -> dict[str, str | None]:
        """The parent listing: each group's value and its modified time (raw)."""
        groups = self.config.groups
        assert groups is not None and self._client is not None
        pager = self._pager(groups.page_size)
        request: PageRequest | None = pager.first()
        found: dict[str, str | None] = {}
        while request is not None:
            page = await self._get(groups.path, request, None)
            items = self._items(page)
            for item in items:
                if isinstance(item, dict):
                    value = key_text(item.get(groups.id_field))
                    if value is not None:
                        modified = (
                            item.get(groups.modified_field) if groups.modified_field else None
                        )
                        found[value] = modified if isinstance(modified, str) else None
            request = pager.next(page.response, page.body, len(items))
        return found

    async def _stale_groups(self, parents: dict[str, str | None]) -> list[str]:
        groups = self.config.groups
        assert groups is not None
        now = time.time()
        states = {
            g: _GroupState.load(await self._context.get_checkpoint(GROUP_CHECKPOINT + g))
            for g in parents
        }
        sink_counts: dict[str, int] = {}
        if groups.count_check != "off" and self._counts is not None:
            sink_counts = await self._counts.group_counts(self.stream, list(parents))
        stale: list[str] = []
        for group, modified in parents.items():
            state = states[group]
            reason = await self._why_stale(group, state, modified, sink_counts, now)
            if reason is not None:
                log.info("http_group_stale", source=self.name, group=group, reason=reason)
                stale.append(group)
        return stale

    async def _why_stale(
        self,
        group: str,
        state: _GroupState | None,
        modified: str | None,
        sink_counts: dict[str, int],
        now: float,
    ) -> str | None:
        groups = self.config.groups
        assert groups is not None
        if state is None:
            return "never_read"
        if now - state.full_at >= groups.stale_after:
            return "stale"
        if modified is not None and modified != state.modified:
            newer, known = self.parse_modified(modified), self.parse_modified(state.modified)
            if newer is not None and (known is None or newer > known):
                return "parent_modified"
        expected = state.count
        if groups.count_check == "source":
            expected = await self._source_count(group)
        if group in sink_counts and sink_counts[group] != expected:
            return "count_differs"
        if groups.count_check == "source" and expected != state.count:
            return "count_differs"
        return None

    async def _source_count(self, group: str) -> int:
        assert self.config.count_path is not None
        request = PageRequest()
        page = await self._get(self.config.count_path, request, self._group_filter(group))
        value = dig(page.body, self.config.count_value_path) if page.verdict == "ok" else 0
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return -1

    # -- reading ----------------------------------------------------------------------------

    def _next_read(self) -> _Read | None:
        """The read to fetch a page of: the one under way, else the next (resyncs first)."""
        current = self._reading
        if current is not None and not current.done:
            return current
        if current is not None:
            self._reading = None
        queue = self._resyncs or self._reads
        if not queue:
            if self._idle() and self._idle_since <= 0:
                self._idle_since = time.monotonic()
            return None
        read = queue.popleft()
        self._reading = read
        self._idle_since = 0.0
        self._finishing.append(read)
        self._status["group"] = read.group
        return read

    async def _get(self, path: str, request: PageRequest, filter_: str | None) -> Page:
        assert self._client is not None
        c = self.config
        params = {**c.params, **request.params}
        if filter_ and c.filters.param:
            params[c.filters.param] = filter_
        if request.url is not None:
            return await self._client.get(request.url, headers=request.headers, endpoint=path)
        return await self._client.get(
            f"{c.base_url}/{path.lstrip('/')}",
            params=params,
            headers=request.headers,
            endpoint=path,
        )

    def _items(self, page: Page) -> list[Any]:
        if page.verdict == "empty" or page.body is None:
            return []
        items = dig(page.body, self.config.records_path)
        if items is None:
            return []
        if not isinstance(items, list):
            raise ConnectorError(
                f"http source {self.name!r}: {self.config.records_path or 'the body'} is no list"
            )
        return items

    def _request_of(self, read: _Read) -> PageRequest | None:
        """The request of ``read``'s next page (its first once started), or None when done."""
        if not read.started:
            read.started = True
            read.request = read.pager.first()
        return read.request

    def _read_ahead(self) -> None:
        """Ask for the next page now (the current read's, or the next read's first), unless
        one is asked for already. Its records are queued when a claim needs them, as
        without this; a failure is raised by that claim, the read still at that page."""
        if self._ahead is not None:
            return
        read = self._next_read()
        request = None if read is None else self._request_of(read)
        if read is None or request is None:
            return
        task = asyncio.create_task(self._get(self.config.path, request, read.filter))
        self._ahead = (read, request, task)

    async def _page_of(self, read: _Read, request: PageRequest) -> Page:
        ahead = self._ahead
        if ahead is not None and ahead[0] is read and ahead[1] is request:
            self._ahead = None
            return await ahead[2]
        await self._drop_ahead()  # asked for another page (a nack, a resync first)
        return await self._get(self.config.path, request, read.filter)

    async def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            task = ahead[2]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _fetch(self, read: _Read) -> None:
        """Read the next page of ``read`` into the ready queue."""
        request = self._request_of(read)
        if request is None:
            read.done = True
            return
        page = await self._page_of(read, request)
        number = read.pager.page
        self._status["page"] = number
        self._status["pages_read"] += 1
        if page.error is not None:
            following = read.pager.next(page.response, None, 0)
            if following is None and self.config.pagination.kind != "header_cursor":
                # Without this page the next one cannot be found: keep the position, the
                # runtime retries the claim after its pause.
                raise ConnectorError(
                    f"http source {self.name!r}: page {number} is no JSON ({page.error})"
                )
            await self._dead_page(read, page, number)
            read.request = following
        else:
            items = self._items(page)
            # the next request first: a cursor already followed raises before this page's
            # records are queued, so a claim that tries again queues nothing twice
            following = read.pager.next(page.response, page.body, len(items))
            before = read.count
            bad = self._accept(read, items, number)
            self._status["records_read"] += read.count - before
            read.request = following
            self._unsent_letters += [(read, item, number, why) for item, why in bad]
            await self._send_letters()
        if read.request is None:
            self._read_done(read)

    def _read_done(self, read: _Read) -> None:
        read.done = True
        if read.kind == "resync" and read.ids is not None:
            for missing in sorted(read.ids - read.found):
                meta = self._meta(read, None, read.pager.page)
                record = Record(missing, {}, self.stream, "delete", meta)
                self._ready.append((read, record))
                read.unsettled += 1
        log.info(
            "http_read_done",
            source=self.name,
            kind=read.kind,
            group=read.group,
            pages=read.pager.page,
            records=read.count,
        )

    def _accept(self, read: _Read, items: list[Any], page: int) -> list[tuple[Any, str]]:
        """Queue the records of one page; returns those to dead-letter, with why (kept
        apart so the page's good records are queued in one pass, without awaiting)."""
        c = self.config
        bad: list[tuple[Any, str]] = []
        id_field, modified_field = c.id_field, c.modified_field
        hash_missing = c.missing_id == "key_from_bytes"
        incremental, resync = read.kind == "incremental", read.kind == "resync"
        seen, ready, stream = self._seen, self._ready, self.stream
        base_meta = self._meta(read, None, page)
        grouped_by_record = self.config.groups is not None and read.group is None
        for item in items:
            if type(item) is not dict:
                bad.append((item, "a record that is not a JSON object"))
                continue
            key = key_text(item.get(id_field))
            if not key:
                if not hash_missing:
                    bad.append((item, f"a record without its id field {id_field!r}"))
                    continue
                key = key_from_bytes(jsonvalue.dumps(item, sort_keys=True))
            digest = record_digest(item)
            raw_modified = item.get(modified_field) if modified_field else None
            if type(raw_modified) is str:
                # The time AND the content: a record changed twice within the second its
                # modified time is written in must not be taken for the one already read.
                mark = f"{raw_modified}|{digest:016x}"
                if incremental and seen.get(key) == mark:
                    continue  # read again in the overlap window, unchanged
                if not resync and len(read.seen) <= MAX_SEEN:
                    read.seen[key] = mark
                modified = self.parse_modified(raw_modified)
                if modified is not None and (read.newest is None or modified > read.newest[0]):
                    read.newest = (modified, raw_modified)
            else:
                raw_modified = None
            read.count += 1
            read.digest = (read.digest + digest) & _MASK64
            if read.ids is not None:
                read.found.add(key)
            meta = self._meta(read, item, page) if grouped_by_record else dict(base_meta)
            meta["modified_time"] = raw_modified
            ready.append((read, Record(key, item, stream, "upsert", meta)))
            read.unsettled += 1
        return bad

    def _meta(self, read: _Read, item: dict[str, Any] | None, page: int) -> dict[str, Any]:
        meta: dict[str, Any] = {"page": page}
        groups = self.config.groups
        if groups is None:
            return meta
        group = read.group
        if group is None and item is not None:
            group = self._group_of(item)
        if group is not None:
            meta["group"] = group
            meta["group_name"] = groups.name
        if read.kind == "group" and read.tag is not None:
            meta["sync_run"] = read.tag
        return meta

    def _group_of(self, item: dict[str, Any]) -> str | None:
        groups = self.config.groups
        assert groups is not None
        value = item.get(groups.child_field)
        if isinstance(value, dict):
            value = value.get(groups.child_value_path)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = value[0].get(groups.child_value_path)
        return key_text(value) if value not in (None, "") else None

    def _take(self, limit: int) -> Batch:
        records: list[Record] = []
        parts: list[tuple[_Read, int]] = []
        while self._ready and len(records) < limit:
            read, record = self._ready.popleft()
            records.append(record)
            if parts and parts[-1][0] is read:
                parts[-1] = (read, parts[-1][1] + 1)
            else:
                parts.append((read, 1))
        return Batch(records, _Claim(parts))

    def _end_ready(self) -> Batch | None:
        """The first ``GroupEnd`` whose read is done and fully acked; resync and
        incremental reads leave once settled."""
        for read in list(self._finishing):
            if not read.done or read.unsettled:
                continue
            if read.kind != "group":
                self._finishing.remove(read)
                continue
            if read.end_claimed:
                continue
            read.end_claimed = True
            assert read.group is not None and read.tag is not None
            groups = self.config.groups
            newest = read.newest[1] if read.newest is not None else read.parent_modified
            end = GroupEnd(
                records=[],
                token=_EndClaim(read),
                stream=self.stream,
                group=read.group,
                group_name=groups.name if groups is not None else "group",
                run=read.tag,
                count=read.count,
                content_hash=format(read.digest, "016x"),
                source_modified=newest,
            )
            return end
        return None

    async def _group_done(self, read: _Read) -> None:
        if read in self._finishing:
            self._finishing.remove(read)
        assert read.group is not None
        state = _GroupState(
            time.time(),
            read.count,
            read.parent_modified or (read.newest[1] if read.newest else None),
            format(read.digest, "016x"),
        )
        await self._context.set_checkpoint(GROUP_CHECKPOINT + read.group, state.dump())
        self._status["groups_done"] += 1
        if read.newest is not None and (
            self._plan_newest is None or read.newest[0] > self._plan_newest[0]
        ):
            self._plan_newest = read.newest
        if self._plan_seen is None or len(self._plan_seen) + len(read.seen) > MAX_SEEN:
            self._plan_seen = None  # too many to keep: the window is delivered again once
        else:
            self._plan_seen.update(read.seen)
        read.seen = {}
        if self._plan_covers_all and self._idle() and not self._finishing:
            # Every group of the run was read fully: the next incremental read starts from
            # the newest modified time seen (minus the overlap), skipping what was read.
            seen = self._plan_seen
            await self._commit_hwm(self._plan_newest, seen or {}, overflow=seen is None)
            self._plan_seen = {}
        log.info(
            "http_group_synced",
            source=self.name,
            group=read.group,
            records=read.count,
            content_hash=state.content_hash,
        )

    # -- high-water mark --------------------------------------------------------------------

    async def _load_hwm(self) -> None:
        if self._hwm_loaded:
            return
        self._hwm_loaded = True
        text = await self._context.get_checkpoint(HWM_CHECKPOINT)
        if not text:
            return
        try:
            raw = orjson.loads(text)
            seen = raw.get("seen") or {}
            mark = self.parse_modified(raw.get("hwm"))
        except (ValueError, AttributeError):
            return
        if mark is not None:
            self._hwm = (mark, raw["hwm"])
            self._status["hwm"] = raw["hwm"]
        self._seen = {str(k): str(v) for k, v in seen.items()}

    async def _commit_hwm(
        self, newest: tuple[datetime, str] | None, seen: dict[str, str], overflow: bool = False
    ) -> None:
        """Every record of an incremental (or whole) read is acked: move the mark to the
        newest modified time read, and keep the ids read inside the overlap window (with
        their modified time) so the next read skips them when unchanged."""
        if not self.config.modified_field:
            return
        if newest is not None and (self._hwm is None or newest[0] > self._hwm[0]):
            self._hwm = newest
        self._seen.update(seen)
        if self._hwm is None:
            return
        floor = self._hwm[0] - timedelta(seconds=self.config.overlap)
        kept: dict[str, str] = {}
        for key, mark in self._seen.items():
            when = self.parse_modified(mark.rpartition("|")[0])
            if when is not None and when >= floor:
                kept[key] = mark
        if len(kept) > MAX_SEEN or overflow:
            # A mass update inside the window: re-delivering it once (idempotent sinks) costs
            # less than a checkpoint this large.
            kept = {}
        self._seen = kept
        value = orjson.dumps({"hwm": self._hwm[1], "seen": kept}).decode()
        await self._context.set_checkpoint(HWM_CHECKPOINT, value)
        self._status["hwm"] = self._hwm[1]

    # -- dead letters -----------------------------------------------------------------------

    async def _send_letters(self) -> None:
        """Dead-letter what the pages read so far could not deliver, oldest first; what the
        state store fails to take stays for the next claim (raised now)."""
        while self._unsent_letters:
            read, item, page, why = self._unsent_letters[0]
            await self._dead_record(read, item, page, why)
            self._unsent_letters.pop(0)

    async def _dead_record(self, read: _Read, item: Any, page: int, why: str) -> None:
        try:
            raw = jsonvalue.dumps(item)
        except (TypeError, ValueError):
            raw = repr(item).encode()
        data = item if isinstance(item, dict) else wrap(raw, "not_object")
        await self._dead_letter(read, key_from_bytes(raw), data, page, why)

    async def _dead_page(self, read: _Read, page: Page, number: int) -> None:
        data = wrap(page.raw, "not_json")
        why = f"page {number} is no JSON after {self.config.max_attempts} attempts: {page.error}"
        await self._dead_letter(read, key_from_bytes(page.raw), data, number, why)

    async def _dead_letter(
        self, read: _Read, key: str, data: dict[str, Any], page: int, why: str
    ) -> None:
        """Keep what the source cannot deliver in the dead letters, with its page; the page
        and the read go on."""
        meta = self._meta(read, None, page)
        message = f"http source {self.name!r}: page {page}: {why}"
        self._status["dead_lettered"] += 1
        self._status["last_error"] = message
        log.warning(
            "http_record_dead_lettered",
            source=self.name,
            page=page,
            group=read.group,
            record_key=key,
            error=why,
        )
        ctx = self._context
        if ctx.state is not None:
            letter = DeadLetter(
                pipeline=ctx.pipeline,
                stream=self.stream,
                key=key,
                op="upsert",
                data=data,
                error=message,
                error_type="PermanentError",
                sink=f"source {self.name}",
                meta=meta,
            )
            await ctx.state.add_dead_letters([letter])
        await ctx.report_error(SOURCE_ERROR, message, key=key, metadata=meta)
