"""The PostgreSQL side of a comparison: a table (after filter and soft delete) whose rows are
hashed inside the database.

A row's digest is the XOR of its compared values' 64-bit hashes, each value hashed in binary by
its type's own extended hash function (the one its hash opclass uses: ``hashtextextended``,
``hash_numeric_extended``, ``jsonb_hash_extended``...; ``hash_record_extended(ROW(v))`` for
other types), seeded with the column's position, a NULL hashing to a constant of that position.
A range's digest is the exact sum (numeric) of its rows' digests. Both sides hash the same
compared columns, in the same order, with the same types:

- same type on both sides: the columns as they are (numeric compares as PostgreSQL's ``=``:
  ``1.0`` equals ``1.00``; jsonb as jsonb equality);
- different types: the source value cast to the target's type when PostgreSQL has that cast
  (varchar -> text, int4 -> int8, timestamp -> timestamptz in UTC...), else both as text;
- a type without a hash function (json, point, xml...): both as text, named in the report;
- a ``set`` constant: a literal of the target column's type on the source side.

Two statements per side and pass: the first pass covers the whole key domain with
``width_bucket`` over one sequential scan; later passes (a few small ranges) use the key's
index, one range scan per range, in one statement (``unnest`` of the bounds + ``LATERAL``).
Text keys compare in ``COLLATE "C"`` (code point order, the engine's), so unless the key
column's collation is C every pass is a sequential scan with the buckets to keep.

Sessions run with ``TimeZone=UTC``, ISO dates, no JIT and no statement timeout (a 100M-row
pass may take minutes), and without parallel workers when both sides are on one server (the
two sides' statements already run at once); the connection never prepares statements, so
``= ANY($keys)`` on recent keys is always planned with the array's values (hashed).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb

from syncworker.connectors.postgres.client import (
    Connection,
    ConnectSettings,
    connect,
    describe,
    describe_url,
    split_table,
    table_identifier,
)
from syncworker.errors import ConfigError, ConnectorError
from syncworker.reconcile.mapping import ColumnMap, TableMapping
from syncworker.reconcile.sides import (
    ColumnNote,
    Key,
    KeyKind,
    KeyRange,
    SideInfo,
    Summary,
)

log = structlog.get_logger(__name__)

_INT_TYPES = {"smallint": (-(2**15), 2**15 - 1), "integer": (-(2**31), 2**31 - 1)}
_INT_TYPES["bigint"] = (-(2**63), 2**63 - 1)
_TEXT_TYPES = {"text", "character varying", "character", "name"}
_ONE_SERVER = "SET max_parallel_workers_per_gather = 0"
_HASH_VIA = {"json": "jsonb", "json[]": "jsonb[]"}
# Each type's extended hash function, called directly: cheaper than building a ROW per row
# and hashing it (hash_record_extended), ~35 % of the hashing time on the users table.
_HASH_FUNCTIONS = {
    "text": "hashtextextended({v}, {s})",
    "character varying": "hashtextextended({v}, {s})",
    "character": "hashbpcharextended({v}, {s})",
    "smallint": "hashint2extended({v}, {s})",
    "integer": "hashint4extended({v}, {s})",
    "bigint": "hashint8extended({v}, {s})",
    "numeric": "hash_numeric_extended({v}, {s})",
    "real": "hashfloat4extended({v}, {s})",
    "double precision": "hashfloat8extended({v}, {s})",
    "uuid": "uuid_hash_extended({v}, {s})",
    "jsonb": "jsonb_hash_extended({v}, {s})",
    "interval": "interval_hash_extended({v}, {s})",
    "timestamp without time zone": "timestamp_hash_extended({v}, {s})",
    # The same function on the UTC wall time: one value per instant, whatever the session.
    "timestamp with time zone": "timestamp_hash_extended(({v}) AT TIME ZONE 'UTC', {s})",
}
_ARRAY_HASH = "hash_array_extended({v}, {s})"
_ANY_HASH = "hash_record_extended(ROW({v}), {s})"  # any other type with a hash opclass
_NULL_HASH = -7046029254386353131  # a NULL's hash, XORed with the column's seed
_UUID_MIN = "00000000-0000-0000-0000-000000000000"
_UUID_MAX = "ffffffff-ffff-ffff-ffff-ffffffffffff"
_SESSION = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
    # JIT compiling the hash expressions costs more (~0.25 s a pass) than it saves.
    " SET jit = off"
)

COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, NULL), a.attnotnull, t.typcategory,
       coalesce(co.collname, '') AS collation, format_type(a.atttypid, a.atttypmod)
  FROM pg_attribute a
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
 WHERE a.attrelid = %(table)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str  # format_type without typmod: "bigint", "timestamp with time zone"...
    not_null: bool
    category: str
    collation: str
    declared: str  # with its modifier, for casts: "numeric(30,10)", "character(3)"


@dataclass(slots=True)
class Plan:
    """One side's SQL pieces, decided when both catalogs are known."""

    key: sql.Composable  # the key expression, in the engine's domain and type
    key_type: str
    key_kind: KeyKind
    indexed: bool  # ranges can use the key's btree index
    values: list[sql.Composable]  # the compared expressions, in order
    nullable: list[bool]
    names: list[str]
    filter: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)
    types: list[str] = field(default_factory=list)  # each compared value's type (both sides)
    recent: list[sql.Composed] = field(default_factory=list)  # statements -> keys
    count_recent: sql.Composed | None = None
    notes: list[ColumnNote] = field(default_factory=list)
    label: str = ""


