-- syncworker pg_table: the change log of one source table, the function its triggers call and
-- the triggers. Placeholders in braces are quoted identifiers (or the channel literal) filled
-- in by syncworker.connectors.postgres.table_capture; every statement is idempotent, so
-- re-running the install is harmless.
--
-- The log row is written in the transaction of the change itself: a transaction that stays
-- open for an hour makes its rows visible exactly when it commits, whatever its updated_at,
-- and a listener that was down finds them waiting. The NOTIFY is only a wake-up.

CREATE TABLE IF NOT EXISTS {change_table} (
    id         bigserial   PRIMARY KEY,
    key        text        NOT NULL,
    op         "char"      NOT NULL,  -- I insert, U update, D delete, R re-read, T truncate
    changed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $syncworker$
DECLARE
    old_key text;
    new_key text;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        INSERT INTO {change_table} (key, op) VALUES ('', 'T');
        PERFORM pg_notify({channel}, 'T:');
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_key := OLD.{key}::text;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_key := NEW.{key}::text;
    END IF;
    -- A key changed by an UPDATE is a delete of the old key too, so it does not linger.
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key) THEN
        INSERT INTO {change_table} (key, op) VALUES (old_key, 'D');
        -- Payloads are limited to 8,000 bytes: past that the key is left out.
        PERFORM pg_notify({channel},
            CASE WHEN octet_length(old_key) > 7900 THEN 'D:' ELSE 'D:' || old_key END);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO {change_table} (key, op) VALUES (new_key, left(TG_OP, 1));
        PERFORM pg_notify({channel},
            CASE WHEN octet_length(new_key) > 7900 THEN left(TG_OP, 1) || ':'
                 ELSE left(TG_OP, 1) || ':' || new_key END);
    END IF;
    RETURN NULL;
END
$syncworker$;

CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}();
CREATE OR REPLACE TRIGGER {truncate_trigger} AFTER TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {function}();
