"""The content digest of one record, shared by every side of issue 11's comparison.

A record's digest is the first 64 bits (big-endian) of the blake2b hash of its canonical JSON:
``syncworker.core.jsonvalue.dumps`` with sorted keys, compact, every number exact. Two
records that decode to the same values digest the same whichever way they came: from the
``http`` source (``jsonvalue.loads(..., writable=True)`` of the API's body) or read back from
the ``redis`` sink (``jsonvalue.loads`` of the stored text), since ``loads`` keeps every number
exact (``int``, ``float`` when a double holds it as written, else ``Decimal``) and ``dumps``
writes them back as the same digits.

A group's hash is the sum of its records' digests modulo 2**64, as 16 hex digits: order
independent, so a source and a sink that deliver or store the same records in any order agree.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from syncworker.core import jsonvalue

_MASK = (1 << 64) - 1


def record_digest(data: Mapping[str, Any]) -> int:
    """The 64-bit digest of ``data`` (a record's fields), independent of key order.

    Raises ``jsonvalue.JSONValueError`` for a value with no exact JSON form (such a record
    cannot be written by the sinks either).
    """
    return canonical_digest(canonical_json(data))


def canonical_json(data: Any) -> bytes:
    """The text ``record_digest`` hashes: ``jsonvalue.dumps`` with sorted keys (what the
    redis sink stores for ``format: json``). Raises ``jsonvalue.JSONValueError``."""
    try:  # orjson alone writes the same bytes as jsonvalue when it can (most records): faster
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:  # a Decimal, an integer past 64 bits: the exact writer
        return jsonvalue.dumps(data, sort_keys=True)


def canonical_digest(body: bytes) -> int:
    """The digest of a record whose canonical JSON (``canonical_json``) is ``body``."""
    return int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big")


def combine(digests: Iterable[int]) -> int:
    """The sum of ``digests`` modulo 2**64 (a group's or a key range's digest)."""
    return sum(digests) & _MASK


def group_hash(digests: Iterable[int]) -> str:
    """The hex (16 lowercase digits) of the sum modulo 2**64 of ``digests``: a group's
    ``content_hash`` as the source's ``GroupEnd`` and the sink's meta hash hold it."""
    return format(combine(digests), "016x")


_MAX_EXCLUDED = 64  # past this many excluded keys, a range is summed key by key


class RangeDigests:
    """The digests of a side's rows in key order, summed over key ranges without a pass over
    the rows: prefix sums, so a range's sum is two lookups (a check summarizes each group's
    ranges level after level, and summing them row by row was a fifth of its CPU). Keys
    excluded as recent are subtracted one by one while they are few."""

    def __init__(self, keys: Sequence[str], digests: Sequence[int]) -> None:
        self.keys = keys
        self.digests = digests
        self._sums = list(itertools.accumulate(digests, initial=0))

    def summary(self, lo: int, hi: int, exclude: frozenset[object]) -> tuple[int, int, int]:
        """(rows, compared, digest) of the rows at positions ``lo`` to ``hi`` (excluded)."""
        total, compared = self._sums[hi] - self._sums[lo], hi - lo
        if exclude:
            if len(exclude) > _MAX_EXCLUDED:
                kept = [
                    d
                    for k, d in zip(self.keys[lo:hi], self.digests[lo:hi], strict=True)
                    if k not in exclude
                ]
                return hi - lo, len(kept), combine(kept)
            for key in exclude:
                if type(key) is not str:
                    continue  # text keys: nothing else equals one
                at = bisect.bisect_left(self.keys, key, lo, hi)
                if at < hi and self.keys[at] == key:
                    total -= self.digests[at]
                    compared -= 1
        return hi - lo, compared, total & _MASK
