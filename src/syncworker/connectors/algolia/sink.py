"""``algolia``: a sink that saves and deletes records as objects of Algolia indexes (seed 001).

Each stream (a source table) names its index in ``indexes``. A batch is grouped by index and
action (``addObject``, ``partialUpdateObject``, ``deleteObject``) and each group is one call
of Algolia's batch endpoint, split further at ``max_objects_per_call`` objects or
``max_bytes_per_call`` bytes. The objectID is the record's key (or ``object_id_field``).

Records of one key in one batch are reduced first, so the grouping cannot reorder them: a
delete drops the earlier saves of its key, a full save drops the earlier saves and deletes,
and deletes are sent before saves (a partial update after a delete then rebuilds the object).

What the answer means:

- 2xx: written (after the task is published, with ``wait_for_task``).
- 429: ``RetryableError`` with ``delay_s`` from ``Retry-After``; the runtime backs off.
- 5xx, timeouts: ``RetryableError``; connection refused or reset: ``ConnectionFailed``.
- 401, 403: ``ConfigRefused`` (wrong app id or key, or a key without the right: every
  record would fail alike, so the pipeline stops and says so).
- another 4xx: the data is refused. When the answer names the object (a call of one, or
  Algolia's ``objectID=...`` / ``position n``), its record is reported in
  ``WriteResult.failed`` with Algolia's message and the rest of the call is sent again; a
  refusal of several objects that names none raises ``PermanentError`` so the runtime
  bisects the batch down to the refused record.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog
from algoliasearch.http.exceptions import (
    AlgoliaException,
    AlgoliaUnreachableHostException,
    RequestException,
)
from algoliasearch.search.client import SearchClient
from pydantic import BaseModel, Field, ValidationError, field_validator

from syncworker.connectors.algolia.client import build_client, last_response, reset_last_response
from syncworker.connectors.retry_after import retry_after_s
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.core.record import Record, key_text
from syncworker.errors import (
    ConfigError,
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    PermanentError,
    RetryableError,
)
from syncworker.observe.logging import MASK

log = structlog.get_logger(__name__)

DEFAULT_MAX_BYTES_PER_CALL = 10_000_000
# The client sends the body as ``json.dumps`` writes it (", " between items, ASCII only);
# sizes are measured the same way.
_ENVELOPE_BYTES = len(json.dumps({"requests": []}))
_SEPARATOR_BYTES = len(", ")
_AUTH_STATUSES = frozenset({401, 403})
_MESSAGE_CHARS = 500
# What a rebuild keeps from the real index (Algolia's replaceAllObjects copies the same).
_COPY_SCOPE = ("settings", "rules", "synonyms")
Action = Literal["addObject", "partialUpdateObject", "partialUpdateObjectNoCreate", "deleteObject"]
Transform = Callable[[dict[str, Any]], dict[str, Any]]


class AlgoliaIndexConfig(BaseModel):
    """Where and how one stream (table) is indexed."""

    model_config = {"extra": "forbid", "frozen": True}

    index: str = Field(min_length=1, description="Name of the Algolia index.")
    object_id_field: str | None = Field(
        None,
        description="Dotted path of the record field holding the objectID "
        "(default: the record's key).",
    )
    fields: dict[str, str] | None = Field(
        None,
        description="Object attribute -> dotted record field path; only these attributes are "
        "sent. Default: the record's data as it is.",
    )
    transform: str | None = Field(
        None,
        description="'module:function' called with the object (after `fields`) that returns "
        "the object to index; raising dead-letters the record.",
    )
    partial: bool = Field(
        False,
        description="Send partialUpdateObject (only the given attributes change) instead of "
        "addObject (the object is replaced).",
    )
    create_if_missing: bool = Field(
        True,
        description="With partial: false sends partialUpdateObjectNoCreate, which leaves "
        "objects that do not exist alone.",
    )

    @field_validator("object_id_field")
    @classmethod
    def _valid_path(cls, value: str | None) -> str | None:
        if value is not None and not all(value.split(".")):
            raise ValueError(f"invalid field path {value!r}")
        return value

    @field_validator("fields")
    @classmethod
    def _valid_fields(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("fields is empty; use null to send the record's data")
        for name, path in value.items():
            if name == "objectID":
                raise ValueError("'objectID' is set by the sink; use object_id_field")
            if not all(path.split(".")):
                raise ValueError(f"field {name!r}: invalid field path {path!r}")
        return value

    @field_validator("transform")
    @classmethod
    def _valid_transform(cls, value: str | None) -> str | None:
        if value is not None:
            module, _, function = value.partition(":")
            if not module or not function:
                raise ValueError(f"expected 'module:function', got {value!r}")
        return value


class AlgoliaSinkConfig(ConnectorConfig):
    """Settings of the ``algolia`` sink."""

    type: Literal["algolia"] = Field("algolia", description="Connector type: Algolia indexes.")
    app_id: str = Field(min_length=1, description="Algolia application ID (ALGOLIA_APP_ID).")
    api_key: str = Field(
        min_length=1,
        repr=False,
        description="API key with addObject and deleteObject rights (ALGOLIA_ADMIN_KEY); "
        "never logged.",
    )
    hosts: list[str] = Field(
        default_factory=list,
        description="http(s)://host[:port] addresses replacing Algolia's hosts (tests, "
        "proxies), as a list or one comma-separated string; empty: Algolia's own, with its "
        "fallbacks.",
    )
    indexes: dict[str, AlgoliaIndexConfig] = Field(
        description="Stream (table) -> {index: name, object_id_field: path (default: the "
        "record key), fields: {attribute: path} (default: the data as it is), transform: "
        "'module:function', partial: false, create_if_missing: true}. Records of other "
        "streams are dead-lettered.",
    )
    wait_for_task: bool = Field(
        False,
        description="Return only once Algolia has applied the writes (its task is published).",
    )
    max_objects_per_call: int = Field(
        1000, ge=1, le=100_000, description="Most objects in one batch call (Algolia: 1,000)."
    )
    max_bytes_per_call: int = Field(
        DEFAULT_MAX_BYTES_PER_CALL,
        ge=1024,
        description="Largest batch call body; a larger object alone is dead-lettered.",
    )
    timeout: DurationS = Field(
        10.0, gt=0, description="Longest wait for an answer; past it the batch is retried."
    )
    connect_timeout: DurationS = Field(2.0, gt=0, description="Longest wait to connect.")

    @field_validator("hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        # From an environment variable: "http://a:1,http://b:2", or "" for Algolia's own.
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        for url in value:
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 - raises ValueError on a malformed port
            except ValueError as exc:
                raise ValueError(f"invalid URL {url!r}: {exc}") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL with a host, got {url!r}")
        return value

    @field_validator("indexes")
    @classmethod
    def _some_indexes(cls, value: dict[str, AlgoliaIndexConfig]) -> dict[str, AlgoliaIndexConfig]:
        if not value:
            raise ValueError("at least one stream -> index is needed")
        return value


@dataclass(slots=True)
class _Request:
    """One action of a batch call, for the record at ``index`` of the written batch."""

    index: int
    object_id: str
    body: dict[str, Any]
    size: int


@dataclass(slots=True)
class _Group:
    index_name: str
    action: Action
    requests: list[_Request] = field(default_factory=list)


@dataclass(slots=True)
class ReindexResult:
    """What ``reindex`` did: objects written, and records refused by their position."""

    index: str
    temporary_index: str
    written: int = 0
    failed: dict[int, BaseException] = field(default_factory=dict)


@dataclass(slots=True)
class _Plan:
    groups: list[_Group]
    failed: dict[int, BaseException]


class AlgoliaSink:
    """Writes records to Algolia indexes; see the module docstring for what each answer means."""

    config_model: ClassVar[type[AlgoliaSinkConfig]] = AlgoliaSinkConfig

    def __init__(self, config: AlgoliaSinkConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, AlgoliaSinkConfig):
            config = AlgoliaSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        self._where = f"algolia {name!r} (app {config.app_id})"
        self._transforms = {
            stream: _load_transform(settings.transform, f"indexes.{stream}.transform")
            for stream, settings in config.indexes.items()
            if settings.transform is not None
        }
        self._client: SearchClient | None = None

    async def open(self) -> None:
        """Create the client (connections open lazily). Nothing is sent: the key may lack the
        rights for any harmless request."""
        if self._client is not None:
            return
        self._client = build_client(
            self.config.app_id,
            self.config.api_key,
            hosts=self.config.hosts,
            connect_timeout_s=self.config.connect_timeout,
            timeout_s=self.config.timeout,
        )

    async def write(self, records: Sequence[Record]) -> WriteResult:
        """Send ``records`` as one batch call per index and action (more past the limits).

        Raises ``RetryableError`` on 429 (with ``delay_s``), 5xx and timeouts,
        ``ConfigRefused`` on 401/403, ``ConnectionFailed`` on connection errors, and
        ``PermanentError`` when a call of several objects is refused without naming one.
        Records of unknown streams, records whose transform fails, objects too large on
        their own and objects Algolia's answer names are reported in ``WriteResult.failed``.
        """
        client = self._client
        if client is None:
            raise ConnectionClosed(f"{self._where}: not open")
        plan = self._plan(records)
        tasks: list[tuple[str, int]] = []
        for group in plan.groups:
            for chunk in self._chunks(group, plan.failed):
                task_id = await self._send(client, group, chunk, plan.failed)
                if task_id is not None:
                    tasks.append((group.index_name, task_id))
        if self.config.wait_for_task:
            for index_name, task_id in tasks:
                await self._wait(client, index_name, task_id)
        return WriteResult(failed=plan.failed)

    async def close(self) -> None:
        """Close the client's connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _wait(self, client: SearchClient, index_name: str, task_id: int) -> None:
        async def wait() -> Any:
            return await client.wait_for_task(index_name, task_id)

        await self._call(wait)

    async def reindex(
        self, stream: str, records: Iterable[Record] | AsyncIterable[Record]
    ) -> ReindexResult:
        """Rebuild the index of ``stream`` from ``records`` (Algolia's replace-all pattern).

        The objects go to a temporary index ``<index>_tmp_<unix time>`` that first gets the
        real index's settings, rules and synonyms; once every write is published the settings
        are copied again (changes made meanwhile) and the temporary index is moved onto the
        real one in one step, so searches never see a partial index. Memory holds one call's
        objects at a time. Deletes among ``records`` are skipped.

        Raises what ``write`` raises; the temporary index is deleted then and the real index
        is left as it was. Records refused on their own are returned in ``failed`` (by their
        position in ``records``) and left out of the index.
        """
        client = self._client
        if client is None:
            raise ConnectionClosed(f"{self._where}: not open")
        settings = self.config.indexes.get(stream)
        if settings is None:
            raise ConfigError(f"{self._where}: stream {stream!r} has no index")
        index_name = settings.index
        temporary = f"{index_name}_tmp_{int(time.time())}"
        full = settings.model_copy(update={"partial": False})
        result = ReindexResult(index_name, temporary)
        try:
            await self._copy_scope(client, index_name, temporary)
            chunk: list[Record] = []
            position = 0
            async for record in _aiter(records):
                position += 1
                if record.op == "delete":
                    continue
                chunk.append(record)
                if len(chunk) >= self.config.max_objects_per_call:
                    await self._rebuild_chunk(client, full, temporary, chunk, position, result)
                    chunk = []
            if chunk:
                await self._rebuild_chunk(client, full, temporary, chunk, position, result)
            await self._copy_scope(client, index_name, temporary)
            moved = await self._call(
                lambda: client.operation_index(
                    temporary, {"operation": "move", "destination": index_name}
                )
            )
            await self._wait(client, temporary, int(moved.task_id))
        except Exception:
            with contextlib.suppress(Exception):
                await self._call(lambda: client.delete_index(temporary))
            raise
        log.info(
            "algolia_reindexed",
            sink=self.name,
            index=index_name,
            objects=result.written,
            failed=len(result.failed),
        )
        return result

    async def _copy_scope(self, client: SearchClient, source: str, destination: str) -> None:
        params = {"operation": "copy", "destination": destination, "scope": list(_COPY_SCOPE)}
        copied = await self._call(lambda: client.operation_index(source, params))
        await self._wait(client, destination, int(copied.task_id))

    async def _rebuild_chunk(
        self,
        client: SearchClient,
        settings: AlgoliaIndexConfig,
        temporary: str,
        chunk: list[Record],
        end: int,
        result: ReindexResult,
    ) -> None:
        """Write ``chunk`` (the records before position ``end``) to the temporary index."""
        start = end - len(chunk)
        failed: dict[int, BaseException] = {}
        group = _Group(temporary, "addObject")
        for offset, record in enumerate(chunk):
            try:
                _, request = self._request(start + offset, record, settings)
            except Exception as exc:
                failed[start + offset] = self._permanent(f"record {record.key!r}: {exc}", exc)
                continue
            group.requests.append(request)
        for requests in self._chunks(group, failed):
            await self._send_halving(client, group, requests, failed, result)
        result.failed.update(failed)

    async def _send_halving(
        self,
        client: SearchClient,
        group: _Group,
        requests: list[_Request],
        failed: dict[int, BaseException],
        result: ReindexResult,
    ) -> None:
        """Send ``requests``; when Algolia refuses the call, send each half on its own until
        the refused objects are alone (what the runtime's bisection does for ``write``)."""
        refused_before = len(failed)
        try:
            task_id = await self._send(client, group, requests, failed)
        except PermanentError:
            middle = len(requests) // 2
            await self._send_halving(client, group, requests[:middle], failed, result)
            await self._send_halving(client, group, requests[middle:], failed, result)
            return
        if task_id is not None:
            await self._wait(client, group.index_name, task_id)
            result.written += len(requests) - (len(failed) - refused_before)

    # -- planning the calls ---------------------------------------------------------------

    def _plan(self, records: Sequence[Record]) -> _Plan:
        """Group ``records`` by (index, action), after reducing each key's records to the ones
        that decide the end state (see the module docstring)."""
        failed: dict[int, BaseException] = {}
        # (index name, objectID) -> the kept actions, in order: [(action, request)].
        kept: dict[tuple[str, str], list[tuple[Action, _Request]]] = {}
        for position, record in enumerate(records):
            settings = self.config.indexes.get(record.stream)
            if settings is None:
                known = ", ".join(sorted(self.config.indexes))
                failed[position] = self._permanent(
                    f"stream {record.stream!r} has no index; configured streams: {known}"
                )
                continue
            try:
                action, request = self._request(position, record, settings)
            except Exception as exc:
                failed[position] = self._permanent(
                    f"record {record.key!r} of stream {record.stream!r}: {exc}", exc
                )
                continue
            slot = kept.setdefault((settings.index, request.object_id), [])
            if action in ("deleteObject", "addObject"):
                slot.clear()  # what came before no longer matters to the end state
            slot.append((action, request))
        return _Plan(self._groups(kept), failed)

    @staticmethod
    def _groups(kept: dict[tuple[str, str], list[tuple[Action, _Request]]]) -> list[_Group]:
        groups: dict[tuple[str, Action], _Group] = {}
        for (index_name, _), actions in kept.items():
            for action, request in actions:
                group = groups.get((index_name, action))
                if group is None:
                    group = groups[(index_name, action)] = _Group(index_name, action)
                group.requests.append(request)
        # Deletes first: a delete kept with later saves of its key must land before them;
        # full saves before partial ones for the same reason.
        rank = {"deleteObject": 0, "addObject": 1}
        return sorted(groups.values(), key=lambda g: rank.get(g.action, 2))

    def _request(
        self, position: int, record: Record, settings: AlgoliaIndexConfig
    ) -> tuple[Action, _Request]:
        object_id = record.key
        if settings.object_id_field is not None:
            value = _get_path(record.data, settings.object_id_field)
            if value is not None:
                object_id = key_text(value) or object_id  # an object: canonical JSON
            elif record.op != "delete":
                raise ValueError(f"object_id_field {settings.object_id_field!r} is missing")
        if record.op == "delete":
            body = {"action": "deleteObject", "body": {"objectID": object_id}}
            return "deleteObject", _request(position, object_id, body)
        obj = self._object(record, settings)
        obj["objectID"] = object_id
        action: Action = "addObject"
        if settings.partial:
            action = (
                "partialUpdateObject"
                if settings.create_if_missing
                else "partialUpdateObjectNoCreate"
            )
        return action, _request(position, object_id, {"action": action, "body": obj})

    def _object(self, record: Record, settings: AlgoliaIndexConfig) -> dict[str, Any]:
        if settings.fields is None:
            obj = dict(record.data)
        else:
            obj = {name: _get_path(record.data, path) for name, path in settings.fields.items()}
        transform = self._transforms.get(record.stream)
        if transform is not None:
            obj = transform(obj)
            if not isinstance(obj, dict):
                raise TypeError(f"transform {settings.transform} returned {type(obj).__name__}")
        return obj

    def _chunks(self, group: _Group, failed: dict[int, BaseException]) -> list[list[_Request]]:
        """Greedy split under both limits; an object too large alone fails."""
        max_objects = self.config.max_objects_per_call
        max_bytes = self.config.max_bytes_per_call
        chunks: list[list[_Request]] = []
        current: list[_Request] = []
        size = _ENVELOPE_BYTES
        for request in group.requests:
            extra = request.size + (_SEPARATOR_BYTES if current else 0)
            if _ENVELOPE_BYTES + request.size > max_bytes:
                failed[request.index] = self._permanent(
                    f"object {request.object_id!r} is {request.size} bytes, over "
                    f"max_bytes_per_call ({max_bytes})"
                )
                continue
            if current and (len(current) >= max_objects or size + extra > max_bytes):
                chunks.append(current)
                current, size, extra = [], _ENVELOPE_BYTES, request.size
            current.append(request)
            size += extra
        if current:
            chunks.append(current)
        return chunks

    # -- sending --------------------------------------------------------------------------

    async def _send(
        self,
        client: SearchClient,
        group: _Group,
        chunk: list[_Request],
        failed: dict[int, BaseException],
    ) -> int | None:
        """One batch call; its task ID, or ``None`` when every object of it was refused.

        When Algolia refuses the call and its message names the object (``objectID=...``,
        ``Record <id> ...``, ``position <n>``), that record is reported in ``failed`` and
        the call sent again without it; a refusal naming no object of a call of several
        raises ``PermanentError`` (the runtime bisects).
        """
        while chunk:
            params = {"requests": [request.body for request in chunk]}
            try:
                response = await self._call(partial(client.batch, group.index_name, params))
            except RequestException as exc:
                where = f"index {group.index_name!r}, {len(chunk)} x {group.action}"
                error = self._permanent(f"{where}: HTTP {exc.status_code}: {self._message(exc)}")
                named = chunk[0] if len(chunk) == 1 else _named_request(chunk, self._message(exc))
                log.warning(
                    "algolia_rejected",
                    sink=self.name,
                    index=group.index_name,
                    action=group.action,
                    status=exc.status_code,
                    objects=len(chunk),
                    named=named is not None,
                )
                if named is None:
                    raise error from None  # the runtime bisects to the refused record
                failed[named.index] = error
                chunk = [request for request in chunk if request is not named]
                continue
            return int(response.task_id)
        return None

    async def _call(self, call: Callable[[], Any]) -> Any:
        """Run one client call, turning what went wrong into the runtime's error classes.

        A ``RequestException`` with a 4xx status other than 401/403/429 is re-raised for the
        caller to decide (the data was refused).
        """
        reset_last_response()
        try:
            return await call()
        except RequestException as exc:
            status = exc.status_code
            what = f"{self._where}: HTTP {status}"
            if status == 429:
                delay_s = _retry_after_s(last_response())
                raise RetryableError(
                    f"{what}: rate limited: {self._message(exc)}", delay_s=delay_s
                ) from None
            if status in _AUTH_STATUSES:
                raise ConfigRefused(
                    f"{what}: Algolia refused the credentials; check app_id and api_key"
                ) from None
            if status is None or status >= 500:
                raise RetryableError(f"{what}: {self._message(exc)}") from None
            raise
        except AlgoliaUnreachableHostException:
            raise RetryableError(f"{self._where}: {self._unreachable()}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionFailed(f"{self._where}: {type(exc).__name__}: {exc}") from exc
        except AlgoliaException as exc:
            # e.g. wait_for_task gave up polling: the write may still be applied later.
            raise RetryableError(f"{self._where}: {self._message(exc)}") from None
        except ValidationError as exc:
            raise RetryableError(
                f"{self._where}: unexpected answer from Algolia ({exc.error_count()} errors)"
            ) from None

    def _unreachable(self) -> str:
        response = last_response()
        if response is None:
            return "no host to call"
        if response.is_timed_out_error:
            return f"no answer within {self.config.timeout:g}s"
        if response.status_code is not None:
            return (
                f"HTTP {response.status_code}: {self._scrub(str(response.data)[:_MESSAGE_CHARS])}"
            )
        return f"no answer: {self._scrub(str(response.error_message))}"

    def _message(self, exc: Any) -> str:
        return self._scrub(str(getattr(exc, "message", exc))[:_MESSAGE_CHARS])

    def _scrub(self, text: str) -> str:
        """``text`` (Algolia's answer) without our API key, should it quote it."""
        return text.replace(self.config.api_key, MASK)

    def _permanent(self, message: str, cause: BaseException | None = None) -> PermanentError:
        error = PermanentError(f"{self._where}: {message}")
        error.__cause__ = cause
        return error


_NAMED_OBJECT = (
    re.compile(
        r"objectID\s*[=:]\s*\"?([^\s\",]+)"
    ),  # "Record at the position 3 objectID=x is too big"
    re.compile(r"\bRecord (\S+) is\b"),
)
_NAMED_POSITION = re.compile(r"\bposition (\d+)\b")


def _named_request(chunk: list[_Request], message: str) -> _Request | None:
    """The request of ``chunk`` that Algolia's refusal ``message`` names, if it names one."""
    for pattern in _NAMED_OBJECT:
        for found in pattern.findall(message):
            for request in chunk:
                if request.object_id == found:
                    return request
    position = _NAMED_POSITION.search(message)
    if position is not None and int(position.group(1)) < len(chunk):
        return chunk[int(position.group(1))]
    return None


def _request(position: int, object_id: str, body: dict[str, Any]) -> _Request:
    """``body`` made of JSON types only (dates as ISO text, decimals as numbers, integers of
    any size exact: ``core.jsonvalue``), which the client needs, and its size as the client
    will send it. Raises ``TypeError`` for a value that has no JSON form, or a decimal the
    client could only send rounded."""
    plain = jsonvalue.loads(jsonvalue.dumps(body, default=_json_default))
    return _Request(position, object_id, plain, len(json.dumps(plain, default=_refuse_rounding)))


def _refuse_rounding(value: Any) -> Any:
    # jsonvalue keeps a decimal as Decimal only when no float prints as the same number.
    raise TypeError(
        f"{value} cannot be sent exactly: the Algolia client writes numbers as doubles "
        "(send it as text)"
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")


async def _aiter(records: Iterable[Record] | AsyncIterable[Record]) -> AsyncIterator[Record]:
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record


def _get_path(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _load_transform(spec: str, path: str) -> Transform:
    module_name, _, attribute = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"transform {spec!r} cannot be loaded: {exc}", path=path) from exc
    if not callable(function):
        raise ConfigError(f"transform {spec!r} is not callable", path=path)
    return function  # type: ignore[no-any-return]


def _retry_after_s(response: Any) -> float | None:
    """Seconds from the answer's ``Retry-After`` header, if any."""
    headers = getattr(response, "headers", None) or {}
    return retry_after_s(str(headers.get("retry-after") or headers.get("Retry-After") or ""))
