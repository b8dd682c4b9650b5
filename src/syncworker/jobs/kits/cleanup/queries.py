"""Every statement the clean-up kit runs, as constants. The seed's table names are fixed;
the configurable ones (archive and user_stats tables, maintenance tables) are filled in with
``sql.Identifier``; values are always bound parameters."""

from __future__ import annotations

from psycopg import sql

# The cutoff is read once per run from the database's own clock, in its column type
# (TIMESTAMP without time zone, as the seed's NOW() defaults write it), so every batch and
# the dry run compare against the same instant.
CUTOFF = sql.SQL("SELECT LOCALTIMESTAMP - make_interval(secs => %(age_s)s)")
NOW = sql.SQL("SELECT LOCALTIMESTAMP")

STORIES_EXPIRED = sql.SQL("created_at < %(cutoff)s")
SESSIONS_INACTIVE = sql.SQL("COALESCE(last_active_at, created_at) < %(cutoff)s")
MESSAGES_OLD = sql.SQL("created_at < %(cutoff)s")
TEMP_FILES_OLD = sql.SQL("created_at < %(cutoff)s")
PREKEYS_USED = sql.SQL("used_at IS NOT NULL")
WEBSOCKETS_STALE = sql.SQL("is_active AND COALESCE(last_active_at, created_at) < %(cutoff)s")

MEDIA_COLUMNS = sql.SQL("media_url, thumbnail_url")
MESSAGE_ROW_COLUMNS = sql.SQL("media_url, thumbnail_url, to_jsonb(messages)::text")
TEMP_FILE_COLUMNS = sql.SQL("file_path")
PREKEY_COLUMNS = sql.SQL("user_id")
NO_COLUMNS = sql.SQL("NULL")

_BATCH = sql.SQL(
    "SELECT id, {columns} FROM {table} WHERE ({condition}){after} ORDER BY id LIMIT %(limit)s{lock}"
)
_AFTER = sql.SQL(" AND id > %(after)s")
_LOCK = sql.SQL(" FOR UPDATE SKIP LOCKED")


def batch_select(
    table: str, columns: sql.Composable, condition: sql.Composable, *, after: bool, lock: bool
) -> sql.Composed:
    """One batch in id order (keyset: ``id > %(after)s`` past the first), locked with
    SKIP LOCKED unless a dry run reads it: a row another transaction holds is left to the
    next run instead of waited for."""
    return _BATCH.format(
        columns=columns,
        table=sql.Identifier(table),
        condition=condition,
        after=_AFTER if after else sql.SQL(""),
        lock=_LOCK if lock else sql.SQL(""),
    )


_DELETE_IDS = sql.SQL("DELETE FROM {table} WHERE id = ANY(%(ids)s)")


def delete_ids(table: str) -> sql.Composed:
    return _DELETE_IDS.format(table=sql.Identifier(table))


DEACTIVATE_SESSIONS = sql.SQL("UPDATE user_sessions SET is_active = false WHERE id = ANY(%(ids)s)")

_CREATE_ARCHIVE = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {archive} "
    "(LIKE messages INCLUDING ALL, archived_at TIMESTAMP NOT NULL DEFAULT LOCALTIMESTAMP)"
)
# The delete and the copy in one statement: both commit or neither does.
_ARCHIVE_MESSAGES = sql.SQL(
    "WITH gone AS (DELETE FROM messages WHERE id = ANY(%(ids)s) RETURNING *) "
    "INSERT INTO {archive} SELECT gone.*, LOCALTIMESTAMP FROM gone ON CONFLICT (id) DO NOTHING"
)


def create_archive(table: str) -> sql.Composed:
    return _CREATE_ARCHIVE.format(archive=sql.Identifier(table))


def archive_messages(table: str) -> sql.Composed:
    return _ARCHIVE_MESSAGES.format(archive=sql.Identifier(table))


PREKEY_MAX_IDS = sql.SQL(
    "SELECT user_id, max(prekey_id) FROM user_prekeys WHERE user_id = ANY(%(users)s) "
    "GROUP BY user_id"
)
INSERT_PREKEYS = sql.SQL(
    "INSERT INTO user_prekeys (id, user_id, prekey_id, public_key, created_at) "
    "SELECT i, u, p, k, LOCALTIMESTAMP "
    "FROM unnest(%(ids)s::uuid[], %(users)s::uuid[], %(prekey_ids)s::int[], %(keys)s::text[]) "
    "AS t(i, u, p, k)"
)

TABLE_EXISTS = sql.SQL(
    "SELECT 1 FROM pg_catalog.pg_tables "
    "WHERE tablename = %(name)s AND schemaname = ANY(current_schemas(false))"
)

