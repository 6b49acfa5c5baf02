-- The transactional outbox of the hand-off to the download service (README, "Record and
-- queue"): one row per granule this system recorded, written in the same statement as the
-- granule row, saying whether its `To Download` message is still owed. A sender claims owed
-- rows with a lease (`lease_until`), sends, then sets `sent_at`.
--
-- A table of its own: the Python download service never reads it and keeps working
-- unchanged. Granules recorded before it existed have no row and count as sent.
CREATE TABLE IF NOT EXISTS granule_outbox (
    granule_id varchar(256) PRIMARY KEY REFERENCES granule (id) ON DELETE CASCADE,
    -- Which path recorded the granule first: 'poll', 'push' or 'audit'.
    found_by varchar(8) NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    -- When SQS accepted the message; NULL while it is owed.
    sent_at timestamptz NULL,
    -- A sender holds an owed row until then; NULL or past: any sender may claim it.
    lease_until timestamptz NULL,
    -- Send attempts that ended without a "sent" mark (failures, releases).
    failed_sends integer NOT NULL DEFAULT 0
);

CREATE INDEX IF NOT EXISTS granule_outbox_owed
    ON granule_outbox (recorded_at) WHERE sent_at IS NULL;
