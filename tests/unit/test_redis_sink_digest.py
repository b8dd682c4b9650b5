"""reconcile/digest.py: record digests are exact and order independent, and agree between
the source's decoding and a value read back from what the redis sink stores."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest

from syncworker.core import jsonvalue
from syncworker.reconcile.digest import combine, group_hash, record_digest

_API_BODY = (
    b'{"ID": "4433256000013547003", "big": 123456789012345678901234567890,'
    b' "dec": 0.1000000000000000000000001, "huge": 1e400, "f": 1.5, "i": 7,'
    b' "name": "Nguy\xe1\xbb\x85n \\u00e9", "nested": {"b": [1, 2.25, null], "a": true}}'
)


def test_digest_is_blake2b_of_sorted_exact_json() -> None:
    data = {"b": 1, "a": "x"}
    expected = hashlib.blake2b(b'{"a":"x","b":1}', digest_size=8).digest()
    assert record_digest(data) == int.from_bytes(expected, "big")


def test_digest_independent_of_key_order() -> None:
    assert record_digest({"a": 1, "b": {"y": 2, "x": 3}}) == record_digest(
        {"b": {"x": 3, "y": 2}, "a": 1}
    )


def test_digest_tells_values_and_types_apart() -> None:
    base = record_digest({"a": "1"})
    assert record_digest({"a": 1}) != base
    assert record_digest({"a": "2"}) != base
    assert record_digest({"a": 1}) != record_digest({"a": 1.0})


def test_exact_numbers_digest_the_same_after_a_round_trip() -> None:
    from_source = jsonvalue.loads(_API_BODY, writable=True)
    stored = jsonvalue.dumps(from_source)
    read_back = jsonvalue.loads(stored)
    assert read_back == from_source
    assert record_digest(read_back) == record_digest(from_source)
    assert isinstance(from_source["big"], int)
    assert isinstance(from_source["dec"], Decimal)


def test_numbers_differing_past_a_double_digest_differently() -> None:
    one = jsonvalue.loads(b'{"v": 0.1000000000000000000000001}')
    two = jsonvalue.loads(b'{"v": 0.1000000000000000000000002}')
    assert record_digest(one) != record_digest(two)
    big = jsonvalue.loads(b'{"v": 123456789012345678901234567890}')
    bigger = jsonvalue.loads(b'{"v": 123456789012345678901234567891}')
    assert record_digest(big) != record_digest(bigger)


def test_digest_refuses_a_value_without_exact_json() -> None:
    with pytest.raises(jsonvalue.JSONValueError):
        record_digest({"v": Decimal("NaN")})


def test_group_hash_is_hex_of_sum_mod_2_64() -> None:
    digests = [2**64 - 1, 2, 5]
    assert combine(digests) == 6
    assert group_hash(digests) == "0000000000000006"
    assert group_hash([]) == "0000000000000000"
    assert group_hash(reversed(digests)) == group_hash(digests)
    records = [{"id": i} for i in range(10)]
    assert group_hash(record_digest(r) for r in records) == format(
        sum(record_digest(r) for r in records) % 2**64, "016x"
    )


def test_fast_path_writes_the_exact_writers_bytes() -> None:
    # record_digest skips jsonvalue.dumps when orjson can write the value alone: same bytes.
    for data in (
        {"b": [1, 2.5, None, True], "a": {"y": "\u00e9", "x": -(2**63)}},
        {"big": 2**64 - 1},
        {"big": 2**64, "dec": Decimal("1.10")},
    ):
        body = jsonvalue.dumps(data, sort_keys=True)
        expected = int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big")
        assert record_digest(data) == expected
