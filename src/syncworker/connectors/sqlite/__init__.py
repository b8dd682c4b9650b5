"""Embedded SQLite connectors: a queue table as a source, and a table as an upsert sink.

Only the standard library's ``sqlite3`` is needed, so there is no extra to install.
"""

CONNECTORS = {
    "source:sqlite_queue": "syncworker.connectors.sqlite.source_queue:SqliteQueueSource",
    "sink:sqlite": "syncworker.connectors.sqlite.sink:SqliteSink",
}
