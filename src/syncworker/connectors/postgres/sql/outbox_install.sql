-- syncworker pg_outbox: queue table, log table, stats view, enqueue trigger function and
-- clean-up function. Placeholders in braces are identifiers (or the channel literal) filled in
-- by syncworker.connectors.postgres.outbox; every statement is idempotent, so re-running the
-- install is harmless.

CREATE TABLE IF NOT EXISTS {queue} (
    id              bigserial PRIMARY KEY,
    table_name      text        NOT NULL,
    record_id       text        NOT NULL,
    operation       text        NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz
);

-- Claims scan only unfinished rows in id order; completed rows never enter this index.
CREATE INDEX IF NOT EXISTS {claim_index} ON {queue} (id)
    WHERE status IN ('pending', 'processing');
CREATE INDEX IF NOT EXISTS {processed_index} ON {queue} (processed_at)
    WHERE status = 'completed';
-- After each ack: was a later change of the same record claimed or sent meanwhile?
CREATE INDEX IF NOT EXISTS {record_index} ON {queue} (table_name, record_id, id);

CREATE TABLE IF NOT EXISTS {log} (
    id          bigserial PRIMARY KEY,
    queue_ids   bigint[]    NOT NULL,
    table_name  text        NOT NULL,
    record_id   text        NOT NULL,
    operation   text        NOT NULL,
    result      text        NOT NULL CHECK (result IN ('success', 'retry', 'failed')),
    error       text,
    worker      text,
    synced_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {log_index} ON {log} (synced_at);

CREATE OR REPLACE VIEW {stats} AS
SELECT
    count(*) FILTER (WHERE status = 'pending')                         AS pending,
    count(*) FILTER (WHERE status = 'processing')                      AS processing,
    count(*) FILTER (WHERE status = 'completed')                       AS completed,
    count(*) FILTER (WHERE status = 'failed')                          AS failed,
    count(*) FILTER (WHERE status = 'processing' AND locked_until < now()) AS expired_leases,
    extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending'))
                                                                       AS oldest_pending_age_s,
    count(*) FILTER (WHERE status = 'completed' AND processed_at > now() - interval '1 hour')
                                                                       AS completed_last_hour
FROM {queue};

-- Trigger arguments: the key column, then the table name as the configuration spells it. An UPDATE that changes the key also
-- enqueues a DELETE of the old key, so the old document does not linger downstream.
CREATE OR REPLACE FUNCTION {enqueue_function}() RETURNS trigger
LANGUAGE plpgsql AS $syncworker$
DECLARE
    old_key text;
    new_key text;
    source_table text := TG_ARGV[1];
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_key := to_jsonb(OLD) ->> TG_ARGV[0];
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_key := to_jsonb(NEW) ->> TG_ARGV[0];
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key) THEN
        INSERT INTO {queue} (table_name, record_id, operation)
        VALUES (source_table, old_key, 'DELETE');
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO {queue} (table_name, record_id, operation)
        VALUES (source_table, new_key, TG_OP);
    END IF;
    -- Notifications with the same payload are folded into one per transaction.
    PERFORM pg_notify({channel}, {queue_name});
    RETURN NULL;
END
$syncworker$;

CREATE OR REPLACE FUNCTION {cleanup_function}(keep_days integer) RETURNS bigint
LANGUAGE plpgsql AS $syncworker$
DECLARE
    queue_rows bigint;
    log_rows bigint;
BEGIN
    DELETE FROM {queue}
    WHERE status = 'completed' AND processed_at < now() - keep_days * interval '1 day';
    GET DIAGNOSTICS queue_rows = ROW_COUNT;
    DELETE FROM {log} WHERE synced_at < now() - keep_days * interval '1 day';
    GET DIAGNOSTICS log_rows = ROW_COUNT;
    RETURN queue_rows + log_rows;
END
$syncworker$;
