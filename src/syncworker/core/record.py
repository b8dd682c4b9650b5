"""Record and Batch: what moves through a pipeline."""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from syncworker.core import jsonvalue

log = structlog.get_logger(__name__)

Op = Literal["upsert", "delete"]


@dataclass(slots=True)
class Record:
    """One unit moved from a source to sinks.

    ``key`` is the stable identity sinks upsert or delete by; ``stream`` is the logical name
    (a queue, a table, a report) the record came from; ``meta`` carries the source position,
    delivery attempts and received time and is never written by sinks unless asked.
    """

    key: str
    data: dict[str, Any]
    stream: str = "default"
    op: Op = "upsert"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """Records claimed together from one source and acknowledged together.

    ``token`` is private to the source that produced the batch (claim id, delivery tags, ...);
    the runtime hands the same object back to ``ack``/``nack`` and never looks inside.
    """

    records: list[Record]
    token: Any = None

    def __len__(self) -> int:
        return len(self.records)


def key_from_bytes(raw: bytes) -> str:
    """A stable key for a payload that carries none of its own: a hash of its bytes."""
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


WrapReason = Literal["empty", "not_json", "not_object", "invalid_utf8", "too_deep"]
"""Why a payload was wrapped (the wrapper's ``reason``)."""

# Wrapping keeps everything but says so loudly only when the payload's bytes changed form
# (base64) or it was JSON we could not read; plain text, arrays and scalars are the seed's
# documented case and would flood the log of a queue that carries them by design.
_LOUD_REASONS = frozenset({"invalid_utf8", "too_deep"})


@dataclass(frozen=True, slots=True)
class Decoded:
    """A payload read by ``decode``: ``data`` (the object, or the wrapper) and, when
    wrapped, ``reason`` and ``detail`` (the human explanation, for the log)."""

    data: dict[str, Any]
    reason: WrapReason | None = None
    detail: str = ""


def wrap(raw: bytes, reason: WrapReason, received_at: str | float | None = None) -> dict[str, Any]:
    """The one wrapper shape for a payload that is not a readable JSON object::

        {"wrapped": true, "reason": "not_json", "raw": "<payload>", "encoding": "utf-8",
         "received_at": "2026-12-01T21:00:00+00:00"}

    ``raw`` is the payload as text when it is valid UTF-8 (``encoding: "utf-8"``), else the
    base64 of its bytes (``encoding: "base64"``): every byte is kept. ``received_at`` is ISO
    text (unix seconds are converted; default now). Only strings and ``true``, so every sink
    and the dead letters can hold it.
    """
    if not isinstance(received_at, str):
        seconds = time.time() if received_at is None else received_at
        received_at = datetime.fromtimestamp(seconds, UTC).isoformat()
    try:
        text, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return {
        "wrapped": True,
        "reason": reason,
        "raw": text,
        "encoding": encoding,
        "received_at": received_at,
    }


def decode(raw: bytes, received_at: str | float | None = None) -> Decoded:
    """A queued payload as a JSON object with exact numbers (``core.jsonvalue``), or wrapped
    (``wrap``) when it is empty, not JSON, not valid UTF-8, not an object (an array, a
    scalar) or nested deeper than the JSON writer goes (253 levels).

    Never raises: a payload the pipeline cannot read still reaches the sinks (and the dead
    letters, if a sink refuses it) instead of blocking the queue or vanishing.
    """
    try:
        data = jsonvalue.loads(raw, writable=True)
    except jsonvalue.UndecodableJSON as exc:
        reason: WrapReason = exc.reason
        if reason == "not_json" and not _is_utf8(raw):
            return _wrapped(raw, "invalid_utf8", _utf8_detail(raw), received_at)
        return _wrapped(raw, reason, str(exc), received_at)
    except (ValueError, RecursionError, MemoryError) as exc:  # never raise, whatever the input
        return _wrapped(raw, "not_json", f"{type(exc).__name__}: {exc}", received_at)
    if type(data) is not dict:
        return _wrapped(raw, "not_object", f"a JSON {_json_type(data)}", received_at)
    return Decoded(data)


def decode_payload(raw: bytes, received_at: str | float | None = None) -> dict[str, Any]:
    """``decode(raw, received_at).data``."""
    return decode(raw, received_at).data


def record_key(data: dict[str, Any], raw: bytes, key_field: str | None) -> str:
    """The key of a decoded payload: ``data[key_field]`` when configured and present (text as
    it is, an object or a list as canonical JSON, other values as ``str``), else a hash of
    ``raw``."""
    if key_field is not None:
        key = key_text(data.get(key_field))
        if key is not None:
            return key
    return key_from_bytes(raw)


def decoded_key(decoded: Decoded, raw: bytes, key_field: str | None) -> str:
    """``record_key`` of a ``decode`` result. A wrapped payload has no key field, except one
    wrapped as invalid UTF-8: its key field is read with the invalid bytes replaced, so the
    record keeps its id (while its data keeps the bytes)."""
    if decoded.reason is None:
        return record_key(decoded.data, raw, key_field)
    if decoded.reason == "invalid_utf8" and key_field is not None:
        return record_key(_lenient_object(raw), raw, key_field)
    return key_from_bytes(raw)


def key_text(value: Any) -> str | None:
    """A key field's value as a key: ``None`` stays ``None``, text stays as it is, an object
    or a list becomes canonical JSON (sorted keys, compact), anything else ``str``."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, dict | list):
        try:
            return jsonvalue.canonical(value)
        except jsonvalue.JSONValueError:
            return None
    return str(value)


def log_wrapped(decoded: Decoded, record: Record, source: str, **where: Any) -> None:
    """Say that ``record`` carries a wrapped payload: a warning when its bytes changed form
    (base64) or it was JSON we could not read, info for text, arrays and scalars."""
    if decoded.reason is None:
        return
    emit = log.warning if decoded.reason in _LOUD_REASONS else log.info
    emit(
        "payload_wrapped",
        source=source,
        stream=record.stream,
        record_key=record.key,
        reason=decoded.reason,
        detail=decoded.detail,
        encoding=decoded.data["encoding"],
        **where,
    )


def _wrapped(
    raw: bytes, reason: WrapReason, detail: str, received_at: str | float | None
) -> Decoded:
    return Decoded(wrap(raw, reason, received_at), reason, detail)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _utf8_detail(raw: bytes) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 at byte {exc.start}; the payload is kept as base64"
    return "valid UTF-8"


def _lenient_object(raw: bytes) -> dict[str, Any]:
    try:
        value = jsonvalue.loads(raw.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return {}
    return value if type(value) is dict else {}


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"
