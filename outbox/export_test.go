package outbox

// NoTakeoverReads makes cfg's relay publish what it is handed from a run's
// first read of the table on, for tests that hand over rows the table does
// not hold: when the transactions in flight at the start end depends on
// the whole PostgreSQL server, other tests included.
func NoTakeoverReads(cfg *Config) { cfg.noTakeoverReads = true }
