"""``core.jsonvalue``: JSON read and written without rounding a number (issue 9 C)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from syncworker.core import jsonvalue


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),
        (b"-9223372036854775809", -9223372036854775809),
        (b"18446744073709551616", 18446744073709551616),
        (b"0.1000000000000000000000001", Decimal("0.1000000000000000000000001")),
        (b"12345678.123456789", Decimal("12345678.123456789")),
        (b"1e400", Decimal("1e400")),
        (b"1e-400", Decimal("1e-400")),
        (b"1" * 5000, Decimal("1" * 5000)),  # past Python's int() digit limit
    ],
)
def test_numbers_orjson_would_round_are_read_exactly(text: bytes, expected: object) -> None:
    value = jsonvalue.loads(text)
    assert value == expected
    assert type(value) is type(expected)
    assert jsonvalue.dumps(value) == {b"1e400": b"1E+400", b"1e-400": b"1E-400"}.get(text, text)


@pytest.mark.parametrize(
    "text",
    [b"0.1", b"1.5", b"0.30000000000000004", b"1.7976931348623157e308", b"5e-324", b"-0.0"],
)
def test_decimals_a_double_holds_stay_floats(text: bytes) -> None:
    value = jsonvalue.loads(text)
    assert type(value) is float
    assert value == float(text)


def test_a_plain_payload_is_orjson_s_answer() -> None:
    raw = b'{"id": 1234567890123, "name": "a", "price": 9.99, "tags": [1, 2]}'
    assert jsonvalue.loads(raw) == orjson.loads(raw)


def test_long_digit_runs_in_strings_only_cost_a_slower_read() -> None:
    raw = b'{"phone": "12345678901234567890", "n": 1}'
    assert jsonvalue.loads(raw) == {"phone": "12345678901234567890", "n": 1}


def test_long_digit_runs_only_inside_strings_keep_orjson_s_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Zoho's 19-digit ids are strings: a page of them is no reason for the slow exact read.
    raw = b'{"ID": "4433256000013547003", "price": 10.25, "when": "2026-12-01 10:00:00.123456"}'

    def slow(*_: object) -> object:
        raise AssertionError("read with the slow exact reader")

    monkeypatch.setattr(jsonvalue, "_exact_loads", slow)
    assert jsonvalue.loads(raw) == orjson.loads(raw)


def test_long_integers_orjson_reads_exactly_keep_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b'{"id": 4433256000013547003, "tags": ["a\\"b", 9223372036854775807]}'

    def slow(*_: object) -> object:
        raise AssertionError("read with the slow exact reader")

    monkeypatch.setattr(jsonvalue, "_exact_loads", slow)
    assert jsonvalue.loads(raw) == {"id": 4433256000013547003, "tags": ['a"b', 9223372036854775807]}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            b'{"id": "4433256000013547003", "n": 0.1000000000000000000000001}',
            {"id": "4433256000013547003", "n": Decimal("0.1000000000000000000000001")},
        ),
        (b'{"a": "x\\"", "n": 12345678901234567890123}', {"a": 'x"', "n": 12345678901234567890123}),
        (
            b'{"s": "a\\" 1234567890123456789012 \\"b", "n": 1e400}',
            {"s": 'a" 1234567890123456789012 "b', "n": Decimal("1e400")},
        ),
        (b'{"s": "q\\" 1234567890123456789012 \\""}', {"s": 'q" 1234567890123456789012 "'}),
    ],
)
def test_numbers_beside_strings_and_escaped_quotes_are_still_exact(
    raw: bytes, expected: object
) -> None:
    assert jsonvalue.loads(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # digits after a colon, comma, bracket or space inside a string, then a number
        # outside orjson would round
        (
            b'{"e": "Event 4113824000000512345", "t": "a:1234567890123456789", '
            b'"n": 0.1000000000000000000000001}',
            {
                "e": "Event 4113824000000512345",
                "t": "a:1234567890123456789",
                "n": Decimal("0.1000000000000000000000001"),
            },
        ),
        # pretty-printed: whitespace before the number
        (b'{\n  "n":\n    -12345678901234567890123\n}', {"n": -12345678901234567890123}),
        (b"[1,\t1.5e-400]", [1, Decimal("1.5e-400")]),
        (b"12345678901234567890123", 12345678901234567890123),
    ],
)
def test_numbers_after_digit_runs_in_strings_are_still_exact(raw: bytes, expected: object) -> None:
    assert jsonvalue.loads(raw) == expected


def test_digit_runs_after_separators_inside_strings_keep_orjson_s_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b'{"e": "Event 4113824000000512345", "t": "a:1234567890123456789,[1.5e-400", "p": 0.1}'

    def slow(*_: object) -> object:
        raise AssertionError("read with the slow exact reader")

    monkeypatch.setattr(jsonvalue, "_exact_loads", slow)
    assert jsonvalue.loads(raw) == orjson.loads(raw)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"not json", "not_json"),
        (b"NaN", "not_json"),
        (b'{"a": 1e400, "b": NaN}', "not_json"),
        (b'"\\ud800"', "not_json"),
        (b'"caf\xe9"', "not_json"),
        (b"[" * 1100 + b"]" * 1100, "too_deep"),
    ],
)
def test_what_cannot_be_read_says_why(raw: bytes, reason: str) -> None:
    with pytest.raises(jsonvalue.UndecodableJSON) as caught:
        jsonvalue.loads(raw)
    assert caught.value.reason == reason


def test_dumps_writes_big_integers_and_decimals_as_their_digits() -> None:
    value = {"b": [2**100, {"c": -(2**64)}], "a": Decimal("-0.000000000000000000001"), "z": 1}
    assert jsonvalue.dumps(value, sort_keys=True) == (
        b'{"a":-1E-21,"b":[1267650600228229401496703205376,{"c":-18446744073709551616}],"z":1}'
    )
    # -1E-21 reads back as the float that prints as the same number.
    assert jsonvalue.loads(jsonvalue.dumps(value)) == {**value, "a": -1e-21}


def test_dumps_refuses_what_has_no_exact_json_form_with_the_reason() -> None:
    for value, reason in [
        (Decimal("Infinity"), "Decimal Infinity has no JSON form"),
        ({"s": "\udcff"}, "surrogates not allowed"),
        (object(), "not JSON serializable"),
    ]:
        with pytest.raises(jsonvalue.JSONValueError, match=reason):
            jsonvalue.dumps(value)
    # A subclass of what sinks already catch, so they refuse the one record.
    assert issubclass(jsonvalue.JSONValueError, orjson.JSONEncodeError)


def test_canonical_sorts_keys_and_has_no_spaces() -> None:
    assert jsonvalue.canonical({"b": 1, "a": [{"y": 2, "x": 1}]}) == '{"a":[{"x":1,"y":2}],"b":1}'


def test_writable_refuses_what_is_too_deep_for_the_writer() -> None:
    # orjson reads 1,024 levels but writes 253: a source would deliver a record that no sink
    # (nor the dead letters) could write.
    raw = b'{"v": ' + b"[" * 300 + b"]" * 300 + b"}"
    assert jsonvalue.loads(raw)["v"] == jsonvalue.loads(b"[" * 300 + b"]" * 300)
    with pytest.raises(jsonvalue.UndecodableJSON) as caught:
        jsonvalue.loads(raw, writable=True)
    assert caught.value.reason == "too_deep"
    shallow = b'{"v": ' + b"[" * 200 + b"]" * 200 + b"}"
    assert jsonvalue.dumps(jsonvalue.loads(shallow, writable=True)) == shallow.replace(b" ", b"")


def test_indented_output_for_people_is_exact_too() -> None:
    assert jsonvalue.dumps(
        {"n": 2**70, "d": Decimal("0.1000000000000000000000001")}, indent=True
    ) == (b'{\n  "n": 1180591620717411303424,\n  "d": 0.1000000000000000000000001\n}')
