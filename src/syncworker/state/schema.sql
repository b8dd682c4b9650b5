-- The SQLite state store. Applied at open; every statement is safe to run again.
CREATE TABLE IF NOT EXISTS checkpoints (
    pipeline   TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (pipeline, name)
);

CREATE TABLE IF NOT EXISTS runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline      TEXT NOT NULL,
    mode          TEXT NOT NULL,
    started_at    REAL NOT NULL,
    finished_at   REAL NOT NULL,
    duration_ms   REAL NOT NULL,
    status        TEXT NOT NULL,
    processed     INTEGER NOT NULL,
    written       INTEGER NOT NULL,
    dead_lettered INTEGER NOT NULL,
    filtered      INTEGER NOT NULL,
    streams       TEXT NOT NULL,
    error         TEXT,
    -- JSON: added, updated, removed, key, sync_id (added by _create_schema to older stores)
    details       TEXT
);
CREATE INDEX IF NOT EXISTS runs_pipeline ON runs (pipeline, id);

CREATE TABLE IF NOT EXISTS errors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    type        TEXT NOT NULL,
    pipeline    TEXT NOT NULL,
    record_key  TEXT,
    message     TEXT NOT NULL,
    stack       TEXT,
    metadata    TEXT NOT NULL,
    created_at  REAL NOT NULL,
    resolved    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS errors_pipeline ON errors (pipeline, id);

CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline    TEXT NOT NULL,
    sink        TEXT,
    stream      TEXT NOT NULL,
    key         TEXT NOT NULL,
    op          TEXT NOT NULL,
    data        TEXT NOT NULL,
    meta        TEXT NOT NULL,
    error       TEXT NOT NULL,
    error_type  TEXT NOT NULL,
    stack       TEXT,
    status      TEXT NOT NULL DEFAULT 'dead',
    attempts    INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_pipeline ON dead_letters (pipeline, status, id);
