-- Indexes that keep the reads of one lock's queue proportional to what they
-- return, not to the queue (docs/design.md "Tables"). Without them, every
-- command on a lock with waiters (the general path's read of the head, its
-- waiters past their deadline and the owner's wait; the holder's extend in
-- one statement) walked all the lock's waiters through lock_waiters_fifo to
-- find the few past their deadline or in a session: draining a queue of W
-- waiters read O(W²) rows. Built without CONCURRENTLY, inside the
-- migration's transaction: writes to lock_waiters wait while they build
-- (the table holds only the waits of the moment).
--
-- A lock's waiters past their deadline: lock_waiters_deadline starts with
-- the partition, and a lock's waiters come from many. One more entry per
-- wait (written when it is queued or requeued; the common cases queue
-- none).
CREATE INDEX lock_waiters_lock_deadline ON lock_waiters (namespace, lock_name, deadline);
-- Whether a session waits for a lock (the extend in one statement leaves
-- such a lock to the general path). Partial: only a session's wait has an
-- entry, so waits without a session cost nothing more.
CREATE INDEX lock_waiters_lock_session ON lock_waiters (namespace, lock_name) WHERE session_id IS NOT NULL;
