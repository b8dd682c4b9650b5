"""The REST source's page decoder: exact numbers, and jsonvalue's errors, on pages like Zoho's
(long digit runs inside strings) and on those whose numbers orjson alone would round."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from tests.conformance.exact import canon

from syncworker.connectors.http.client import decode_page
from syncworker.core import jsonvalue

PAGES = [
    b'{"code":3000,"data":[{"ID":"4433256000013547003","Event":{"ID":"4433256000013547001"}}]}',
    b'{"data":[{"n":12345678901234567890123}]}',
    b'{"data":[{"x":0.1000000000000000000000001}]}',
    b'{"data":[{"x": 1.1, "y": 10.25, "z": -3}]}',
    b'{"data":[{"x": 1e400}]}',
    b'{"data":[{"x": 1.5e-300}]}',
    b'{"data":[{"x":\n  12345678901234567.5}]}',
    b"[9007199254740993]",
    b"0.12345678901234567",
    b'{"data":[{"note":"a,12345678901234567890 e1000"}]}',
    b'{"data":[{"q":"say \\"hi\\"","x":0.1000000000000000000000001}]}',
    b'{"data":[{"q":"\\\\","x":12345678901234567890123}]}',
]


@pytest.mark.parametrize("raw", PAGES)
def test_every_number_as_written(raw: bytes) -> None:
    # the standard library with Decimal for every decimal is slow but exact
    assert canon(decode_page(raw)) == canon(json.loads(raw, parse_float=Decimal))


def test_numbers_stay_exact() -> None:
    assert decode_page(b'{"x":0.1000000000000000000000001}')["x"] == Decimal(
        "0.1000000000000000000000001"
    )
    assert decode_page(b"[9007199254740993]") == [9007199254740993]


@pytest.mark.parametrize("raw", [b"not json {", b"", b"[" * 300 + b"]" * 300])
def test_same_errors_as_jsonvalue(raw: bytes) -> None:
    with pytest.raises(jsonvalue.UndecodableJSON) as ours:
        decode_page(raw)
    with pytest.raises(jsonvalue.UndecodableJSON) as theirs:
        jsonvalue.loads(raw, writable=True)
    assert ours.value.reason == theirs.value.reason
