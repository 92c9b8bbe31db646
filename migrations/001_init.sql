-- The lock state machine's tables. DESIGN.md "PostgreSQL" explains each.

-- Fencing tokens for every lock come from this one sequence, so they are
-- strictly increasing across all locks and never reused (a rolled-back
-- nextval leaves a gap, never a repeat).
CREATE SEQUENCE fencing_tokens AS bigint NO CYCLE;

CREATE TABLE locks (
    namespace         text        NOT NULL DEFAULT '',
    lock_name         text        NOT NULL,
    -- 'free' exists only inside the transaction that creates the row and grants it.
    status            text        NOT NULL CHECK (status IN ('free', 'acquired', 'released', 'expired')),
    owner_id          text,
    fencing_token     bigint,
    acquired_at       timestamptz,
    expires_at        timestamptz,
    lease_duration    double precision,
    owner_metadata    jsonb,
    acquisition_count bigint      NOT NULL DEFAULT 0,
    extension_count   bigint      NOT NULL DEFAULT 0,
    -- Where the holder hears of its lease's end, and the acquire it answered.
    reply_to          text,
    holder_request_id text,
    -- waiter_count mirrors lock_waiters so the common path never reads the queue.
    waiter_count      integer     NOT NULL DEFAULT 0 CHECK (waiter_count >= 0),
    -- The commands partition whose worker watches this lease.
    source_partition  integer     NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (namespace, lock_name)
);

-- The expiry scheduler finds a partition's next ending lease here.
CREATE INDEX locks_held_expiry ON locks (source_partition, expires_at) WHERE status = 'acquired';
-- Cleanup finds idle ended rows here.
CREATE INDEX locks_ended_idle ON locks (updated_at) WHERE status IN ('released', 'expired');

CREATE TABLE lock_waiters (
    id               bigserial   PRIMARY KEY,
    namespace        text        NOT NULL,
    lock_name        text        NOT NULL,
    owner_id         text        NOT NULL,
    request_id       text        NOT NULL,
    lease_duration   double precision NOT NULL,
    owner_metadata   jsonb,
    reply_to         text,
    deadline         timestamptz NOT NULL,
    source_partition integer     NOT NULL,
    enqueued_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- An owner waits at most once per lock.
    UNIQUE (namespace, lock_name, owner_id),
    FOREIGN KEY (namespace, lock_name) REFERENCES locks (namespace, lock_name)
);
CREATE INDEX lock_waiters_fifo ON lock_waiters (namespace, lock_name, id);
CREATE INDEX lock_waiters_deadline ON lock_waiters (source_partition, deadline);

-- Append-only history: every acquired, released, extended and expired.
CREATE TABLE lock_events (
    id            bigserial   PRIMARY KEY,
    event_id      uuid        NOT NULL,
    namespace     text        NOT NULL,
    lock_name     text        NOT NULL,
    type          text        NOT NULL,
    owner_id      text        NOT NULL,
    fencing_token bigint      NOT NULL,
    occurred_at   timestamptz NOT NULL
);
CREATE INDEX lock_events_occurred ON lock_events (occurred_at);

-- Records waiting to be published. Ids follow commit order within a
-- partition because every writer first locks that partition's offset row.
CREATE TABLE outbox (
    id               bigserial   PRIMARY KEY,
    source_partition integer     NOT NULL,
    topic            text        NOT NULL,
    key              bytea,
    value            bytea       NOT NULL,
    headers          jsonb       NOT NULL DEFAULT '[]',
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts         integer     NOT NULL DEFAULT 0,
    -- Set when the row is parked after repeated failures: retried after it.
    parked_until     timestamptz,
    last_error       text
);
CREATE INDEX outbox_partition ON outbox (source_partition, id);

-- The outcome of every applied request_id, re-sent when it comes again.
CREATE TABLE processed_requests (
    request_id   text        PRIMARY KEY,
    outcome      bytea       NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX processed_requests_age ON processed_requests (processed_at);

-- The source of truth for consumption: the next offset to apply.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (group_id, topic, partition)
);
