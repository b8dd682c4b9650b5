"""Exact JSON: decode and encode record values without rounding a number (DESIGN guarantee 8).

orjson is the fast path both ways, but it is not exact on its own (orjson 3.13, checked):

- ``loads`` turns an integer outside [-2**63, 2**64 - 1] into a float
  (``123456789012345678901234567890`` -> ``1.2345678901234568e+29``), rounds a decimal to the
  nearest double (``0.1000000000000000000000001`` -> ``0.1``, ``1e-400`` -> ``0.0``) and
  refuses ``1e400``; it has no option to keep them (ijl/orjson#473).
- ``dumps`` refuses integers beyond 64 bits ("Integer exceeds 64-bit range") and
  ``decimal.Decimal``, and values nested deeper than 253 levels ("Recursion limit reached").

So ``loads`` runs orjson, and only when the text holds a number orjson may have rounded (a run
of 16 or more digits and dots, or an exponent of three digits: a cheap byte scan) reads it
again with Python's ``json`` module: integers exact, and a decimal as a ``float`` when the
float prints back as the same number, else as a ``Decimal``. ``dumps`` writes big integers
and ``Decimal`` as their exact digits (``orjson.Fragment``). Every module that reads or writes
record values as JSON goes through here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Literal

import orjson

Reason = Literal["empty", "not_json", "too_deep"]

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
# Python refuses int() of longer digit strings (CVE-2020-10735); such integers stay Decimal.
_MAX_INT_DIGITS = 4000

# One C-speed pass (bytes.translate) maps digits and dots to "0", e/E to "e", brackets and
# braces to "[", the rest to " ", and deletes signs: a number orjson may round then shows as
# 16 "0" in a row or an exponent of 3+ digits, and 253 "[" are needed to nest too deep.
_SCAN = bytes(
    ord("0")
    if chr(byte) in "0123456789."
    else ord("e")
    if chr(byte) in "eE"
    else ord("[")
    if chr(byte) in "[{"
    else ord(" ")
    for byte in range(256)
)
_LONG_RUN = b"0" * 16
_MAX_WRITE_DEPTH_HINT = 253  # orjson.dumps refuses deeper values ("Recursion limit reached")


class UndecodableJSON(ValueError):
    """A payload that is not JSON this module can read exactly; ``reason`` says why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason: Reason = reason


class JSONValueError(orjson.JSONEncodeError):
    """A value with no exact JSON form (a subclass of ``orjson.JSONEncodeError``, hence of
    ``TypeError``, so a sink that catches those refuses the record with this reason)."""


