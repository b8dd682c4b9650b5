"""The suite covers every connector the registry knows, and every declaration says why."""

from __future__ import annotations

from syncworker.core import registry
from tests.conformance.registry import SINKS, SOURCES


def test_every_registered_source_and_sink_has_a_harness() -> None:
    # A new connector registers itself by type name; its harness entry is what puts it under
    # every conformance case. Until it has one, this fails and names it.
    assert sorted(h.type_name for h in SOURCES) == registry.names("source")
    assert sorted({h.type_name for h in SINKS}) == registry.names("sink")  # jobs: two backends


def test_every_missing_capability_is_declared_with_its_reason() -> None:
    for harness in SOURCES:
        missing = {
            "deletes": not harness.deletes,
            "restart": harness.restart is None,
            "credentials": not harness.credentials,
        }
        for name, is_missing in missing.items():
            if is_missing:
                assert harness.reasons.get(name, "").strip(), (harness.type_name, name)
    for harness in SINKS:
        missing = {
            "deletes": harness.deletes != "remove",
            "rewrite": harness.rewrite != "idempotent",
            "restart": harness.restart is None,
            "credentials": not harness.credentials,
        }
        for name, is_missing in missing.items():
            if is_missing:
                assert harness.reasons.get(name, "").strip(), (harness.type_name, name)


def test_every_sink_says_where_it_is_read_back() -> None:
    for harness in SINKS:
        assert harness.read_back.strip(), harness.type_name
    webhook = next(h for h in SINKS if h.type_name == "webhook")
    assert "fake" in webhook.read_back  # a webhook cannot be read back but through the fake
