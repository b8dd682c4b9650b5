"""``reconcile.digest.RangeDigests``: range sums from prefix sums equal the row-by-row sums,
with and without keys excluded as recent."""

from __future__ import annotations

import random

from syncworker.reconcile.digest import RangeDigests, combine


def row_by_row(keys: list[str], digests: list[int], lo: int, hi: int, exclude: frozenset[object]):
    kept = [d for k, d in zip(keys[lo:hi], digests[lo:hi], strict=True) if k not in exclude]
    return hi - lo, len(kept), combine(kept)


def test_range_sums_equal_the_row_by_row_sums() -> None:
    rng = random.Random(3)
    keys = sorted({f"{rng.randrange(10**6):06d}" for _ in range(500)})
    digests = [rng.getrandbits(64) for _ in keys]
    ranges = RangeDigests(keys, digests)
    for _ in range(2000):
        lo = rng.randrange(len(keys) + 1)
        hi = rng.randrange(lo, len(keys) + 1)
        size = rng.choice([0, 1, 5, 64, 65, 300])
        exclude = frozenset(
            [*rng.sample(keys, min(size, len(keys))), "not-a-key", 123456, keys[0] + "x"]
        )
        assert ranges.summary(lo, hi, exclude) == row_by_row(keys, digests, lo, hi, exclude)
        assert ranges.summary(lo, hi, frozenset()) == row_by_row(keys, digests, lo, hi, frozenset())


def test_an_empty_side_sums_to_nothing() -> None:
    assert RangeDigests([], []).summary(0, 0, frozenset({"a"})) == (0, 0, 0)
