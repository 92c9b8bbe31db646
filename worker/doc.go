// Package worker is the consumer-group member that applies lock commands.
//
// The poll loop hands each poll's records to the appliers (Config.Appliers,
// default 1; each owned partition is given to one of them, evenly, for as
// long as it is owned). An applier takes everything queued for it since its
// last transaction and applies it in ONE PostgreSQL transaction, whatever
// the partitions: batches grow with the load instead of transactions
// multiplying with it, so BEGIN, round trips and the COMMIT's WAL flush are
// paid per batch, not per partition (docs/performance.md). Per
// partition the transaction advances the offset row, only from the offset
// this worker expected (each offset is applied once, whichever workers try,
// and a batch retried after a lost connection cannot apply twice), skips
// offsets already applied, and applies the handlers in order; the outbox, history
// and outcome rows of all partitions are written together, each outbox row
// under its own partition. Its round trips: BEGIN, the offsets, the outcome
// prefetch and the common cases (one set-based statement per operation)
// together (store.InTxBatch; after an assignment the stored offsets are read
// and locked first, in a round trip of their own); the general path's
// statements, if any; the outbox/history/outcome writes together with
// COMMIT. Offset rows are locked in partition order, before any lock row,
// as every other writer does. The whole design: docs/design.md
// ("Architecture").
//
// Before COMMIT the batch takes a slot in the relay queue of each partition
// it writes outbox rows for (handoff.go); after the commit it hands them the
// rows, and wakes each partition's expiry scheduler when the batch started
// something due sooner. A retry resolves the slots of the attempt before
// it as it starts (after its backoff and once it has a connection), for
// the relays to read the table until that attempt's transaction has ended
// (its COMMIT may have taken effect without an answer), instead of holding
// back the slots after them until the retries end. A retried batch
// whose offset guard fails asks PostgreSQL whether its last attempt whose
// COMMIT went with writes committed (pg_xact_status of that attempt's
// transaction id: a COMMIT whose answer was lost; no attempt before it can
// have, as it found the offsets where it expected them); if so it is done,
// and reported (metrics, dead-letter warnings) as that attempt's answer
// would have been. Otherwise, or without such an attempt (nothing is
// asked), another worker moved the offset (its new owner, or a stale one
// that lost it unawares: only Kafka knows), and while Kafka assigns it here
// the partition restarts from the stored offset (again within seconds:
// after a delay growing to 5 s); the rest is applied, that attempt not
// asked about again. A partition's first batch (no offset expected yet)
// that finds all of it applied asks the same, only to report what the
// attempt did: its offsets are right either way, so when the question
// fails the batch is done all the same, with a warning that its report
// may be missing. Anything else that fails is
// retried, with backoff and loudly: the applier's other partitions wait
// behind it, which keeps their order and loses nothing (and, once its queue
// is full, the poll loop waits too, and with it every applier's new
// records: backpressure), but a partition
// revoked is dropped from such a batch at its next retry, with what was
// polled for it since, so a rebalance does not wait for the cure (its next
// owner starts from the stored offset). A known limit: a revoked partition
// not in that batch, with records queued behind it or held by a poll
// waiting for room (in any applier's queue), waits for the cure
// (docs/design.md "Failures").
//
// On assignment fetching resumes from the stored offset
// (kgo.AdjustFetchOffsetsFn); Kafka group offsets are committed in the
// background only for lag tooling.
//
// Beside the appliers, per owned partition, run the expiry scheduler (ends
// leases and waiters when due, reading only the partial indexes to know
// when) and the outbox relay. Rebalances are cooperative-sticky and blocked
// while a poll's records are counted (BlockRebalanceOnPoll: each partition's
// pending count, under w.mu), not while they wait for room in an applier's
// queue; a revoked partition is let go once the records polled before are
// applied (or dropped, as above); a lost one (the group session ended in
// error: missed heartbeats, a fenced instance ID, a failed join, sync or
// resume; another may own it already) once they are dropped.
//
// Beside the worker, the Vacuumer (started by cmd/lockworker) keeps the hot
// tables vacuumed where autovacuum does not, one replica at a time.
//
// # Exported names
//
// Worker, Config and the Relay and Metrics interfaces are for
// cmd/lockworker's wiring, lockbench and this module's tests only: the
// service's API is the Kafka contract, not this package.
package worker
