-- syncworker pg_table: remove the triggers and their function (the change log table only
-- when asked, by table_capture.uninstall). Idempotent.
DROP TRIGGER IF EXISTS {trigger} ON {table};
DROP TRIGGER IF EXISTS {truncate_trigger} ON {table};
DROP FUNCTION IF EXISTS {function}();
