-- Seed 004's target: the users of myusta_chatapp, as syncworker.yaml maps them.
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY,
    first_name text,
    last_name text,
    full_name text,                 -- computed (user_sync_fields.py:full_name)
    email text,
    phone text,
    role text,
    avatar_url text,
    source_system text,             -- constant (the `set` processor)
    source_updated_at timestamptz,  -- the source's updated_at: an older state never wins
    synced_at timestamptz           -- when syncworker last wrote the row
);

-- sync_errors: see migrations/001_create_sync_errors_table.sql (also created by the
-- pipeline's `sync_errors: {create: true}`).
