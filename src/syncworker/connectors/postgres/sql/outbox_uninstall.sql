-- syncworker pg_outbox: remove the functions and the view (triggers are dropped per table
-- first, the tables only when asked). Idempotent.
DROP FUNCTION IF EXISTS {cleanup_function}(integer);
DROP VIEW IF EXISTS {stats};
DROP FUNCTION IF EXISTS {enqueue_function}() CASCADE;
