"""``webhook``: a sink that POSTs records as JSON to an HTTP endpoint (seed 000's WebhookWriter).

In the default ``seed`` body each stream of a batch becomes one POST of
``{"messages": [...], "queueType": stream, "timestamp": ISO UTC, "count": n}``, as the seed
posts once per queue type; a stream too large for ``max_batch_bytes`` is split over several
POSTs. Every POST carries an ``Idempotency-Key`` computed from its content only, so the
runtime's retry of a batch repeats the same keys and the receiver can drop what it already has.

What the answer means:

- 2xx: written.
- timeout, connection error, 408, 425, 429, 5xx: ``RetryableError`` (``delay_s`` from
  ``Retry-After``); the runtime retries the whole batch, then rolls it back and pauses.
- 401, 403, 407: ``ConfigRefused``; the receiver refuses our credentials, which retrying
  cannot fix: the pipeline stops and says why (its batch goes back to the source).
- 404, 405, 410, 3xx: ``ConnectionFailed``; the address is wrong or not there yet (a
  receiver being deployed answers 404 for a while), not the data: the pipeline pauses and
  tries again.
- any other 4xx: the data is refused. A POST of one record reports it in
  ``WriteResult.failed`` with a ``PermanentError`` quoting the status and the start of the
  response (it is dead-lettered with them); a POST of several raises that ``PermanentError``,
  so the runtime bisects the batch down to the records the receiver refuses and the rest is
  delivered (DESIGN.md guarantee 3).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import orjson
import structlog
from pydantic import Field, field_validator, model_validator

from syncworker import __version__
from syncworker.connectors.retry_after import retry_after_s
from syncworker.coord import current_fencing_token
from syncworker.core import jsonvalue
from syncworker.core.durations import DurationS
from syncworker.core.protocols import ConnectorConfig, WriteResult
from syncworker.core.record import Record
from syncworker.errors import (
    ConfigRefused,
    ConnectionClosed,
    ConnectionFailed,
    PermanentError,
    RetryableError,
)
from syncworker.observe.logging import MASK, redact_url

log = structlog.get_logger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Syncworker-Signature"
FENCING_HEADER = "X-Fencing-Token"
PLACEHOLDERS = frozenset({"$messages", "$stream", "$count", "$timestamp"})

ERROR_BODY_BYTES = 2048
# A success body is read (so the connection is kept alive) up to this size, then dropped.
_SUCCESS_BODY_BYTES = 64 * 1024
# Secrets shorter than this are not searched for in response bodies: masking every "1" or
# "abc" would garble the message and hides little.
_MIN_SCRUB_CHARS = 4
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (IDEMPOTENCY_HEADER, SIGNATURE_HEADER, FENCING_HEADER, "Host", "Content-Length")
) | {"transfer-encoding", "connection"}
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PLACEHOLDER_LIKE = re.compile(r"^\$[A-Za-z_]+$")
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# 401/403/407 say our credentials are wrong: every record would be refused the same way and
# no retry can fix it, so ConfigRefused stops the pipeline with the reason (its batch goes back
# to the source untouched) instead of pausing and retrying for ever (issue 9 point 1).
_AUTH_STATUSES = frozenset({401, 403, 407})
# A wrong path or method answers every POST the same way: not bad data. Kept as an outage
# (ConnectionFailed: pause, retry) rather than a refusal: a 404 is also what a receiver answers
# while it is being deployed or behind a proxy whose route is not up yet, and it resolves
# itself. 5xx and 429 are the receiver's own trouble or load: transient by definition.
_ADDRESS_STATUSES = frozenset({404, 405, 410})


class WebhookSinkConfig(ConnectorConfig):
    """Settings of the ``webhook`` sink."""

    type: Literal["webhook"] = Field("webhook", description="Connector type: HTTP POST of JSON.")
    url: str = Field(description="http:// or https:// address every POST goes to.")
    timeout: DurationS = Field(
        10.0,
        gt=0,
        description="How long to wait to connect, to send and for each part of the answer "
        "(the seed's 10 seconds); past it the batch is retried.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        repr=False,
        description='Extra request headers, e.g. Authorization: "Bearer ${WEBHOOK_TOKEN}". '
        "Every value is taken for a secret and masked wherever a receiver's answer quotes it "
        "(errors, logs, dead letters), except those of the headers named in public_headers.",
    )
    public_headers: list[str] = Field(
        default_factory=list,
        description="Names of headers in `headers` whose values are not secret (e.g. Accept, "
        "X-Tenant): a receiver's answer that quotes them is kept as it is.",
    )
    body: Literal["seed", "records", "template"] = Field(
        "seed",
        description="'seed': one POST per stream of {messages: [data...], queueType: stream, "
        "timestamp, count} (a delete is {key, deleted: true}); 'records': one POST of "
        "{records: [{key, op, stream, data}], count}; 'template': one POST per stream of "
        "`template` with its placeholders filled.",
    )
    template: dict[str, Any] | None = Field(
        None,
        description="The body when body is 'template': a JSON object whose string values "
        "'$messages', '$stream', '$count' or '$timestamp' (the whole value, at any depth) are "
        "replaced by the messages list, the stream name, the number of messages and the ISO "
        "UTC time. Nothing is evaluated.",
    )
    signing_secret: str | None = Field(
        None,
        repr=False,
        description="Signs each POST: header X-Syncworker-Signature: t=<unix time>,v1=<hex "
        "HMAC-SHA256 of '<t>.<body>' with this secret> (as Stripe does).",
    )
    max_batch_bytes: int = Field(
        5 * 1024 * 1024,
        ge=1024,
        description="Largest request body; a stream's records are split over several POSTs "
        "to stay under it. A single record larger than this is dead-lettered.",
    )

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the sink and cannot be configured")
            if any(c in header_value for c in "\r\n\x00"):
                # The value is not quoted: it may be a credential.
                raise ValueError(f"header {name!r}: value must not contain CR, LF or NUL")
        return value

    @model_validator(mode="after")
    def _public_headers_are_configured(self) -> WebhookSinkConfig:
        configured = {name.lower() for name in self.headers}
        for name in self.public_headers:
            if name.lower() not in configured:
                raise ValueError(f"public_headers: {name!r} is not one of the configured headers")
        return self

    @field_validator("template")
    @classmethod
    def _valid_template(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            _check_placeholders(value)
        return value

    @model_validator(mode="after")
    def _template_matches_body(self) -> WebhookSinkConfig:
        if self.body == "template" and self.template is None:
            raise ValueError("body 'template' needs a `template`")
        if self.body != "template" and self.template is not None:
            raise ValueError("`template` is only used with body: template")
        return self


@dataclass(slots=True)
class _Item:
    """One record as it appears in a body, and in canonical form for the Idempotency-Key."""

    index: int
    body: bytes
    canonical: bytes


@dataclass(slots=True)
class _Post:
    stream: str | None
    indexes: list[int]
    body: bytes
    idempotency_key: str


class WebhookSink:
    """POSTs records to ``url``; see the module docstring for what each answer means."""

    config_model: ClassVar[type[WebhookSinkConfig]] = WebhookSinkConfig

    def __init__(self, config: WebhookSinkConfig | dict[str, Any], *, name: str) -> None:
        if not isinstance(config, WebhookSinkConfig):
            config = WebhookSinkConfig.model_validate(config)
        self.name = name
        self.config = config
        self._where = f"webhook {name!r} ({redact_url(config.url)})"
        self._secret = config.signing_secret.encode() if config.signing_secret else None
        self._scrub_values = _secret_values(config)
        self._client: httpx.AsyncClient | None = None

    async def open(self) -> None:
        """Create the HTTP client (connections open lazily and are kept alive between POSTs).

        Nothing is sent: a webhook has no harmless request to probe it with.
        """
        if self._client is not None:
            return
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"syncworker/{__version__}",
            **self.config.headers,
        }
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.config.timeout), follow_redirects=False
        )

    async def write(self, records: Sequence[Record]) -> WriteResult:
        """POST ``records`` (one POST per stream in the seed and template bodies, more when a
        body would exceed ``max_batch_bytes``), one after the other.

        Raises ``RetryableError`` on a timeout, a connection error, 408/425/429 or 5xx,
        ``ConfigRefused`` on 401/403/407 (the pipeline stops), and ``ConnectionFailed`` on
        404/405/410 or a redirect; the POSTs already accepted are sent
        again with the retry, under the same Idempotency-Key. Records of a POST answered with
        another 4xx, and records that cannot be serialized or alone exceed
        ``max_batch_bytes``, are reported in ``WriteResult.failed``.
        """
        client = self._client
        if client is None:
            raise ConnectionClosed(f"{self._where}: not open")
        posts, failed = self._plan(records)
        for post in posts:
            rejection = await self._send(client, post)
            if rejection is not None:
                for index in post.indexes:
                    failed[index] = rejection
        return WriteResult(failed=failed)

    async def close(self) -> None:
        """Close the kept-alive connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- building the POSTs ---------------------------------------------------------------

    def _plan(self, records: Sequence[Record]) -> tuple[list[_Post], dict[int, BaseException]]:
        """The POSTs for ``records``, in stream order of first appearance, and the records that
        cannot be sent at all."""
        timestamp = _iso_now()
        failed: dict[int, BaseException] = {}
        per_stream = self.config.body != "records"
        groups: dict[str | None, list[_Item]] = {}
        for index, record in enumerate(records):
            try:
                # Exact: integers beyond 64 bits and Decimal keep their digits.
                item = _Item(index, jsonvalue.dumps(self._item(record)), _canonical(record))
            except (orjson.JSONEncodeError, TypeError) as exc:
                failed[index] = self._permanent(
                    f"record {record.key!r} is not JSON-serializable: {exc}", exc
                )
                continue
            groups.setdefault(record.stream if per_stream else None, []).append(item)
        posts: list[_Post] = []
        for stream, items in groups.items():
            for chunk in self._chunks(stream, items, timestamp):
                self._fit(stream, chunk, timestamp, posts, failed)
        return posts, failed

    def _item(self, record: Record) -> Any:
        if self.config.body == "records":
            return {
                "key": record.key,
                "op": record.op,
                "stream": record.stream,
                "data": record.data,
            }
        if record.op == "delete":
            return {"key": record.key, "deleted": True}
        return record.data

    def _chunks(self, stream: str | None, items: list[_Item], timestamp: str) -> list[list[_Item]]:
        """Greedy split under ``max_batch_bytes``, from each item's size and the envelope's."""
        limit = self.config.max_batch_bytes
        envelope = len(self._render(stream, [], timestamp, count=len(items)))
        chunks: list[list[_Item]] = []
        current: list[_Item] = []
        size = envelope
        for item in items:
            extra = len(item.body) + (1 if current else 0)
            if current and size + extra > limit:
                chunks.append(current)
                current, size, extra = [], envelope, len(item.body)
            current.append(item)
            size += extra
        if current:
            chunks.append(current)
        return chunks

    def _fit(
        self,
        stream: str | None,
        chunk: list[_Item],
        timestamp: str,
        posts: list[_Post],
        failed: dict[int, BaseException],
    ) -> None:
        """Render ``chunk``; halve it while the body is still too large (a template may hold
        ``$messages`` twice), and fail a record that is too large on its own."""
        body = self._render(stream, chunk, timestamp, count=len(chunk))
        limit = self.config.max_batch_bytes
        if len(body) <= limit:
            key = self._idempotency_key(chunk)
            posts.append(_Post(stream, [item.index for item in chunk], body, key))
        elif len(chunk) == 1:
            failed[chunk[0].index] = self._permanent(
                f"a POST of this record alone is {len(body)} bytes, over max_batch_bytes ({limit})"
            )
        else:
            middle = len(chunk) // 2
            self._fit(stream, chunk[:middle], timestamp, posts, failed)
            self._fit(stream, chunk[middle:], timestamp, posts, failed)

    def _render(self, stream: str | None, items: list[_Item], timestamp: str, count: int) -> bytes:
        messages = orjson.Fragment(b"[" + b",".join(item.body for item in items) + b"]")
        if self.config.body == "records":
            return orjson.dumps({"records": messages, "count": count})
        if self.config.body == "seed":
            return orjson.dumps(
                {"messages": messages, "queueType": stream, "timestamp": timestamp, "count": count}
            )
        values = {
            "$messages": messages,
            "$stream": stream,
            "$count": count,
            "$timestamp": timestamp,
        }
        return orjson.dumps(_fill(self.config.template, values))

    def _idempotency_key(self, chunk: list[_Item]) -> str:
        # The canonical form holds each record's stream, key, op and data (sorted keys), and
        # not the timestamp, so a retry of the same records gets the same key.
        digest = hashlib.sha256(self.config.body.encode())
        for item in chunk:
            digest.update(item.canonical)
        return digest.hexdigest()

    # -- sending --------------------------------------------------------------------------

    async def _send(self, client: httpx.AsyncClient, post: _Post) -> PermanentError | None:
        """POST once; ``None`` when accepted, the error for its records when refused."""
        headers = self._headers(post)
        try:
            async with client.stream(
                "POST", self.config.url, content=post.body, headers=headers
            ) as response:
                status = response.status_code
                if 200 <= status < 300:
                    await _drain(response, _SUCCESS_BODY_BYTES)
                    return None
                answer = await _read_prefix(response, ERROR_BODY_BYTES)
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"{self._where}: no answer within {self.config.timeout:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableError(f"{self._where}: {type(exc).__name__}: {exc}") from exc
        return self._refused(post, status, response.headers, answer)

    def _headers(self, post: _Post) -> dict[str, str]:
        headers = {IDEMPOTENCY_HEADER: post.idempotency_key}
        if self._secret is not None:
            timestamp = str(int(time.time()))
            signed = hmac.new(self._secret, f"{timestamp}.".encode() + post.body, hashlib.sha256)
            headers[SIGNATURE_HEADER] = f"t={timestamp},v1={signed.hexdigest()}"
        token = current_fencing_token()
        if token is not None:
            headers[FENCING_HEADER] = str(token)
        return headers

    def _refused(
        self, post: _Post, status: int, headers: httpx.Headers, answer: str
    ) -> PermanentError:
        """Raise for a status that is about the sink, return the error for the data."""
        what = f"{self._where}: HTTP {status}"
        quoted = f"{what}: {self._scrub(answer)}" if answer else what
        if status >= 500 or status in _RETRYABLE_STATUSES:
            raise RetryableError(quoted, delay_s=retry_after_s(headers.get("retry-after")))
        if status in _AUTH_STATUSES:
            # The reason is the receiver's answer, scrubbed of every configured secret.
            raise ConfigRefused(f"{quoted}: the receiver refused the credentials; check headers")
        if status in _ADDRESS_STATUSES:
            raise ConnectionFailed(f"{what}: nothing to POST to at this address; check url")
        if 300 <= status < 400:
            location = redact_url(headers.get("location", "?"))
            raise ConnectionFailed(f"{what} redirect to {location}; set url to the final address")
        log.warning(
            "webhook_rejected",
            sink=self.name,
            status=status,
            stream=post.stream,
            records=len(post.indexes),
        )
        error = self._permanent(quoted)
        if len(post.indexes) > 1:
            raise error  # the runtime bisects to the records the receiver refuses
        return error

    def _permanent(self, message: str, cause: BaseException | None = None) -> PermanentError:
        if not message.startswith(self._where):
            message = f"{self._where}: {message}"
        error = PermanentError(message)
        error.__cause__ = cause
        return error

    def _scrub(self, text: str) -> str:
        """``text`` (a receiver's answer) without our secrets, should it echo the request."""
        for secret in self._scrub_values:
            text = text.replace(secret, MASK)
        return redact_url(text)


