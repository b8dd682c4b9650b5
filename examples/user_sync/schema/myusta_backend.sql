-- Seed 004's source: the users of myusta_backend (the example's shape; any table with a
-- primary key and an updated_at column works the same way).
CREATE TABLE IF NOT EXISTS users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    first_name text,
    last_name text,
    email text,
    phone text,
    role text NOT NULL DEFAULT 'customer',
    status text NOT NULL DEFAULT 'active',
    avatar_url text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The seed's index for its scheduled query; the lookback scans updated_at with it.
CREATE INDEX IF NOT EXISTS idx_users_status_updated ON users (status, updated_at DESC);

-- updated_at follows every change, so the lookback window and the version guard see it.
CREATE OR REPLACE FUNCTION users_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS users_touch_updated_at ON users;
CREATE TRIGGER users_touch_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_touch_updated_at();
