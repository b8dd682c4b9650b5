"""What to compare, derived from a pipeline's config: ``TableMapping``.

A ``pg_table`` source (table, key, where, soft_delete, updated_at, change_table), the
processors between it and the sink (``map`` renames and picks fields, ``set`` adds constants,
``compute`` adds fields computed in Python) and the ``postgres`` sink (table, key_column,
columns, version_column) say, for each target column, where its value comes from:

- ``column``: a source column (after renames), compared in SQL on both sides;
- ``constant``: a ``set`` constant (or ``$stream``/``$op``), compared against a typed literal;
- ``computed``: a ``compute`` field, not compared (its function runs in Python only);
- ``skip``: a value the sink makes at write time (``$synced_at``, ``$fencing_token``) or the
  whole record as JSON (``$data``): not compared, and the report says why.

A processor verify cannot follow in SQL (``python``, ``filter``, a ``map`` that changes the
key) is a ``ConfigError``: a comparison that silently ignored it would report false
differences or miss real ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from syncworker.errors import ConfigError

SourceKind = Literal["column", "constant", "computed", "skip", "key"]

SINK_SKIPPED = {
    "$synced_at": "written by the sink at sync time",
    "$fencing_token": "the lock holder's fencing token, written by the sink",
    "$data": "the whole record as JSON (compare mapped columns instead)",
}


@dataclass(frozen=True, slots=True)
class ColumnMap:
    """One target column and where its value comes from."""

    target: str
    kind: SourceKind
    source: str | None = None  # the source column for "column"
    value: Any = None  # the constant for "constant"
    reason: str = ""  # why "computed"/"skip" columns are not compared


@dataclass(frozen=True, slots=True)
class SoftDelete:
    """Rows with ``column`` set (``value`` None: NOT NULL; else equal to ``value``) are
    deleted in the target: left out of the source side."""

    column: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class TableMapping:
    """A source table (after filter, soft delete and mapping) against a target table."""

    source_url: str
    source_table: str
    source_key: str
    target_url: str
    target_table: str
    target_key: str
    columns: tuple[ColumnMap, ...]
    source_where: str | None = None
    soft_delete: SoftDelete | None = None
    source_updated_at: str | None = None
    change_table: str | None = None  # pg_table's change log: keys in it are in flight
    channel: str | None = None  # its NOTIFY channel (a resync wakes the source)
    target_version_column: str | None = None
    target_synced_at: str | None = None
    target_where: str | None = None
    pipeline: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> list[ColumnMap]:
        return [c for c in self.columns if c.kind in ("column", "constant", "key")]


def from_spec(spec: Any, sink_name: str | None = None) -> TableMapping:
    """The mapping of a config ``PipelineSpec``; ``ConfigError`` naming the setting when
    verify cannot follow the pipeline."""
    name = spec.name
    source = spec.source
    if getattr(source, "type", None) != "pg_table":
        raise ConfigError(
            f"verify compares a pg_table source with a postgres sink; pipeline {name!r} has "
            f"a {getattr(source, 'type', '?')} source",
            path=f"pipelines.{name}.source.type",
        )
    sink, sink_index = _postgres_sink(spec, sink_name)
    fields = _fields(spec, name)
    key_column = getattr(sink, "key_column", "key")
    columns = _columns(sink, fields, source, name, sink_index)
    change_table, channel = _capture(source)
    soft = getattr(source, "soft_delete", None)
    return TableMapping(
        source_url=source.url,
        source_table=source.table,
        source_key=source.key,
        target_url=sink.url,
        target_table=sink.table,
        target_key=key_column,
        columns=tuple(columns),
        source_where=getattr(source, "where", None),
        soft_delete=_soft_delete(soft),
        source_updated_at=getattr(source, "updated_at", None),
        change_table=change_table,
        channel=channel,
        target_version_column=getattr(sink, "version_column", None),
        target_synced_at=next(
            (c for c, s in (sink.columns or {}).items() if s == "$synced_at"), None
        ),
        pipeline=name,
    )


def _capture(source: Any) -> tuple[str, str | None]:
    """The source's change log (schema-qualified) and NOTIFY channel."""
    names = getattr(source, "names", None)
    if callable(names):
        found = names()
        return found.change_table_qualified, found.channel
    schema, _, bare = source.table.rpartition(".")
    default = f"{schema + '.' if schema else ''}syncworker_{bare}_changes"
    return getattr(source, "change_table", None) or default, None


