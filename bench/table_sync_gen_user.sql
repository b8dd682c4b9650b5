-- gen_user(i): the deterministic generated row for id i (needs table public.users to exist).
-- Verbatim from ../shared/bench-peers-sync/gen_fn.sql, the peers' data set (bench/table_sync.py).
CREATE OR REPLACE FUNCTION gen_user(i bigint) RETURNS SETOF public.users LANGUAGE sql IMMUTABLE AS $$
  SELECT i,
    fn,
    ln,
    lower(fn) || '.' || lower(ln) || i::text || '@' || (ARRAY['example.com','mail.test','chat.example.org','corp.example.net'])[1 + (hashint8extended(i, 3) & 3)],
    CASE WHEN (hashint8extended(i, 4) & 1023) < 51 THEN NULL
         ELSE '+1' || lpad(((hashint8extended(i, 5) & 9223372036854775807) % 10000000000)::text, 10, '0') END,
    CASE WHEN (hashint8extended(i, 6) & 1023) < 922 THEN 'active' ELSE 'inactive' END,
    CASE WHEN (hashint8extended(i, 7) & 1023) < 205 THEN NULL
         ELSE 'https://cdn.example.com/avatars/' || md5(i::text) || '.png' END,
    ca,
    ca + ((hashint8extended(i, 8) & 9223372036854775807) % 31536000000000) * interval '1 microsecond'
  FROM (SELECT
      (ARRAY['James','Mary','Robert','Patricia','John','Jennifer','Michael','Linda','David','Elizabeth',
             'William','Barbara','Richard','Susan','Joseph','Jessica','Thomas','Sarah','Charles','Karen',
             'Wei','Yuki','Olga','Ahmed','Fatima','Priya','Lucas','Sofia','Mateo','Amara','Noah','Chloe'])[1 + (hashint8extended(i, 1) & 31)] AS fn,
      (ARRAY['Smith','Johnson','Williams','Brown','Jones','Garcia','Miller','Davis','Rodriguez','Martinez',
             'Hernandez','Lopez','Gonzalez','Wilson','Anderson','Thomas','Taylor','Moore','Jackson','Martin',
             'Lee','Perez','Thompson','White','Harris','Sanchez','Clark','Ramirez','Lewis','Robinson',
             'Walker','Young','Allen','King','Wright','Scott','Torres','Nguyen','Hill','Flores',
             'Green','Adams','Nelson','Baker','Hall','Rivera','Campbell','Mitchell','Carter','Roberts',
             'Müller','Schmidt','Dubois','Rossi','Kowalski','Novák','Yılmaz','Ivanova','Tanaka','Kim',
             'O''Brien','van der Berg','Silva','Chen'])[1 + (hashint8extended(i, 2) & 63)] AS ln,
      timestamptz '2019-01-01 00:00:00+00' + i * interval '150 seconds'
        + (hashint8extended(i, 9) & 1048575) * interval '1 microsecond' AS ca) s
$$;
