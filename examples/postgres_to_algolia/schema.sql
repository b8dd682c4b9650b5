-- The example's two source tables (seed 001 indexes products and categories). Safe to re-run:
-- nothing is created twice and no row is touched. The outbox itself (queue table, triggers,
-- stats view, log table, clean-up functions) comes from `syncworker pg install`.
CREATE TABLE IF NOT EXISTS categories (
    id          bigint PRIMARY KEY,
    name        text        NOT NULL,
    slug        text        NOT NULL UNIQUE,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS products (
    id          bigint PRIMARY KEY,
    name        text           NOT NULL,
    description text,
    price       numeric(10, 2) NOT NULL,
    category_id bigint REFERENCES categories (id),
    in_stock    boolean        NOT NULL DEFAULT true,
    updated_at  timestamptz    NOT NULL DEFAULT now()
);
