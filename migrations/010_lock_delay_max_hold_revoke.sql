-- Lock-delay, a cap on total hold time, and forced revoke (docs/design.md
-- "Semantics").
--
-- A lease keeps the lock_delay and max_hold of the acquire that got it (a
-- waiter keeps them until it is granted): 0 is none.
ALTER TABLE lock_holders
    ADD COLUMN lock_delay double precision NOT NULL DEFAULT 0 CHECK (lock_delay >= 0),
    ADD COLUMN max_hold   double precision NOT NULL DEFAULT 0 CHECK (max_hold >= 0);
ALTER TABLE lock_waiters
    ADD COLUMN lock_delay double precision NOT NULL DEFAULT 0 CHECK (lock_delay >= 0),
    ADD COLUMN max_hold   double precision NOT NULL DEFAULT 0 CHECK (max_hold >= 0);

-- A lease with a lock_delay that ends otherwise than by its holder's release
-- (expiry, revoke) keeps the lock from granting until delay_until. The
-- scheduler of the row's source_partition hands the lock to its waiters
-- when the delay passes and clears the column; the index finds them.
ALTER TABLE locks ADD COLUMN delay_until timestamptz;
CREATE INDEX locks_delay_by_partition ON locks (source_partition, delay_until) WHERE delay_until IS NOT NULL;

-- 'revoked': the last lease ended by a revoke. Such rows are idle rows too.
ALTER TABLE locks DROP CONSTRAINT locks_status_check;
ALTER TABLE locks ADD CONSTRAINT locks_status_check CHECK (status IN ('free', 'acquired', 'released', 'expired', 'revoked'));
DROP INDEX locks_ended_idle_by_partition;
CREATE INDEX locks_ended_idle_by_partition ON locks (source_partition, updated_at) WHERE status IN ('released', 'expired', 'revoked');