def _canonical(record: Record) -> bytes:
    return jsonvalue.dumps([record.stream, record.key, record.op, record.data], sort_keys=True)


def _iso_now() -> str:
    """UTC time as JavaScript's ``toISOString`` writes it (what the seed sent)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """``node`` with every string value that is a placeholder replaced; keys stay as they are."""
    if isinstance(node, str):
        return values.get(node, node)
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, values) for value in node]
    return node


def _check_placeholders(node: Any) -> None:
    if isinstance(node, str):
        if _PLACEHOLDER_LIKE.match(node) and node not in PLACEHOLDERS:
            known = ", ".join(sorted(PLACEHOLDERS))
            raise ValueError(f"unknown placeholder {node!r} in template; expected one of {known}")
    elif isinstance(node, dict):
        for value in node.values():
            _check_placeholders(value)
    elif isinstance(node, list):
        for value in node:
            _check_placeholders(value)


def _secret_values(config: WebhookSinkConfig) -> list[str]:
    """What must never be quoted back: the signing secret and every configured header value
    but those of ``public_headers`` (whole, and without their scheme: 'Bearer abc' is also
    masked as 'abc'). Every value, not only those of secret-looking names: receivers
    authenticate with any name (X-Auth, X-Signature, Api-Auth...)."""
    values: list[str] = []
    if config.signing_secret:
        values.append(config.signing_secret)
    public = {name.lower() for name in config.public_headers}
    for name, value in config.headers.items():
        if name.lower() not in public:
            values.append(value)
            _, _, credentials = value.partition(" ")
            values.append(credentials.strip())
    # Longest first, so a whole value is masked before a part of it.
    return sorted({v for v in values if len(v) >= _MIN_SCRUB_CHARS}, key=len, reverse=True)


async def _drain(response: httpx.Response, limit_bytes: int) -> None:
    """Read a small body to the end, so the connection goes back to the pool; a large one is
    left unread and its connection closed."""
    read_bytes = 0
    async for chunk in response.aiter_raw():
        read_bytes += len(chunk)
        if read_bytes > limit_bytes:
            return


async def _read_prefix(response: httpx.Response, limit_bytes: int) -> str:
    """The first ``limit_bytes`` of the body as text; the rest is never read into memory."""
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > limit_bytes:
            return data[:limit_bytes].decode("utf-8", "replace") + " [truncated]"
    return data.decode("utf-8", "replace")
