""" "Arrives exactly as sent" made checkable, and the poison corpus of issue 9.

``canon`` turns a value into one text that two values share only when they are the same JSON
value: a number is compared by its decimal value whatever its Python type (an ``int``, a
``Decimal``, or a ``float`` read back as the shortest text that round-trips), so
``0.1000000000000000000000001`` rounded to the float ``0.1`` is told apart, while ``1.5``
and ``Decimal("1.5")`` are the same. It walks with its own stack, so a 100,000-deep value
can be compared (Python's ``==`` and ``json`` recurse and give up near 1,000 levels).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

BIG_INT_TEXT = "123456789012345678901234567890"
BIG_DECIMAL_TEXT = "0.1000000000000000000000001"
TEN_MB = 10 * 1024 * 1024


def canon(value: Any) -> str:
    """One text per JSON value (see the module docstring); ``TypeError`` for anything else."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Token):
            out.append(item.text)
        elif item is None:
            out.append("null")
        elif item is True or item is False:
            out.append("true" if item else "false")
        elif isinstance(item, int | float | Decimal):
            out.append(_number(item))
        elif isinstance(item, str):
            out.append(json.dumps(item))
        elif isinstance(item, dict):
            out.append("{")
            stack.append(_Token("}"))
            members = sorted(item.items(), key=_member_key)
            for n in range(len(members) - 1, -1, -1):  # pushed last first: popped in order
                key, inner = members[n]
                if not isinstance(key, str):
                    raise TypeError(f"object key {key!r} is not a string")
                stack += [inner, _Token(json.dumps(key) + ":")]
                if n:
                    stack.append(_Token(","))
        elif isinstance(item, list | tuple):
            out.append("[")
            stack.append(_Token("]"))
            for n in range(len(item) - 1, -1, -1):
                stack.append(item[n])
                if n:
                    stack.append(_Token(","))
        else:
            raise TypeError(f"{type(item).__name__} is not a JSON value")
    return "".join(out)


def _member_key(member: tuple[Any, Any]) -> str:
    return str(member[0])


@dataclass(frozen=True, slots=True)
class _Token:
    text: str


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return repr(value)
        value = Decimal(repr(value))
    return "n" + format(Decimal(value).normalize(), "f")


def same(a: Any, b: Any) -> bool:
    return canon(a) == canon(b)


def parse_exact(text: str | bytes) -> Any:
    """JSON read back from a sink with every number exact (``Decimal`` for fractions).

    Python's parser recurses: the limit is raised for the deep values of the corpus (a sink
    that accepted the 2,000-deep one must give it back); past it ``RecursionError`` says the
    value cannot be checked here.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, 6_000))
    try:
        return json.loads(text, parse_float=Decimal)
    finally:
        sys.setrecursionlimit(previous)


def strings(value: Any) -> Iterator[str]:
    """Every string inside ``value`` (keys and values), walked without recursion."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def keeps_bytes(data: Any, raw: bytes) -> bool:
    """True when ``data`` (a source's wrapper) holds ``raw`` itself: as its text, when it is
    UTF-8, or base64-encoded. A U+FFFD in place of a byte does not count."""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    for value in strings(data):
        if text is not None and value == text:
            return True
        if len(value) % 4 == 0 and value:
            try:
                if base64.b64decode(value, validate=True) == raw:
                    return True
            except (binascii.Error, ValueError):
                continue
    return raw == b"" and isinstance(data, dict)


def depth(value: Any) -> int:
    """Nesting depth of lists and objects, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((inner, level + 1) for inner in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((inner, level + 1) for inner in item)
    return deepest


def nested_list(levels: int) -> list[Any]:
    """``[[[...]]]`` ``levels`` deep, built without recursion."""
    inner: list[Any] = []
    for _ in range(levels - 1):
        inner = [inner]
    return inner


def random_text(chars: int) -> str:
    """Text that does not compress: a 10 kB key stays over PostgreSQL's btree limit."""
    return base64.b64encode(os.urandom(chars)).decode()[:chars]


# -- the poison corpus --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payload:
    """One message as a producer puts it in a queue: raw bytes.

    ``value`` is the JSON value the bytes spell when they spell one (built directly, not
    parsed, so the 100,000-deep one needs no parser); ``None`` for bytes that are no JSON.
    A source must deliver an object ``value`` exactly; anything else is wrapped with its
    bytes kept (or failed by the source, on its own).
    """

    name: str
    raw: bytes
    value: Any = None
    is_json: bool = False
    key: str | None = None  # the record key an exact source gives it (key_field "id")
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def is_object(self) -> bool:
        return self.is_json and isinstance(self.value, dict)


def _json(name: str, value: dict[str, Any], raw: bytes, **facts: Any) -> Payload:
    key = value.get("id")
    return Payload(name, raw, value, True, key if isinstance(key, str) else None, facts)


