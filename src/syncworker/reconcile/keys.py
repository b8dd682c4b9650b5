"""Splitting a key range into segments, for each ``KeyKind``.

``boundaries(kind, lo, hi, parts)`` returns increasing keys ``b`` with ``lo < b <= hi`` that cut
``[lo, hi]`` into at most ``parts`` pieces of about equal width. Integers and uuids (as 128-bit
integers) split exactly by arithmetic, like the hand-written baseline (segment ``s`` starts at
``lo + ceil(s * span / parts)``). Text splits by interpolating code points after the common
prefix of ``lo`` and ``hi``: with skewed keys some segments are empty and others hold more,
which costs a further split, never a wrong answer.
"""

from __future__ import annotations

import itertools
import uuid

from syncworker.reconcile.sides import Key, KeyKind, KeyRange

_TEXT_DIGITS = 4  # code points interpolated after the common prefix
_BASE = 0x110000 + 1  # a code point + 1; 0 stands for "no character" (a shorter string)
_SURROGATES = range(0xD800, 0xE000)  # not valid in UTF-8 text


def boundaries(kind: KeyKind, lo: Key, hi: Key, parts: int) -> list[Key]:
    """Increasing keys strictly above ``lo`` and at most ``hi`` splitting ``[lo, hi]``."""
    if parts < 2 or not lo < hi:  # type: ignore[operator]
        return []
    if kind == "int":
        return list(_int_boundaries(int(lo), int(hi), parts))
    if kind == "uuid":
        lo_i, hi_i = uuid.UUID(str(lo)).int, uuid.UUID(str(hi)).int
        return [str(uuid.UUID(int=b)) for b in _int_boundaries(lo_i, hi_i, parts)]
    return _text_boundaries(str(lo), str(hi), parts)


def split(kind: KeyKind, outer: KeyRange, lo: Key, hi: Key, parts: int) -> list[KeyRange]:
    """``outer`` cut into up to ``parts`` ranges; ``lo``/``hi`` stand for its unbounded ends
    (the smallest and largest key of both sides). One range (``outer`` itself) when it cannot
    be cut (a single key)."""
    first = outer.lo if outer.lo is not None else lo
    last = outer.hi if outer.hi is not None else hi
    cuts = [b for b in boundaries(kind, first, last, parts) if _inside(b, outer)]
    if not cuts:
        return [outer]
    edges: list[Key | None] = [outer.lo, *cuts, outer.hi]
    return [KeyRange(a, b) for a, b in itertools.pairwise(edges)]


def cover(kind: KeyKind, lo: Key, hi: Key, parts: int) -> list[KeyRange]:
    """Ranges covering every possible key (first and last unbounded), cut between ``lo`` and
    ``hi`` into about ``parts``."""
    return split(kind, KeyRange(None, None), lo, hi, parts)


def _inside(key: Key, outer: KeyRange) -> bool:
    return (outer.lo is None or key > outer.lo) and (outer.hi is None or key < outer.hi)  # type: ignore[operator]


def _int_boundaries(lo: int, hi: int, parts: int) -> list[int]:
    span = hi - lo + 1
    parts = min(parts, span)
    out: list[int] = []
    for s in range(1, parts):
        b = lo + (s * span + parts - 1) // parts
        if b > lo and (not out or b > out[-1]):
            out.append(b)
    return out


def _text_boundaries(lo: str, hi: str, parts: int) -> list[Key]:
    common = 0
    while common < min(len(lo), len(hi)) and lo[common] == hi[common]:
        common += 1
    prefix = lo[:common]
    a = _digits(lo[common:])
    b = _digits(hi[common:])
    out: list[Key] = []
    for s in range(1, parts):
        text = prefix + _text(a + (b - a) * s // parts)
        if lo < text <= hi and (not out or text > out[-1]):  # type: ignore[operator]
            out.append(text)
    return out


def _digits(tail: str) -> int:
    value = 0
    for i in range(_TEXT_DIGITS):
        value = value * _BASE + (ord(tail[i]) + 1 if i < len(tail) else 0)
    return value


def _text(value: int) -> str:
    digits = []
    for _ in range(_TEXT_DIGITS):
        value, digit = divmod(value, _BASE)
        digits.append(digit)
    chars = []
    for digit in reversed(digits):
        if digit == 0:
            break
        code = max(digit - 1, 1)  # never NUL: PostgreSQL text cannot hold it
        if code in _SURROGATES:
            code = _SURROGATES.stop
        chars.append(chr(code))
    return "".join(chars)