def _soft_delete(value: Any) -> SoftDelete | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return SoftDelete(value["column"], value.get("value"))
    return SoftDelete(value.column, getattr(value, "value", None))


def _postgres_sink(spec: Any, sink_name: str | None) -> tuple[Any, int]:
    for i, sink in enumerate(spec.sinks):
        if sink.type == "postgres" and sink_name in (None, sink.name):
            return sink, i
    wanted = f"postgres sink named {sink_name!r}" if sink_name else "postgres sink"
    raise ConfigError(
        f"verify needs a {wanted} to compare with; pipeline {spec.name!r} has none",
        path=f"pipelines.{spec.name}.sinks",
    )


def _fields(spec: Any, name: str) -> dict[str, ColumnMap]:
    """Field name -> origin after the processors; ``"*"``: any other source column as itself."""
    listed = getattr(spec.source, "columns", None)
    fields: dict[str, ColumnMap] = (
        {"*": _ALL} if not listed else {c: ColumnMap(c, "column", c) for c in listed}
    )
    for i, proc in enumerate(spec.processors):
        path = f"pipelines.{name}.processors.{i}"
        if proc.type == "map":
            fields = _apply_map(proc, fields, path)
        elif proc.type == "set":
            consts = {f: ColumnMap(f, "constant", value=v) for f, v in proc.fields.items()}
            fields = {**fields, **consts}
        elif proc.type == "compute":
            computed = {
                f: ColumnMap(f, "computed", reason=f"computed by {target} (Python)")
                for f, target in proc.fields.items()
            }
            fields = {**fields, **computed}
        else:
            raise ConfigError(
                f"verify cannot follow a {proc.type!r} processor in SQL (it may drop or "
                "change records in any way); compare without it or use map/set/compute",
                path=f"{path}.type",
            )
    return fields


_ALL = ColumnMap("*", "column", "*")  # every source column, unrenamed


def _apply_map(proc: Any, fields: dict[str, ColumnMap], path: str) -> dict[str, ColumnMap]:
    if proc.key is not None:
        raise ConfigError(
            "verify cannot follow a map processor that changes the record key "
            "(the target key would no longer be the source key)",
            path=f"{path}.key",
        )
    out: dict[str, ColumnMap] = dict(fields) if proc.keep_unmapped else {}
    for output, source_path in proc.fields.items():
        out[output] = _lookup(fields, source_path)
    return out


def _lookup(fields: dict[str, ColumnMap], path: str) -> ColumnMap:
    if path in fields:
        return fields[path]
    head = path.split(".", 1)[0]
    if "." in path and (head in fields or "*" in fields):
        return ColumnMap(path, "skip", reason=f"a nested path ({path})")
    if "*" in fields:
        return ColumnMap(path, "column", path)
    return ColumnMap(path, "constant", value=None)  # a missing field is written NULL


def _columns(
    sink: Any, fields: dict[str, ColumnMap], source: Any, name: str, index: int
) -> list[ColumnMap]:
    if not sink.columns:
        raise ConfigError(
            "verify needs the postgres sink's `columns` (the default layout keeps the whole "
            "record as JSON, which verify does not compare)",
            path=f"pipelines.{name}.sinks.{index}.columns",
        )
    out = []
    for column, path in sink.columns.items():
        if path in SINK_SKIPPED:
            out.append(ColumnMap(column, "skip", reason=SINK_SKIPPED[path]))
        elif path == "$key":
            out.append(ColumnMap(column, "key"))
        elif path == "$stream":
            out.append(ColumnMap(column, "constant", value=_stream(source)))
        elif path == "$op":
            out.append(ColumnMap(column, "constant", value="upsert"))
        else:
            origin = _lookup(fields, path)
            out.append(ColumnMap(column, origin.kind, origin.source, origin.value, origin.reason))
    version = getattr(sink, "version_column", None)
    version_path = getattr(sink, "version", None)
    if version and version not in sink.columns and version_path:
        origin = _lookup(fields, version_path)
        out.append(ColumnMap(version, origin.kind, origin.source, origin.value, origin.reason))
    return out


def _stream(source: Any) -> str:
    return str(getattr(source, "stream", None) or source.table)
