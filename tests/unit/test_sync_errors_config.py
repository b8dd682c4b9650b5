"""sync_errors: the example's migration is the packaged DDL, and the section's settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from syncworker.observe.sync_errors import SyncErrorsConfig, ddl_template, index_names

MIGRATION = (
    Path(__file__).parents[2] / "examples/user_sync/migrations/001_create_sync_errors_table.sql"
)


def test_the_examples_migration_is_the_ddl_create_runs() -> None:
    rendered = ddl_template().format(table="sync_errors", **index_names("sync_errors"))
    assert MIGRATION.read_text() == rendered, (
        "examples/user_sync/migrations/001_create_sync_errors_table.sql differs from "
        "src/syncworker/observe/sql/sync_errors.sql; regenerate it from the template"
    )


def test_index_names_fit_a_postgresql_name() -> None:
    for name in index_names("t" * 63).values():
        assert len(name.encode()) <= 63


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "url"),
        ({"url": "mysql://u:s3cret@h/db"}, "expected a postgresql:// URL"),
        ({"url": "postgresql://h/db", "table": "a.b.c"}, "expected 'table' or 'schema.table'"),
        ({"url": "postgresql://h/db", "crate": True}, "crate"),
        ({"url": "postgresql://h/db", "max_pending": 0}, "max_pending"),
    ],
)
def test_settings_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SyncErrorsConfig.model_validate(settings)
    assert message in str(caught.value)
    assert all("s3cret" not in str(e["msg"]) for e in caught.value.errors())


def test_defaults_and_descriptions() -> None:
    config = SyncErrorsConfig.model_validate({"url": "postgresql://h/db"})
    assert (config.table, config.create, config.connect_timeout) == ("sync_errors", True, 5.0)
    assert all(f.description for f in SyncErrorsConfig.model_fields.values())
