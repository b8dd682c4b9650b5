"""Payloads a queue source must deliver one by one, whatever they hold (issue 9 B, C, D): each
becomes one record, exact or wrapped, and none fails the claim or the records around it.

Sources are configured with ``key_field: id``. ``check(records)`` asserts what each payload
of ``PAYLOADS`` (in order) became.
"""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

from syncworker.core.record import Record, key_from_bytes

BIG_TEXT = "x" * 10_000_000
DEEP = b"[" * 100_000 + b"]" * 100_000

PAYLOADS: list[tuple[str, bytes]] = [
    ("before", b'{"id": "before"}'),
    ("not_json", b"plain text"),
    ("invalid_utf8", b'{"id": "u1", "text": "caf\xe9 \xff"}'),
    ("nul_escaped", b'{"id": "n1", "text": "a\\u0000b"}'),
    ("nul_raw", b'{"id": "n2", "text": "a\x00b"}'),
    ("ten_mb", b'{"id": "big", "blob": "' + BIG_TEXT.encode() + b'"}'),
    ("deep", b'{"id": "deep", "v": ' + DEEP + b"}"),
    (
        "big_numbers",
        b'{"id": "num", "n": 123456789012345678901234567890, "m": -18446744073709551617,'
        b' "d": 0.1000000000000000000000001, "e": 1e400, "f": 0.5}',
    ),
    ("array", b"[1, 2]"),
    ("scalar", b"42"),
    ("string", b'"just text"'),
    ("empty", b""),
    ("object_key", b'{"id": {"b": 1, "a": [2]}, "x": 1}'),
    ("after", b'{"id": "after"}'),
]


def _wrapped(record: Record, raw: bytes, reason: str) -> None:
    data = record.data
    assert data["wrapped"] is True, data
    assert data["reason"] == reason
    if data["encoding"] == "base64":
        assert base64.b64decode(data["raw"]) == raw
    else:
        assert data["encoding"] == "utf-8"
        assert data["raw"].encode() == raw
    assert isinstance(data["received_at"], str)
    assert set(data) == {"wrapped", "reason", "raw", "encoding", "received_at"}


def check(records: list[Record]) -> None:
    """Every payload of ``PAYLOADS`` became one record, in order, as expected."""
    assert len(records) == len(PAYLOADS), [r.key for r in records]
    got = dict(zip([name for name, _ in PAYLOADS], records, strict=True))
    raw = dict(PAYLOADS)
    assert got["before"].data == {"id": "before"}
    _wrapped(got["not_json"], raw["not_json"], "not_json")
    assert got["not_json"].key == key_from_bytes(raw["not_json"])
    _wrapped(got["invalid_utf8"], raw["invalid_utf8"], "invalid_utf8")
    assert got["invalid_utf8"].data["encoding"] == "base64"
    assert got["invalid_utf8"].key == "u1"  # the id survives the wrapping
    assert got["nul_escaped"].data == {"id": "n1", "text": "a\x00b"}
    _wrapped(got["nul_raw"], raw["nul_raw"], "not_json")  # a raw control byte is not JSON
    assert got["ten_mb"].data == {"id": "big", "blob": BIG_TEXT}
    _wrapped(got["deep"], raw["deep"], "too_deep")
    numbers: dict[str, Any] = got["big_numbers"].data
    assert numbers == {
        "id": "num",
        "n": 123456789012345678901234567890,
        "m": -18446744073709551617,
        "d": Decimal("0.1000000000000000000000001"),
        "e": Decimal("1e400"),
        "f": 0.5,
    }
    assert type(numbers["n"]) is int and type(numbers["f"]) is float
    for name in ("array", "scalar", "string"):
        _wrapped(got[name], raw[name], "not_object")
    _wrapped(got["empty"], b"", "empty")
    assert got["object_key"].key == '{"a":[2],"b":1}'
    assert got["after"].data == {"id": "after"}


def assert_wrapping_logged(logs: list[dict[str, Any]]) -> None:
    """The invalid UTF-8 payload was logged as a warning with its key; text was only info."""
    wrapped = {entry["reason"]: entry for entry in logs if entry["event"] == "payload_wrapped"}
    assert wrapped["invalid_utf8"]["log_level"] == "warning"
    assert wrapped["invalid_utf8"]["record_key"] == "u1"
    assert wrapped["invalid_utf8"]["encoding"] == "base64"
    assert wrapped["too_deep"]["log_level"] == "warning"
    assert wrapped["not_json"]["log_level"] == "info"