def poison_payloads() -> list[Payload]:
    """Every input of issue 9's acceptance, as queue payloads (built once per test: 20 MB)."""
    long_key = random_text(10_000)
    long_name = random_text(10_000)
    blob = "x" * TEN_MB
    deep_2k = nested_list(2_000)
    deep_100k = nested_list(100_000)
    return [
        Payload("non_json", b"not json {"),
        Payload("invalid_utf8", b'{"id": "p-invalid_utf8", "t": "caf\xe9 \xff\xfe"}'),
        # A raw NUL inside a string is not JSON (control characters must be escaped).
        Payload("nul_raw", b'{"id": "p-nul_raw", "t": "a\x00b"}'),
        _json(
            "nul_escaped",
            {"id": "p-nul_escaped", "t": "a\x00b"},
            b'{"id": "p-nul_escaped", "t": "a\\u0000b"}',
        ),
        _json(
            "ten_mb",
            {"id": "p-ten_mb", "blob": blob},
            b'{"id": "p-ten_mb", "blob": "' + blob.encode() + b'"}',
        ),
        _json(
            "deep_2k",
            {"id": "p-deep_2k", "v": deep_2k},
            b'{"id": "p-deep_2k", "v": ' + b"[" * 2_000 + b"]" * 2_000 + b"}",
            may_wrap="deeper than JSON parsers go: decoded exactly, or wrapped with its bytes",
        ),
        _json(
            "deep_100k",
            {"id": "p-deep_100k", "v": deep_100k},
            b'{"id": "p-deep_100k", "v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            may_wrap="deeper than JSON parsers go: decoded exactly, or wrapped with its bytes",
        ),
        _json(
            "big_int",
            {"id": "p-big_int", "n": int(BIG_INT_TEXT)},
            b'{"id": "p-big_int", "n": ' + BIG_INT_TEXT.encode() + b"}",
        ),
        _json(
            "big_decimal",
            {"id": "p-big_decimal", "x": Decimal(BIG_DECIMAL_TEXT)},
            b'{"id": "p-big_decimal", "x": ' + BIG_DECIMAL_TEXT.encode() + b"}",
        ),
        _json(
            "long_key",
            {"id": long_key, "v": 1},
            b'{"id": "' + long_key.encode() + b'", "v": 1}',
        ),
        _json(
            "long_field_name",
            {"id": "p-long_field_name", long_name: 1},
            b'{"id": "p-long_field_name", "' + long_name.encode() + b'": 1}',
        ),
        Payload("array", b"[1, 2, 3]", [1, 2, 3], True),
        Payload("scalar", b"42", 42, True),
        Payload("string", b'"just text"', "just text", True),
        Payload("empty", b""),
        # An object as the key: the record key is its canonical JSON, not a Python repr.
        Payload(
            "object_key",
            b'{"id": {"b": 1, "a": 2}, "v": 1}',
            {"id": {"b": 1, "a": 2}, "v": 1},
            True,
            facts={"key_object": {"b": 1, "a": 2}},
        ),
    ]


def good_payload(n: int) -> Payload:
    value = {"id": f"g-{n}", "n": n, "text": f"message {n}", "ok": True, "price": 1.5}
    return _json(f"good_{n}", value, json.dumps(value).encode())


@dataclass(frozen=True, slots=True)
class Poison:
    """One record as a source hands it to sinks. A sink writes it exactly, or refuses this
    record alone with a reason (it is dead-lettered) while the rest of the batch is written."""

    name: str
    key: str
    data: Any


def poison_records() -> list[Poison]:
    """Every input of issue 9's acceptance as it reaches a sink (built once per test)."""
    return [
        Poison("non_json", "p-non_json", {"raw": "not json {", "wrapped": True}),
        # Invalid UTF-8 decoded with surrogateescape: no encoder can write it as UTF-8.
        Poison("invalid_utf8", "p-invalid_utf8", {"t": "caf\udce9 \udcff"}),
        Poison("nul_text", "p-nul_text", {"t": "a\x00b"}),
        Poison("nul_key", "p-nul\x00key", {"v": 1}),
        Poison("nul_jsonb", "p-nul_jsonb", {"nested": {"t": "\x00"}, "list": ["\x00"]}),
        Poison("ten_mb", "p-ten_mb", {"blob": "x" * TEN_MB}),
        Poison("deep_2k", "p-deep_2k", {"v": nested_list(2_000)}),
        Poison("deep_100k", "p-deep_100k", {"v": nested_list(100_000)}),
        Poison("big_int", "p-big_int", {"n": int(BIG_INT_TEXT)}),
        Poison("big_decimal", "p-big_decimal", {"x": Decimal(BIG_DECIMAL_TEXT)}),
        Poison("long_key", random_text(10_000), {"v": 1}),
        Poison("long_field_name", "p-long_field_name", {random_text(10_000): 1}),
        Poison("array", "p-array", [1, 2, 3]),
        Poison("scalar", "p-scalar", 42),
        Poison("empty", "p-empty", {}),
    ]


def good_data(n: int) -> dict[str, Any]:
    return {"n": n, "text": f"message {n}", "ok": True, "price": 1.5, "tags": ["a", "b"]}
