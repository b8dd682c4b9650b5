"""TableMapping from a pipeline's config: renames, constants, computed and sink-made columns,
and the pipelines verify refuses to follow. No database needed."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from syncworker.config import parse_config
from syncworker.errors import ConfigError
from syncworker.reconcile.mapping import from_spec

BASE = """
pipelines:
  users:
    source:
      type: pg_table
      url: postgresql://u@h/src
      table: app.users
      where: "status = 'active'"
      soft_delete: {column: is_deleted, value: true}
    processors: %(processors)s
    sinks:
      - type: postgres
        url: postgresql://u@h/dst
        table: chat_users
        key_column: user_id
        columns: %(columns)s
"""


def spec(tmp_path: Path, processors: str = "[]", columns: str = "{name: name}") -> object:
    (tmp_path / "fns.py").write_text("def upper(data):\n    return str(data.get('name')).upper()\n")
    text = textwrap.dedent(BASE) % {"processors": processors, "columns": columns}
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        return parse_config(text).pipelines["users"]
    finally:
        sys.path.remove(str(tmp_path))


def test_columns_follow_renames_constants_and_computed_fields(tmp_path: Path) -> None:
    processors = """
      - {type: map, fields: {full_name: name, mobile: phone}, keep_unmapped: true}
      - {type: set, fields: {source_system: myusta, flags: [1, 2]}}
      - {type: compute, fields: {shout: "fns:upper"}}"""
    columns = """{display_name: full_name, mobile: mobile, status: status, origin: source_system,
                  shout: shout, synced_at: $synced_at, stream: $stream, raw: $data, k: $key,
                  nested: profile.city, gone: nowhere}"""
    m = from_spec(spec(tmp_path, processors, columns))
    kinds = {c.target: (c.kind, c.source, c.value) for c in m.columns}
    assert kinds["display_name"] == ("column", "name", None)
    assert kinds["mobile"] == ("column", "phone", None)
    assert kinds["status"] == ("column", "status", None)  # kept unmapped
    assert kinds["origin"] == ("constant", None, "myusta")
    assert kinds["shout"][0] == "computed"
    assert kinds["synced_at"][0] == "skip" and kinds["raw"][0] == "skip"
    assert kinds["stream"] == ("constant", None, "app.users")
    assert kinds["k"][0] == "key"
    assert kinds["nested"][0] == "skip"
    assert kinds["gone"] == ("column", "nowhere", None)  # keep_unmapped: any source column
    assert (m.source_table, m.source_key, m.target_key) == ("app.users", "id", "user_id")
    assert m.source_where == "status = 'active'"
    assert m.soft_delete is not None and m.soft_delete.value is True
    assert m.change_table == "app.syncworker_users_changes"


def test_a_field_no_processor_sets_is_null(tmp_path: Path) -> None:
    m = from_spec(spec(tmp_path, "[{type: map, fields: {a: name}}]", "{a: a, b: b}"))
    assert [(c.target, c.kind, c.value) for c in m.columns] == [
        ("a", "column", None),
        ("b", "constant", None),
    ]


@pytest.mark.parametrize(
    ("processors", "columns", "message"),
    [
        ('[{type: python, function: "fns:upper"}]', "{name: name}", "'python' processor"),
        ("[{type: filter, field: status, equals: active}]", "{name: name}", "'filter'"),
        (
            "[{type: map, fields: {name: name}, key: name}]",
            "{name: name}",
            "changes the record key",
        ),
        ("[]", "null", "needs the postgres sink's `columns`"),
    ],
)
def test_what_verify_cannot_follow(
    tmp_path: Path, processors: str, columns: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        from_spec(spec(tmp_path, processors, columns))


def test_same_server_is_told_by_host_and_port() -> None:
    from syncworker.reconcile.postgres import _same_server

    assert _same_server("postgresql://u@db:5432/a", "postgresql://v@db/b")
    assert _same_server("host=db dbname=a", "postgresql://u@db:5432/b")
    assert not _same_server("postgresql://u@db:5432/a", "postgresql://u@db:5433/a")
    assert not _same_server("postgresql://u@db1/a", "postgresql://u@db2/a")
