"""The API hands out record values exactly as they were kept (DESIGN guarantee 8)."""

from __future__ import annotations

from decimal import Decimal

from syncworker.state.base import DeadLetter
from tests.e2e.conftest import RunningApi

BIG_INT = "123456789012345678901234567890"
LONG_DECIMAL = "0.1000000000000000000000001"


async def test_a_dead_letter_shows_numbers_beyond_a_double_exactly(api: RunningApi) -> None:
    data = {"big": int(BIG_INT), "dec": Decimal(LONG_DECIMAL), "nested": [int(BIG_INT)]}
    letter = DeadLetter(
        pipeline="chat",
        stream="in",
        key="k1",
        op="upsert",
        data=data,
        error="ValueError: refused",
        error_type="ValueError",
    )
    [letter_id] = await api.engine.state.add_dead_letters([letter])
    answer = await api.client.get(f"/dead-letters/{letter_id}")
    assert answer.status_code == 200
    text = answer.text
    assert f'"big":{BIG_INT}' in text.replace(" ", "")
    assert f'"dec":{LONG_DECIMAL}' in text.replace(" ", "")
    assert f'"nested":[{BIG_INT}]' in text.replace(" ", "")