def loads(raw: bytes | str, *, writable: bool = False) -> Any:
    """``raw`` (UTF-8 JSON) as Python values, every number exact: ``int`` for integers,
    ``float`` for decimals a double holds as written, ``Decimal`` for the others.

    Raises ``UndecodableJSON`` (reason ``empty``, ``not_json`` or ``too_deep``) for text
    orjson refuses: not JSON, not UTF-8, NaN/Infinity, lone surrogates, or nested deeper than
    1,024 levels; with ``writable``, also for a value nested deeper than ``dumps`` writes
    (253 levels), so that what a source delivers can reach every sink and the dead letters.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "infinity" in message:  # valid JSON: a number beyond a double's range
            return _exact_loads(raw, writable)
        if "depth limit" in message:
            raise UndecodableJSON("too_deep", "nested deeper than 1,024 levels") from exc
        if not raw:
            raise UndecodableJSON("empty", "empty payload") from exc
        raise UndecodableJSON("not_json", message) from exc
    data = raw.encode() if isinstance(raw, str) else raw
    scanned = data.translate(_SCAN, b"+-")
    if _may_round(scanned) and _may_round_outside_strings(data) and _has_float(value):
        value = _exact_loads(raw, False)
    if (
        writable
        and len(scanned) > 2 * _MAX_WRITE_DEPTH_HINT
        and scanned.count(b"[") >= _MAX_WRITE_DEPTH_HINT
        and not encodable(value)
    ):
        raise UndecodableJSON("too_deep", "nested deeper than the 253 levels sinks can write")
    return value


def _may_round(scanned: bytes) -> bool:
    """Whether a run of ``_SCAN``-translated text could be a number orjson rounds: 16 or more
    digits in a row (an integer past 64 bits, a decimal past a double's precision), or an
    exponent of 3 or more digits (past a double's range)."""
    return _LONG_RUN in scanned or b"e000" in scanned


def _may_round_outside_strings(data: bytes) -> bool:
    """Whether such a run lies outside the strings (a 19-digit id in quotes is no number):
    the text between quotes is left out. With an escaped quote the strings cannot be told
    apart this way, so the answer is yes (the slower, exact read)."""
    if b'\\"' in data:
        return True
    return _may_round(b"".join(data.split(b'"')[::2]).translate(_SCAN, b"+-"))


def _has_float(value: Any) -> bool:
    """Whether orjson's value holds a float: only a float can be a rounded number (it reads
    an integer past 64 bits as a float too), so without one its answer is exact. A loop,
    not recursion: values nest up to 1,024 levels."""
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is float:
            return True
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
    return False


def dumps(
    value: Any,
    *,
    sort_keys: bool = False,
    newline: bool = False,
    indent: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> bytes:
    """``value`` as compact UTF-8 JSON, integers of any size and ``Decimal`` as their exact
    digits; ``default`` converts other types as in ``orjson.dumps``; ``indent`` indents by
    two spaces (for people: the CLI).

    Raises ``JSONValueError`` for what has no exact JSON form: NaN or infinite ``Decimal``,
    an unsupported type, a lone surrogate, nesting deeper than 253 levels.
    """
    option = (
        (orjson.OPT_SORT_KEYS if sort_keys else 0)
        | (orjson.OPT_APPEND_NEWLINE if newline else 0)
        | (orjson.OPT_INDENT_2 if indent else 0)
    )
    encode = _PLAIN_ENCODER if default is None else _encoder(default)
    try:
        return orjson.dumps(value, default=encode, option=option)
    except orjson.JSONEncodeError as exc:
        if "64-bit" not in str(exc):
            raise JSONValueError(_why(exc)) from exc
    try:
        return orjson.dumps(_big_ints_as_text(value), default=encode, option=option)
    except (orjson.JSONEncodeError, ValueError) as exc:
        raise JSONValueError(_why(exc)) from exc


class _NoJSONForm(TypeError):
    """Raised by our own ``default`` hook, whose message orjson would hide."""


def _why(exc: BaseException) -> str:
    """orjson's message, or ours when our hook refused (orjson wraps it in a generic one)."""
    cause = exc.__cause__
    return str(cause) if isinstance(cause, _NoJSONForm) else str(exc)


def dumps_text(value: Any, *, sort_keys: bool = False) -> str:
    """``dumps`` as ``str``."""
    return dumps(value, sort_keys=sort_keys).decode()


def canonical(value: Any) -> str:
    """One text per value: keys sorted, no spaces (a key made of an object or a list)."""
    return dumps(value, sort_keys=True).decode()


def encodable(value: Any) -> bool:
    """Whether ``dumps`` can write ``value`` (checked for decoded values nested deep enough
    to hit orjson's writing limit, which is lower than its reading one)."""
    try:
        dumps(value)
    except JSONValueError:
        return False
    return True


def exact_float(text: str) -> float | Decimal:
    """A JSON decimal as ``float`` when the float prints back as the same number, else as
    ``Decimal`` (``0.1`` -> 0.1; ``0.1000000000000000000000001``, ``1e400`` -> Decimal)."""
    number = float(text)
    if number in (float("inf"), float("-inf")) or Decimal(repr(number)) != Decimal(text):
        return Decimal(text)
    return number


def _exact_int(text: str) -> int | Decimal:
    return int(text) if len(text) <= _MAX_INT_DIGITS else Decimal(text)


def _refuse_constant(name: str) -> Any:
    raise UndecodableJSON("not_json", f"{name} is not a JSON number")


def _exact_loads(raw: bytes | str, writable: bool) -> Any:
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray | memoryview) else raw
    try:
        value = json.loads(
            text, parse_float=exact_float, parse_int=_exact_int, parse_constant=_refuse_constant
        )
    except RecursionError as exc:  # within orjson's depth but past Python's recursion limit
        raise UndecodableJSON("too_deep", "nested too deep to read its numbers exactly") from exc
    except json.JSONDecodeError as exc:
        raise UndecodableJSON("not_json", str(exc)) from exc
    if writable and not encodable(value):
        raise UndecodableJSON("too_deep", "nested deeper than the 253 levels sinks can write")
    return value


def _encoder(default: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise _NoJSONForm(f"Decimal {value} has no JSON form")
            return orjson.Fragment(str(value).encode())
        if default is not None:
            return default(value)
        raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")

    return encode


_PLAIN_ENCODER = _encoder(None)  # made once: dumps runs per record and per job


def _big_ints_as_text(value: Any) -> Any:
    """``value`` with every integer orjson cannot write as a fragment of its digits; raises
    ``ValueError`` for one longer than Python prints (over 4,300 digits)."""
    if type(value) is int:
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
        return orjson.Fragment(str(value).encode())
    if isinstance(value, dict):
        return {key: _big_ints_as_text(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_big_ints_as_text(item) for item in value]
    return value
