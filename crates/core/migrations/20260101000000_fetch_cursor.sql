-- Where the polling link fetcher stopped within a day, so that the next invocation
-- resumes there (keyset paging on PublicationDate). Nullable: the Python download
-- service never reads these columns, and a row the Python system wrote simply
-- has no cursor, so that day is re-read from its start (duplicates are skipped).
ALTER TABLE granule_count ADD COLUMN IF NOT EXISTS cursor_publication_date timestamp NULL;
ALTER TABLE granule_count ADD COLUMN IF NOT EXISTS cursor_skip bigint NULL;
ALTER TABLE granule_count ADD COLUMN IF NOT EXISTS completed boolean NOT NULL DEFAULT false;
