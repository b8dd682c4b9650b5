"""A job id that str.isdigit() accepts but int() refuses ("²") is an unknown id, not a crash."""

from __future__ import annotations

import pytest

from syncworker.queue.redis import _split_id


@pytest.mark.parametrize("job_id", ["media:²", "media:٣", "media:", ":1", "media"])
def test_redis_ids_that_are_not_ascii_digits_are_unknown(job_id: str) -> None:
    assert _split_id(job_id) is None


def test_a_redis_id_splits_into_queue_and_number() -> None:
    split = _split_id("media:42")
    assert split is not None and split[0] == "media"
