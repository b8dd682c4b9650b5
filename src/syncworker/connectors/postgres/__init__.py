"""PostgreSQL connectors: a table as an upsert sink; an outbox or a table (snapshot + changes) as
a source.

Needs the ``postgres`` extra (psycopg 3 and psycopg_pool); nothing is imported from here, so a
missing extra only matters when a postgres connector is used.
"""

CONNECTORS = {
    "sink:postgres": "syncworker.connectors.postgres.sink:PostgresSink",
    "source:pg_outbox": "syncworker.connectors.postgres.source_outbox:PgOutboxSource",
    "source:pg_table": "syncworker.connectors.postgres.source_table:PgTableSource",
}
