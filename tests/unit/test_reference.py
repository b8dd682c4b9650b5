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


def test_reference_says_what_users_had_to_guess() -> None:
    """Issue 9, point 14: the default schedule, every ${...} form, the webhook's own headers,
    where python modules come from, and which sinks absorb a redelivery."""
    text = render()
    assert "| `schedule` | `ScheduleConfig` | `{stream: true}` |" in text
    for form in ("`${VAR}`", "`${VAR:-default}`", "`${VAR:+word}`", "`${A:-${B:-x}}`"):
        assert f"| {form} |" in text
    webhook = text.split("## sink `webhook`")[1].split("\n## ")[0]
    for header in ("Idempotency-Key", "X-Syncworker-Signature", "X-Fencing-Token", "User-Agent"):
        assert f"`{header}" in webhook
    assert "## Python modules" in text and "the directory of the config file" in text
    redelivery = text.split("## Sinks and redelivery")[1].split("\n## ")[0]
    assert "| `jsonl` | at-least-once appender" in redelivery
    assert "| `sqlite`, `postgres` | idempotent" in redelivery
    assert "| `store` | `state` or `source` |" in text  # a Literal's choices, not "Literal"
