-- Owner sessions (docs/design.md "Sessions"): one liveness signal for many
-- locks. A session is kept alive by its own keep-alives; a lease acquired
-- with a session_id has no expiry of its own (expires_at NULL) and ends when
-- its holder releases it or when the session ends (closed, or past its
-- expires_at), which also withdraws every wait of the session.
CREATE TABLE sessions (
    -- Chosen by the requester (the SDK takes a UUID): it is the record key
    -- of the session's commands, so they all reach one commands partition.
    id               text        PRIMARY KEY,
    owner_id         text        NOT NULL,
    ttl              double precision NOT NULL,
    expires_at       timestamptz NOT NULL,
    -- Where the owner hears of the session's end.
    reply_to         text,
    -- The commands partition whose expiry scheduler watches the session.
    source_partition integer     NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- The expiry scheduler finds a partition's next ending session here.
CREATE INDEX sessions_expiry ON sessions (source_partition, expires_at);
-- Kept alive often, so hot like locks (migration 007).
ALTER TABLE sessions SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

-- A holder or waiter of a session; its end finds them by these indexes.
ALTER TABLE lock_holders ADD COLUMN session_id text,
    ALTER COLUMN expires_at DROP NOT NULL,
    ADD CONSTRAINT lock_holders_session_or_expiry CHECK ((session_id IS NULL) = (expires_at IS NOT NULL));
ALTER TABLE lock_waiters ADD COLUMN session_id text;
CREATE INDEX lock_holders_session ON lock_holders (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX lock_waiters_session ON lock_waiters (session_id) WHERE session_id IS NOT NULL;
