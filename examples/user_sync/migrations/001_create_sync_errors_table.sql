-- sync_errors: every error syncworker records for a pipeline (dead letters, failed batches and
-- runs, what the source reports), kept in the target database so it is queried where the data
-- is. Written by the pipeline's `sync_errors:` section; `create: true` runs this same text.
-- record_key is the record's key (seed 004's user_id); state_error_id the id of the same
-- error in the state store (the API's /errors); event_id makes a retried write a no-op.
CREATE TABLE IF NOT EXISTS sync_errors (
    id bigserial PRIMARY KEY,
    error_type text NOT NULL,
    record_key text,
    error_message text NOT NULL,
    stack_trace text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    resolved boolean NOT NULL DEFAULT false,
    resolved_at timestamptz,
    pipeline text NOT NULL,
    state_error_id bigint,
    event_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid()
);
CREATE INDEX IF NOT EXISTS sync_errors_created_at_idx ON sync_errors (created_at DESC);
CREATE INDEX IF NOT EXISTS sync_errors_unresolved_idx ON sync_errors (created_at DESC) WHERE NOT resolved;
CREATE INDEX IF NOT EXISTS sync_errors_error_type_idx ON sync_errors (error_type);
