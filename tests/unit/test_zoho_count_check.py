"""Seed 002's ENABLE_DISCREPANCY_DETECTION reaches the example's count check: ``count_check``
takes the flag (true: ``sink``, false: ``off``) as well as its own words."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncworker.config import load_config
from syncworker.connectors.http.zoho import ZohoCreatorSourceConfig

EXAMPLE = Path(__file__).parents[2] / "examples" / "zoho_to_redis" / "syncworker.yaml"
ZOHO_ENV = {
    "ZOHO_OWNER": "acme",
    "ZOHO_APP": "events",
    "ZOHO_CLIENT_ID": "1000.TESTCLIENT",
    "ZOHO_CLIENT_SECRET": "not-a-real-secret",
    "ZOHO_REFRESH_TOKEN": "1000.not-a-real-token",
}


@pytest.mark.parametrize(
    ("flag", "expected"),
    [(None, "sink"), ("true", "sink"), ("false", "off"), ("FALSE", "off"), ("source", "source")],
)
def test_the_example_reads_enable_discrepancy_detection(flag: str | None, expected: str) -> None:
    environ = dict(ZOHO_ENV)
    if flag is not None:
        environ["ENABLE_DISCREPANCY_DETECTION"] = flag
    source = load_config(EXAMPLE, environ).pipelines["zoho_registrations"].source
    assert isinstance(source, ZohoCreatorSourceConfig)
    assert source.events.count_check == expected


def test_count_check_refuses_what_is_neither_a_flag_nor_its_words() -> None:
    with pytest.raises(Exception, match="count_check"):
        load_config(EXAMPLE, {**ZOHO_ENV, "ENABLE_DISCREPANCY_DETECTION": "maybe"})
