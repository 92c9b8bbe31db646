// Package worker is the consumer-group member that applies lock commands.
//
// Each owned partition of the commands topic gets its own goroutine. Every
// poll's records of a partition are applied in ONE PostgreSQL transaction that
// first locks the partition's offset row and advances it, only from the offset
// this worker expected (a worker that lost the partition cannot commit, and a
// batch retried after a lost connection cannot apply twice), skips offsets
// already applied, applies the handlers in order and writes outbox and
// history. Its round trips: BEGIN; the offset, the outcome prefetch and the
// one-statement common cases together; the general path's statements, if
// any; the outbox/history/outcome writes; COMMIT. After the commit the
// partition's relay is woken in process. On assignment fetching resumes from the stored offset
// (kgo.AdjustFetchOffsetsFn); Kafka group offsets are committed afterwards only
// for lag tooling.
//
// Beside it, per owned partition, run the expiry scheduler (ends leases and
// waiters when due, reading only the partial indexes to know when) and the
// outbox relay. Rebalances are cooperative-sticky and blocked while a poll's
// records are being handed out (BlockRebalanceOnPoll); a revoked partition
// finishes its in-flight batch before it is let go.
package worker