class PostgresSide:
    """A ``Side`` over one table. Made in pairs by ``table_sides``: the two plans depend on
    both catalogs (common casts), so ``open`` of either side prepares both."""

    def __init__(self, pair: _Pair, role: str) -> None:
        self._pair = pair
        self._role = role
        self.key_kind: KeyKind = "int"

    @property
    def plan(self) -> Plan:
        return self._pair.plans[self._role]

    @property
    def conn(self) -> Connection:
        return self._pair.conns[self._role]

    async def open(self) -> SideInfo:
        await self._pair.prepare()
        self.key_kind = self.plan.key_kind
        return SideInfo(
            self.plan.label,
            list(self.plan.names),
            list(self.plan.notes),
            can_tell_recent=bool(self.plan.recent),
        )

    async def close(self) -> None:
        await self._pair.close(self._role)

    async def key_bounds(self) -> tuple[Key, Key] | None:
        p = self.plan
        key = self._ordered(p.key)
        # ORDER BY ... LIMIT 1 rather than min/max: uuid has no min(), and the key's index
        # answers either end at once.
        query = sql.SQL(
            "SELECT (SELECT {k} FROM {t} WHERE {f} ORDER BY {o} LIMIT 1),"
            " (SELECT {k} FROM {t} WHERE {f} ORDER BY {o} DESC LIMIT 1)"
        ).format(k=p.key, o=key, t=self._table(), f=p.filter)
        row = await self._one(query, p.params)
        if row is None or row[0] is None:
            return None
        return self._key(row[0]), self._key(row[1])

    async def summarize(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> list[Summary]:
        if not ranges:
            return []
        full = ranges[0].lo is None and ranges[-1].hi is None and _contiguous(ranges)
        if full or not self._ranged(ranges):
            return await self._summarize_buckets(ranges, exclude)
        return await self._summarize_index(ranges, exclude)

    async def fetch(self, ranges: Sequence[KeyRange], exclude: frozenset[Key]) -> dict[Key, int]:
        if not ranges:
            return {}
        inner = self._hashed(exclude_filter=bool(exclude))
        params = {**self.plan.params, "ex": self._keys_param(exclude)}
        if self._ranged(ranges):
            query = sql.SQL(
                "SELECT s.k, s.h FROM unnest({lo}, {hi}) AS r(lo, hi) "
                "CROSS JOIN LATERAL ({inner} AND {within}) s"
            ).format(lo=self._array("lo"), hi=self._array("hi"), inner=inner, within=self._within())
            params.update(self._inclusive(ranges))
        else:
            wanted, bounds = _buckets(ranges)
            query = sql.SQL(
                "SELECT s.k, s.h FROM ({inner}) s WHERE width_bucket({k}, {b}) = ANY(%(w)s)"
            ).format(inner=inner, k=self._ordered(sql.SQL("s.k")), b=self._array("b"))
            params.update(b=bounds, w=list(wanted))
        rows = await self._all(query, params)
        return {self._key(k): int(h) for k, h in rows}

    async def rows(self, keys: Sequence[Key]) -> dict[Key, Mapping[str, object]]:
        p = self.plan
        if not keys:
            return {}
        query = sql.SQL("SELECT {k}{v} FROM {t} WHERE {f} AND {k} = ANY({keys})").format(
            k=p.key,
            v=sql.SQL("").join(sql.SQL(", {}").format(v) for v in p.values),
            t=self._table(),
            f=p.filter,
            keys=self._array("keys"),
        )
        rows = await self._all(query, {**p.params, "keys": [_param(k) for k in keys]})
        return {self._key(r[0]): dict(zip(p.names, r[1:], strict=True)) for r in rows}

    async def recent_keys(self, within_s: float) -> frozenset[Key] | None:
        if not self.plan.recent:
            return None
        keys: set[Key] = set()
        for query in self.plan.recent:
            keys.update(self._key(r[0]) for r in await self._all(query, {"w": within_s}))
        return frozenset(keys)

    async def count_recent(self, within_s: float) -> int | None:
        if self.plan.count_recent is None:
            return None
        row = await self._one(self.plan.count_recent, {**self.plan.params, "w": within_s})
        return int(row[0]) if row else 0

    # -- statements ------------------------------------------------------------------------

    def _table(self) -> sql.Composable:
        return self._pair.tables[self._role]

    def _ordered(self, key: sql.Composable) -> sql.Composable:
        if self.plan.key_kind == "text":
            return sql.SQL('({} COLLATE "C")').format(key)
        return key

    def _array(self, name: str) -> sql.Composable:
        return sql.SQL("%({})s::{}[]").format(sql.SQL(name), sql.SQL(self.plan.key_type))

    def _hashed(self, *, exclude_filter: bool) -> sql.Composable:
        """``SELECT key AS k, row digest AS h FROM table WHERE filter [AND NOT excluded]``."""
        p = self.plan
        query = sql.SQL("SELECT {k} AS k, {h} AS h FROM {t} WHERE {f}").format(
            k=p.key, h=self._digest(), t=self._table(), f=p.filter
        )
        if exclude_filter:
            query = sql.SQL("{} AND NOT ({} = ANY({}))").format(query, p.key, self._array("ex"))
        return query

    def _digest(self) -> sql.Composable:
        p = self.plan
        if not p.values:
            return sql.SQL("0::bigint")
        terms = [
            column_hash(value, type_name, seed=i + 1, nullable=nullable)
            for i, (value, type_name, nullable) in enumerate(
                zip(p.values, p.types, p.nullable, strict=True)
            )
        ]
        return sql.SQL("({})").format(sql.SQL(" # ").join(terms))

    def _aggregates(self, exclude: frozenset[Key]) -> sql.Composable:
        if not exclude:
            return sql.SQL("count(*), count(*), coalesce(sum(s.h), 0)")
        return sql.SQL(
            "count(*), count(*) FILTER (WHERE NOT s.x), "
            "coalesce(sum(s.h) FILTER (WHERE NOT s.x), 0)"
        )

    def _with_excluded(self, exclude: frozenset[Key]) -> sql.Composable:
        """The hashed rows, with ``x``: whether the key is one of the excluded (recent)."""
        p = self.plan
        x = (
            sql.SQL("{} = ANY({})").format(p.key, self._array("ex"))
            if exclude
            else sql.SQL("false")
        )
        return sql.SQL("SELECT {k} AS k, {h} AS h, {x} AS x FROM {t} WHERE {f}").format(
            k=p.key, h=self._digest(), x=x, t=self._table(), f=p.filter
        )

    async def _summarize_buckets(
        self, ranges: Sequence[KeyRange], exclude: frozenset[Key]
    ) -> list[Summary]:
        wanted, bounds = _buckets(ranges)
        query = sql.SQL(
            "SELECT width_bucket({k}, {b}) AS b, {agg} FROM ({rows}) s GROUP BY 1"
        ).format(
            k=self._ordered(sql.SQL("s.k")),
            b=self._array("b"),
            agg=self._aggregates(exclude),
            rows=self._with_excluded(exclude),
        )
        params = {**self.plan.params, "b": bounds, "ex": self._keys_param(exclude)}
        found = {
            b: Summary(int(n), int(c), int(h)) for b, n, c, h in await self._all(query, params)
        }
        return [found.get(b, Summary(0, 0, 0)) for b in wanted]

    async def _summarize_index(
        self, ranges: Sequence[KeyRange], exclude: frozenset[Key]
    ) -> list[Summary]:
        p = self.plan
        query = sql.SQL(
            "SELECT r.i, {agg} FROM unnest({lo}, {hi}) WITH ORDINALITY AS r(lo, hi, i) "
            "CROSS JOIN LATERAL ({rows} AND {within}) s GROUP BY r.i"
        ).format(
            agg=self._aggregates(exclude),
            lo=self._array("lo"),
            hi=self._array("hi"),
            rows=self._with_excluded(exclude),
            within=self._within(),
        )
        params = {**p.params, **self._inclusive(ranges), "ex": self._keys_param(exclude)}
        found = {
            i: Summary(int(n), int(c), int(h)) for i, n, c, h in await self._all(query, params)
        }
        return [found.get(i + 1, Summary(0, 0, 0)) for i in range(len(ranges))]

    def _ranged(self, ranges: Sequence[KeyRange]) -> bool:
        """Whether ``ranges`` are read through the key's index, one range scan each. Text
        has no largest value to stand for an open upper end: such a pass scans the table."""
        if not self.plan.indexed:
            return False
        return self.plan.key_kind != "text" or ranges[-1].hi is not None

    def _within(self) -> sql.Composable:
        if self.plan.key_kind == "text":
            return sql.SQL("{k} >= r.lo AND {k} < r.hi").format(k=self.plan.key)
        return sql.SQL("{k} BETWEEN r.lo AND r.hi").format(k=self.plan.key)

    def _inclusive(self, ranges: Sequence[KeyRange]) -> dict[str, list[Any]]:
        """``lo``/``hi`` arrays with inclusive upper bounds (``BETWEEN`` uses the index on
        both ends); unbounded ends become the type's extremes."""
        lows: list[Any] = []
        highs: list[Any] = []
        kind = self.plan.key_kind
        if kind == "text":  # half open; '' is the smallest text
            return {"lo": [r.lo or "" for r in ranges], "hi": [r.hi for r in ranges]}
        if kind == "int":
            low, high = _INT_TYPES[self.plan.key_type]
        else:
            low, high = _UUID_MIN, _UUID_MAX  # type: ignore[assignment]
        for r in ranges:
            lows.append(low if r.lo is None else r.lo)
            if r.hi is None:
                highs.append(high)
            elif kind == "int":
                highs.append(int(r.hi) - 1)
            else:
                highs.append(str(uuid.UUID(int=uuid.UUID(str(r.hi)).int - 1)))
        return {"lo": lows, "hi": highs}

    def _keys_param(self, keys: frozenset[Key]) -> list[Any]:
        return [_param(k) for k in keys]

    def _key(self, value: Any) -> Key:
        if self.plan.key_kind == "int":
            return int(value)
        return str(value)

    async def _all(self, query: sql.Composed | sql.SQL, params: Mapping[str, Any]) -> list[Any]:
        try:
            async with self.conn.cursor() as cur:
                await cur.execute(query, params, prepare=False)
                return await cur.fetchall()
        except psycopg.Error as exc:
            raise ConnectorError(f"verify {self.plan.label}: {describe(exc)}") from None

    async def _one(self, query: sql.Composed | sql.SQL, params: Mapping[str, Any]) -> Any:
        rows = await self._all(query, params)
        return rows[0] if rows else None


def column_hash(
    value: sql.Composable, type_name: str, *, seed: int, nullable: bool
) -> sql.Composable:
    """One column's 64-bit hash, by its type's own hash function (the one its hash opclass
    uses), with the column's position as seed: a row's digest is the XOR of its columns'.
    A NULL hashes to a constant of its position (hash functions are strict)."""
    template = _HASH_FUNCTIONS.get(type_name)
    if template is None:
        template = _ARRAY_HASH if type_name.endswith("[]") else _ANY_HASH
    term = sql.SQL(template).format(v=value, s=sql.Literal(seed))
    if not nullable:
        return term
    return sql.SQL("coalesce({}, {})").format(term, sql.Literal(_NULL_HASH ^ seed))


def _param(key: Key) -> Any:
    return key


def _contiguous(ranges: Sequence[KeyRange]) -> bool:
    return all(a.hi == b.lo for a, b in itertools.pairwise(ranges))


def _buckets(ranges: Sequence[KeyRange]) -> tuple[list[int], list[Any]]:
    """Thresholds for ``width_bucket`` (every range's bounds, sorted, once) and the bucket
    number of each range: 0 below the first threshold, i from the i-th (1-based) on."""
    bounds: list[Any] = []
    for r in ranges:
        for edge in (r.lo, r.hi):
            if edge is not None and (not bounds or bounds[-1] != edge):
                bounds.append(edge)
    position = {b: i + 1 for i, b in enumerate(bounds)}
    wanted = [0 if r.lo is None else position[r.lo] for r in ranges]
    return wanted, bounds


# -- planning both sides ---------------------------------------------------------------------


def table_sides(
    mapping: TableMapping, *, connect_timeout_s: float = 10.0
) -> tuple[PostgresSide, PostgresSide]:
    """The source side and the target side of ``mapping`` (not yet opened)."""
    pair = _Pair(mapping, connect_timeout_s)
    return PostgresSide(pair, "source"), PostgresSide(pair, "target")


class _Pair:
    def __init__(self, mapping: TableMapping, connect_timeout_s: float) -> None:
        self.mapping = mapping
        self.connect_timeout_s = connect_timeout_s
        self.conns: dict[str, Connection] = {}
        self.plans: dict[str, Plan] = {}
        # Aliased as the pg_table source aliases it: its `where` may say t.column.
        self.tables = {
            "source": sql.SQL("{} AS t").format(table_identifier(mapping.source_table)),
            "target": sql.SQL("{} AS t").format(table_identifier(mapping.target_table)),
        }
        self._lock = asyncio.Lock()
        self._prepared = False

    async def prepare(self) -> None:
        async with self._lock:
            if self._prepared:
                return
            m = self.mapping
            made = await asyncio.gather(
                self._connect(m.source_url, "verify source"),
                self._connect(m.target_url, "verify target"),
                return_exceptions=True,
            )
            failed = [r for r in made if isinstance(r, BaseException)]
            if failed:  # close the one that did connect
                for conn in made:
                    if not isinstance(conn, BaseException):
                        await conn.close()
                raise failed[0]
            self.conns["source"], self.conns["target"] = made  # type: ignore[assignment]
            src = await _catalog(self.conns["source"], m.source_table, "source")
            tgt = await _catalog(self.conns["target"], m.target_table, "target")
            planner = _Planner(m, src, tgt, self.conns["source"], self.conns["target"])
            self.plans = await planner.plans()
            self._prepared = True

    async def _connect(self, url: str, label: str) -> Connection:
        settings = ConnectSettings(url, self.connect_timeout_s, 0.0, "syncworker-verify")
        conn = await connect(settings, f"{label} {describe_url(url)}")
        conn.prepare_threshold = None
        await conn.execute(_SESSION)
        if _same_server(self.mapping.source_url, self.mapping.target_url):
            # Both sides' statements run at once on the same cores: parallel workers would
            # only contend with the other side (measured: the first pass ~25 % slower).
            await conn.execute(_ONE_SERVER)
        return conn

    async def close(self, role: str) -> None:
        conn = self.conns.pop(role, None)
        if conn is not None:
            await conn.close()


def _same_server(a: str, b: str) -> bool:
    """Whether two URLs name the same server (host and port; databases may differ)."""

    def where(url: str) -> tuple[str, str]:
        params = conninfo_to_dict(url)
        return (str(params.get("host") or "localhost"), str(params.get("port") or "5432"))

    try:
        return where(a) == where(b)
    except psycopg.Error:
        return False


async def _catalog(conn: Connection, table: str, role: str) -> dict[str, Column]:
    name = sql.Identifier(*split_table(table)).as_string(conn)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT to_regclass(%s)", (name,))
            row = await cur.fetchone()
            if row is None or row[0] is None:
                raise ConfigError(f"verify: the {role} table {table!r} does not exist")
            await cur.execute(COLUMNS_SQL, {"table": name})
            rows = await cur.fetchall()
    except psycopg.Error as exc:
        raise ConnectorError(f"verify {role} {table}: {describe(exc)}") from None
    return {r[0]: Column(*r) for r in rows}


class _Planner:
    """Decides both sides' expressions from both catalogs."""

    def __init__(
        self,
        mapping: TableMapping,
        src: dict[str, Column],
        tgt: dict[str, Column],
        src_conn: Connection,
        tgt_conn: Connection,
    ) -> None:
        self.m = mapping
        self.src = src
        self.tgt = tgt
        self.src_conn = src_conn
        self.tgt_conn = tgt_conn
        self.hashable: dict[tuple[str, str], bool] = {}

    async def plans(self) -> dict[str, Plan]:
        m = self.m
        skey = self._column(self.src, m.source_key, "source", m.source_table, "key")
        tkey = self._column(self.tgt, m.target_key, "target", m.target_table, "key_column")
        kind, key_type = _key_kind(skey)
        sk: sql.Composable = sql.Identifier(skey.name)
        tk: sql.Composable = sql.Identifier(tkey.name)
        if kind == "text":
            key_type = "text"
            sk, tk = sql.SQL("{}::text").format(sk), sql.SQL("{}::text").format(tk)
        elif tkey.type != skey.type:
            tk = sql.SQL("{}::{}").format(tk, sql.SQL(key_type))
        source = Plan(
            sk,
            key_type,
            kind,
            _indexable(kind, skey, cast=False),
            [],
            [],
            [],
            self._source_filter(),
            label=self._label(m.source_url, m.source_table, m.source_where),
        )
        target = Plan(
            tk,
            key_type,
            kind,
            _indexable(kind, tkey, cast=tkey.type != skey.type and kind != "text"),
            [],
            [],
            [],
            sql.SQL(m.target_where) if m.target_where else sql.SQL("true"),
            label=self._label(m.target_url, m.target_table, m.target_where),
        )
        for i, col in enumerate(m.columns):
            await self._compare(i, col, source, target)
        await self._recent(source, target)
        return {"source": source, "target": target}

    def _label(self, url: str, table: str, where: str | None) -> str:
        return f"{describe_url(url)} {table}" + (f" where {where}" if where else "")

    def _column(
        self, cols: dict[str, Column], name: str, role: str, table: str, setting: str
    ) -> Column:
        if name not in cols:
            raise ConfigError(
                f"verify: the {role} table {table!r} has no column {name!r} ({setting}); "
                f"it has {', '.join(cols)}"
            )
        return cols[name]

    def _source_filter(self) -> sql.Composable:
        m = self.m
        parts: list[sql.Composable] = []
        if m.source_where:
            # Trusted config text (the pg_table source runs the same filter).
            parts.append(sql.SQL("({})").format(sql.SQL(m.source_where)))
        if m.soft_delete is not None:
            col = sql.Identifier(m.soft_delete.column)
            if m.soft_delete.value is None:
                parts.append(sql.SQL("{} IS NULL").format(col))
            else:
                parts.append(
                    sql.SQL("{} IS DISTINCT FROM {}").format(col, sql.Literal(m.soft_delete.value))
                )
        return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")

    async def _compare(self, i: int, col: ColumnMap, source: Plan, target: Plan) -> None:
        if col.kind in ("computed", "skip"):
            target.notes.append(ColumnNote(col.target, col.reason))
            return
        tcol = self._column(self.tgt, col.target, "target", self.m.target_table, "columns")
        t_expr: sql.Composable = sql.Identifier(tcol.name)
        if col.kind == "column" and (col.source or col.target) not in self.src:
            # Not a field of the source's records: the sink writes NULL for a missing path.
            reason = f"NULL (the source has no column {col.source or col.target!r})"
            target.notes.append(ColumnNote(tcol.name, reason, True))
            col = ColumnMap(col.target, "constant", value=None)
        if col.kind == "constant":
            s_expr: sql.Composable = sql.SQL("%({})s::{}").format(
                sql.SQL(f"c{i}"), sql.SQL(tcol.declared)
            )
            source.params[f"c{i}"] = _constant(col.value, tcol)
            s_null = col.value is None
            s_type = tcol.type
        elif col.kind == "key":
            skey = self.src[self.m.source_key]
            s_expr = sql.SQL("{}::text::{}").format(
                sql.Identifier(skey.name), sql.SQL(tcol.declared)
            )
            s_null, s_type = False, tcol.type
        else:
            scol = self._column(
                self.src, col.source or col.target, "source", self.m.source_table, "columns"
            )
            s_expr, s_null, s_type = sql.Identifier(scol.name), not scol.not_null, scol.type
            if scol.type != tcol.type:
                if await self._castable(scol.type, tcol.declared):
                    s_expr = sql.SQL("({})::{}").format(s_expr, sql.SQL(tcol.declared))
                    target.notes.append(
                        ColumnNote(tcol.name, f"{tcol.type} (source {scol.type} cast)", True)
                    )
                    s_type = tcol.type
                else:
                    s_expr = sql.SQL("({})::text").format(s_expr)
                    t_expr = sql.SQL("({})::text").format(t_expr)
                    target.notes.append(
                        ColumnNote(tcol.name, f"text ({scol.type} vs {tcol.type})", True)
                    )
                    s_type = "text"
        if s_type != "text" and not await self._hashes(s_type):
            # json keeps its text as written (spaces, key order): compared as jsonb, the
            # value; other types without a hash function by their text form.
            via = _HASH_VIA.get(s_type, "text")
            s_expr = sql.SQL("({})::{}").format(s_expr, sql.SQL(via))
            t_expr = sql.SQL("({})::{}").format(t_expr, sql.SQL(via))
            reason = f"{via} ({s_type} has no hash function)"
            target.notes.append(ColumnNote(tcol.name, reason, True))
            s_type = via
        source.types.append(s_type)
        target.types.append(s_type)
        source.values.append(s_expr)
        # The same digest on both sides: NULL-safe wherever either side may be NULL.
        nullable = s_null or not tcol.not_null
        source.nullable.append(nullable)
        source.names.append(tcol.name)
        target.values.append(t_expr)
        target.nullable.append(nullable)
        target.names.append(tcol.name)

    async def _recent(self, source: Plan, target: Plan) -> None:
        m = self.m
        if m.source_updated_at and m.source_updated_at in self.src:
            ts = sql.Identifier(m.source_updated_at)
            window = sql.SQL("{} >= now() - %(w)s * interval '1 second'").format(ts)
            source.recent.append(
                sql.SQL("SELECT {k} FROM {t} AS t WHERE {w}").format(
                    k=source.key, t=table_identifier(m.source_table), w=window
                )
            )
            source.count_recent = sql.SQL("SELECT count(*) FROM {t} AS t WHERE {f} AND {w}").format(
                t=table_identifier(m.source_table), f=source.filter, w=window
            )
        if m.change_table and await self._exists(m.change_table):
            # Keys still in pg_table's change log are not applied yet: in flight, whatever
            # their age. Without the log (capture not installed) there are none.
            source.recent.append(
                sql.SQL("SELECT key::{kt} FROM {log}").format(
                    kt=sql.SQL(source.key_type), log=table_identifier(m.change_table)
                )
            )
        for column in (m.target_version_column, m.target_synced_at):
            if column and column in self.tgt:
                target.recent.append(
                    sql.SQL(
                        "SELECT {k} FROM {t} AS t WHERE {c} >= now() - %(w)s * interval '1 second'"
                    ).format(
                        k=target.key, t=table_identifier(m.target_table), c=sql.Identifier(column)
                    )
                )

    async def _exists(self, table: str) -> bool:
        name = sql.Identifier(*split_table(table)).as_string(self.src_conn)
        cur = await self.src_conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def _castable(self, from_type: str, to_type: str) -> bool:
        return await self._probe(
            self.src_conn,
            sql.SQL("SELECT NULL::{}::{}").format(sql.SQL(from_type), sql.SQL(to_type)),
        )

    async def _hashes(self, type_name: str) -> bool:
        query = sql.SQL("SELECT hash_record_extended(ROW(NULL::{}), 0)").format(sql.SQL(type_name))
        return await self._probe(self.src_conn, query) and await self._probe(self.tgt_conn, query)

    async def _probe(self, conn: Connection, query: sql.Composed) -> bool:
        try:
            await conn.execute(query)
        except psycopg.Error:
            return False
        return True


def _key_kind(col: Column) -> tuple[KeyKind, str]:
    if col.type in _INT_TYPES:
        return "int", col.type
    if col.type == "uuid":
        return "uuid", "uuid"
    if col.type in _TEXT_TYPES:
        return "text", "text"
    raise ConfigError(
        f"verify: key column {col.name!r} is {col.type}; verify compares integer, uuid or text keys"
    )


def _indexable(kind: KeyKind, col: Column, *, cast: bool) -> bool:
    if cast:
        return False
    if kind == "text":
        return col.collation in ("C", "POSIX")
    return True


def _constant(value: Any, col: Column) -> Any:
    if value is None:
        return None
    if col.type in ("json", "jsonb"):
        return Jsonb(value)
    if isinstance(value, bool | int | Decimal | list):
        return value if not isinstance(value, bool) else str(value).lower()
    if isinstance(value, dict):
        return Jsonb(value)
    return str(value)
