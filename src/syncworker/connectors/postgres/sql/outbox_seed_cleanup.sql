-- The seed's clean-up name, kept for its monitoring queries: SELECT cleanup_old_sync_records(7);
CREATE OR REPLACE FUNCTION cleanup_old_sync_records(keep_days integer) RETURNS bigint
LANGUAGE sql AS $syncworker$ SELECT {cleanup_function}(keep_days) $syncworker$;
