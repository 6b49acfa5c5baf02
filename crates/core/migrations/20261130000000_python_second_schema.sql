-- A database still at the Python system's first schema (Alembic revision 1c8c38951d47:
-- granule_count keyed by date alone, no platform) is brought to its second (ec89745f0bac),
-- which the first migration here assumes: `CREATE TABLE IF NOT EXISTS` left the old
-- table as it was, and every granule_count statement names (date, platform).
-- Idempotent: on any database already keyed by (date, platform) nothing changes.

-- Rows counted before platforms were told apart counted both, as in the Python system.
ALTER TABLE granule_count ADD COLUMN IF NOT EXISTS platform varchar NOT NULL DEFAULT 'S2A+S2B';

DO $$
DECLARE
    key_name name;
    key_columns name[];
BEGIN
    SELECT c.conname,
           array(SELECT a.attname
                 FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, position)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                 ORDER BY k.position)
      INTO key_name, key_columns
      FROM pg_constraint c
     WHERE c.conrelid = 'granule_count'::regclass AND c.contype = 'p';
    -- The name is looked up: Alembic's and Postgres's default agree, a hand-made table may not.
    IF key_columns = ARRAY['date']::name[] THEN
        EXECUTE format(
            'ALTER TABLE granule_count DROP CONSTRAINT %I, '
            'ADD CONSTRAINT granule_count_pkey PRIMARY KEY (date, platform)',
            key_name);
    END IF;
END
$$;
