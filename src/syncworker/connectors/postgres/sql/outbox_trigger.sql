-- syncworker pg_outbox: enqueue every change of one source table (idempotent).
CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {enqueue_function}({key_column}, {table_name});
