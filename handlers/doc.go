// Package handlers is the lock state machine. Each operation lives in its own
// file and applies one Command inside a store transaction, returning the
// Events it causes; a Batch collects their outbox rows, history rows and
// request outcomes and writes them in a few statements when it is flushed, so
// N commands cost a few round trips more than one.
//
// Every decision is made by the lock model in handlers/rules, pure functions
// over one lock's state: the general path locks the lock's row, loads its
// holders, the head of its queue, its waiters past their deadline and the
// command owner's waiter, asks the rules and writes their effects (lock.go).
//
// The common cases take one statement (atonce.go): an acquire of a lock
// nobody holds or waits for, or that it may join (a reader beside readers,
// a free place of a semaphore) with nobody waiting, a holder's release of its lease in force when
// nobody waits, and a holder's extend of its lease in force, both when no
// lease of the lock has run out (and, for the extend of a lock with
// waiters, when it has no lock-delay and no waiter past its deadline:
// settling would hand it on). The statement applies only in that case;
// otherwise it changes nothing and the general path handles the command.
// QueueAtOnce sends the common cases of a whole batch ahead in one round
// trip, one set-based statement per operation (the first command of each
// lock, up to the first cleanup), so per-lock order is kept; a session's
// end changes locks of any key, so none applies to a lock with a lease or
// wait of a session, which a session command before it may end. A batch may
// span commands partitions (Batch.For): each command's rows are written
// under its own. TestDifferential checks that both paths and the rules'
// in-memory model give the same events.
//
// # States of a lock
//
// A locks row holds what concerns the whole lock (limit, counts, the lease
// that ended last); each lease is a lock_holders row.
//
//	(no row) --acquire--> acquired (holders >= 1)
//	acquired --the last holder releases--> released
//	acquired --the last lease ends (expiry, or seen by any command)--> expired
//	acquired --a revoke ends the last lease--> revoked
//	released|expired|revoked --acquire, or a waiter's turn--> acquired (new fencing token)
//	released|expired|revoked --idle longer than max_age, no waiters--> (row deleted)
//
// A lease with a lock_delay that ends by expiry or revoke sets the row's
// delay_until: no grant before it (the common cases check it too); the
// scheduler of the row's partition hands the lock to its waiters when it
// passes (ExpireDue, NextDues).
//
// A lease is held while the database time is before its expires_at. Every
// decision uses the database's clock: the statement that locks the row also
// returns clock_timestamp(), taken after the row lock is granted, so one
// holder's release always comes before the next grant in time.
//
// # Why each rule
//
//   - Fencing tokens come from one sequence: each lease of a lock gets a
//     greater token than the one before, and no token is ever reused, so a
//     resource guarded by tokens can reject a stale holder even after the
//     lock's row was cleaned up. (Across locks they are unique but follow the
//     order of nextval, not of commands.)
//   - An ended lease is "settled" (lock.expired, next waiters granted) by
//     whichever transaction sees it first: a command on the lock, the expiry
//     scheduler or cleanup. No command ever acts on a lease that has ended.
//   - Waiters are served in strict FIFO order of their arrival (a waiter is
//     granted only when compatible with every holder and no earlier waiter
//     waits, so readers never starve a writer); a waiter whose deadline has
//     passed is answered LOCK_TIMEOUT instead of being granted. A load of
//     a lock (a command's, or a phase of the expiry step's) answers a
//     bound of those (dueBound), the oldest deadlines first; the others,
//     never granted either, do not hold back the live waiters behind
//     them, only their answers come later (rules.Lock.Due).
//   - A release from an owner still waiting withdraws its place, so a requester
//     that gave up is never granted a lock nobody waits for.
//   - An owner is in a lock's queue at most once. Asking again with a new
//     request_id while waiting gives the new request its place (the old one
//     is answered lock.withdrawn); after its wait ended, the old one is
//     answered LOCK_TIMEOUT and the new one queues at the end. Either way
//     every queued request gets exactly one final answer.
//   - A lease or wait acquired in a session (session.go) has no expiry of
//     its own: it ends with the session, and the session's end (a close, or
//     its expiry seen by its partition's scheduler, which ends the sessions
//     due together at once) ends all of them in one transaction, locks in
//     key order, through the rules (EndSessions) and apply like every other
//     change. A session past its expiry is never granted a lease: a
//     hand-off withdraws its wait instead, unless a keep-alive or end of
//     it is in flight (rules.Lock.SessionLive), and an acquire in it is
//     refused. Nor does its lease outlive it: its holder's acquire ends
//     it, once the session's row, read again after any keep-alive in
//     flight, still shows the expiry passed at the time read after that
//     wait, which the whole decision takes (rereadLapsedSession).
//   - Every valid command's outcome is stored under its request_id; the same
//     request_id again re-sends that outcome (same event_id) and changes
//     nothing. A queued acquire's stored outcome becomes its final answer
//     (granted, timed out or withdrawn) when that answer comes.
//
// # Exported names
//
// Batch, Env, NextDues and the constants are for the worker, the HTTP
// inspection and lockbench of this module only.
package handlers
