package outbox

import "time"

// NoTakeoverReads makes cfg's relay publish what it is handed from a run's
// first read of the table on, for tests that hand over rows the table does
// not hold: when the transactions that had an id at the start end depends
// on the whole PostgreSQL server, other tests included.
func NoTakeoverReads(cfg *Config) { cfg.noTakeoverReads = true }

// AwaitWarnAfter sets how long the table reads wait for transactions to end
// before cfg's relay logs it.
func AwaitWarnAfter(cfg *Config, d time.Duration) { cfg.awaitWarnAfter = d }
