// Package store is lockworker's PostgreSQL boundary: the pgx pool, the
// migrations runner, the transaction helper that retries transient failures,
// the consumer offsets that make each batch's effect exactly-once, and the
// hot tables' statistics and VACUUM (vacuum.go).
//
// pgx errors are translated here into the sentinel errors below, so callers
// decide with errors.Is and never look at SQLSTATE codes.
//
// # Exported names
//
// Everything here is for the worker, the relay, the maintenance loops,
// lockbench and the tests of this module only.
package store
