"""docs/configuration.md is generated from the config models and must match them."""

from __future__ import annotations

from pathlib import Path

from syncworker.reference import render

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: python -m syncworker.reference > docs/configuration.md"
    )


def test_reference_covers_every_connector() -> None:
    text = render()
    for heading in ("source `sqlite_queue`", "sink `jsonl`", "sink `sqlite`", "processor `map`"):
        assert f"## {heading}" in text
