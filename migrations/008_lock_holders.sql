-- Lock model v2: holders as rows (shared locks, counting semaphores). A lock
-- has a limit and any number of holders, each with its own owner, mode,
-- fencing token and lease; the docs/design.md "Lock model" explains why.
-- Every lease in force is converted: its holder row carries the same token,
-- times, metadata and reply_to, and the same partition watches it. Waiters
-- keep their places (their mode is exclusive, as every v1 acquire's was).
--
-- Workers of the previous version cannot run beside this schema: they read
-- and write the holder columns of locks that this migration moves. Stop them
-- all before the first worker of this version starts (it migrates); one
-- started afterwards stops at start ("current version 8 is outside the
-- valid versions": tern knows no later schema than its own files).

CREATE TABLE lock_holders (
    namespace        text        NOT NULL,
    lock_name        text        NOT NULL,
    owner_id         text        NOT NULL,
    mode             text        NOT NULL CHECK (mode IN ('exclusive', 'shared')),
    fencing_token    bigint      NOT NULL,
    acquired_at      timestamptz NOT NULL,
    expires_at       timestamptz NOT NULL,
    lease_duration   double precision NOT NULL,
    owner_metadata   jsonb,
    extension_count  bigint      NOT NULL DEFAULT 0,
    -- Where the holder hears of its lease's end, and the acquire it answered.
    reply_to         text,
    request_id       text,
    -- The commands partition whose expiry scheduler watches this lease.
    source_partition integer     NOT NULL,
    -- An owner holds a lock at most once.
    PRIMARY KEY (namespace, lock_name, owner_id),
    FOREIGN KEY (namespace, lock_name) REFERENCES locks (namespace, lock_name)
);
-- The expiry scheduler finds a partition's next ending lease here.
CREATE INDEX lock_holders_expiry ON lock_holders (source_partition, expires_at);
-- A hot table, as locks (migration 007): a row per grant, deleted at its end.
ALTER TABLE lock_holders SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 5000,
    autovacuum_vacuum_cost_delay = 0
);

INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration,
        owner_metadata, extension_count, reply_to, request_id, source_partition)
    SELECT namespace, lock_name, owner_id, 'exclusive', fencing_token, acquired_at, expires_at, lease_duration,
        owner_metadata, extension_count, reply_to, holder_request_id, source_partition
    FROM locks WHERE status = 'acquired';

-- locks keeps what concerns the whole lock: its limit, how many hold it (and
-- how many of them in shared mode: the one-statement common cases decide
-- from the row alone), waiters and grants, and the lease that ended last,
-- which the lock shows while nobody holds it.
ALTER TABLE locks
    ADD COLUMN lock_limit   integer NOT NULL DEFAULT 1 CHECK (lock_limit >= 1),
    ADD COLUMN holder_count integer NOT NULL DEFAULT 0 CHECK (holder_count >= 0),
    ADD COLUMN shared_count integer NOT NULL DEFAULT 0 CHECK (shared_count >= 0 AND shared_count <= holder_count),
    ADD COLUMN ended_mode   text;
UPDATE locks SET holder_count = 1, owner_id = NULL, fencing_token = NULL, acquired_at = NULL, expires_at = NULL,
    lease_duration = NULL, owner_metadata = NULL, extension_count = 0
    WHERE status = 'acquired';
UPDATE locks SET ended_mode = 'exclusive' WHERE status IN ('released', 'expired');
DROP INDEX locks_held_expiry;
ALTER TABLE locks DROP COLUMN reply_to;
ALTER TABLE locks DROP COLUMN holder_request_id;
ALTER TABLE locks RENAME COLUMN owner_id TO ended_owner_id;
ALTER TABLE locks RENAME COLUMN fencing_token TO ended_fencing_token;
ALTER TABLE locks RENAME COLUMN acquired_at TO ended_acquired_at;
ALTER TABLE locks RENAME COLUMN expires_at TO ended_expires_at;
ALTER TABLE locks RENAME COLUMN lease_duration TO ended_lease_duration;
ALTER TABLE locks RENAME COLUMN owner_metadata TO ended_owner_metadata;
ALTER TABLE locks RENAME COLUMN extension_count TO ended_extension_count;

ALTER TABLE lock_waiters ADD COLUMN mode text NOT NULL DEFAULT 'exclusive' CHECK (mode IN ('exclusive', 'shared'));