# Every URL a row holds, archived rows included when there is an archive table: an object
# any of them names is not an orphan.
_MEDIA_REFERENCES = sql.SQL(
    "SELECT media_url FROM messages WHERE media_url IS NOT NULL "
    "UNION ALL SELECT thumbnail_url FROM messages WHERE thumbnail_url IS NOT NULL "
    "UNION ALL SELECT media_url FROM stories WHERE media_url IS NOT NULL "
    "UNION ALL SELECT thumbnail_url FROM stories WHERE thumbnail_url IS NOT NULL"
)
_ARCHIVE_REFERENCES = sql.SQL(
    " UNION ALL SELECT media_url FROM {archive} WHERE media_url IS NOT NULL "
    "UNION ALL SELECT thumbnail_url FROM {archive} WHERE thumbnail_url IS NOT NULL"
)


def media_references(archive: str | None) -> sql.SQL | sql.Composed:
    if archive is None:
        return _MEDIA_REFERENCES
    return sql.Composed(
        [_MEDIA_REFERENCES, _ARCHIVE_REFERENCES.format(archive=sql.Identifier(archive))]
    )


CREATE_REFS = sql.SQL("CREATE TEMPORARY TABLE cleanup_media_refs (key TEXT PRIMARY KEY)")
COPY_REFS = sql.SQL("COPY cleanup_media_refs (key) FROM STDIN")
DEDUPE_REFS = sql.SQL(
    "INSERT INTO cleanup_media_refs (key) SELECT DISTINCT k FROM unnest(%(keys)s::text[]) AS k "
    "ON CONFLICT DO NOTHING"
)
UNREFERENCED = sql.SQL(
    "SELECT k FROM unnest(%(keys)s::text[]) AS k "
    "WHERE NOT EXISTS (SELECT 1 FROM cleanup_media_refs r WHERE r.key = k) ORDER BY k"
)

_VACUUM = sql.SQL("VACUUM (ANALYZE) {table}")


def vacuum(table: str) -> sql.Composed:
    return _VACUUM.format(table=sql.Identifier(table))


_CREATE_USER_STATS = sql.SQL(
    "CREATE TABLE IF NOT EXISTS {table} ("
    "user_id UUID PRIMARY KEY, "
    "messages_sent BIGINT NOT NULL DEFAULT 0, "
    "stories BIGINT NOT NULL DEFAULT 0, "
    "active_sessions BIGINT NOT NULL DEFAULT 0, "
    "updated_at TIMESTAMP NOT NULL)"
)
_USER_AGGREGATE = sql.SQL(
    "WITH agg AS (SELECT user_id, sum(m)::bigint AS m, sum(s)::bigint AS s, "
    "sum(a)::bigint AS a FROM ("
    "SELECT sender_id AS user_id, count(*) AS m, 0 AS s, 0 AS a FROM messages "
    "WHERE deleted_at IS NULL GROUP BY sender_id "
    "UNION ALL SELECT user_id, 0, count(*), 0 FROM stories "
    "WHERE deleted_at IS NULL GROUP BY user_id "
    "UNION ALL SELECT user_id, 0, 0, count(*) FROM user_sessions "
    "WHERE is_active GROUP BY user_id"
    ") AS parts GROUP BY user_id) "
)
_UPSERT_USER_STATS = sql.SQL(
    "INSERT INTO {table} (user_id, messages_sent, stories, active_sessions, updated_at) "
    "SELECT user_id, m, s, a, %(run_at)s FROM agg "
    "ON CONFLICT (user_id) DO UPDATE SET messages_sent = EXCLUDED.messages_sent, "
    "stories = EXCLUDED.stories, active_sessions = EXCLUDED.active_sessions, "
    "updated_at = EXCLUDED.updated_at"
)
_COUNT_USERS = sql.SQL("SELECT count(*) FROM agg")
# A user with nothing left to count keeps a row of zeros rather than yesterday's counts.
_ZERO_STALE_USERS = sql.SQL(
    "UPDATE {table} SET messages_sent = 0, stories = 0, active_sessions = 0, "
    "updated_at = %(run_at)s "
    "WHERE updated_at < %(run_at)s AND (messages_sent, stories, active_sessions) <> (0, 0, 0)"
)
_COUNT_STALE_USERS = sql.SQL(
    "SELECT count(*) FROM {table} t "
    "WHERE (t.messages_sent, t.stories, t.active_sessions) <> (0, 0, 0) "
    "AND NOT EXISTS (SELECT 1 FROM agg WHERE agg.user_id = t.user_id)"
)


def create_user_stats(table: str) -> sql.Composed:
    return _CREATE_USER_STATS.format(table=sql.Identifier(table))


def upsert_user_stats(table: str) -> sql.Composed:
    return sql.Composed([_USER_AGGREGATE, _UPSERT_USER_STATS.format(table=sql.Identifier(table))])


def count_users() -> sql.Composed:
    return sql.Composed([_USER_AGGREGATE, _COUNT_USERS])


def zero_stale_users(table: str) -> sql.Composed:
    return _ZERO_STALE_USERS.format(table=sql.Identifier(table))


def count_stale_users(table: str) -> sql.Composed:
    return sql.Composed([_USER_AGGREGATE, _COUNT_STALE_USERS.format(table=sql.Identifier(table))])


HEALTH = sql.SQL("SELECT 1")
