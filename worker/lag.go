package worker

import "sync"

// lagMemory is what a worker's last successful Lag read: the next offset of
// each partition it owned then (the stored one, or the log's start for a
// partition never applied). Lag falls back on it when PostgreSQL does not
// answer, so lockworker_consumer_lag keeps reporting, and growing with the
// log's end, during a database outage: no batch commits then, so the stored
// offsets stay where they were read.
type lagMemory struct {
	mu   sync.Mutex
	next map[int32]int64
}

// remember replaces the memory with next, the offsets a successful read
// found for the partitions owned then.
func (m *lagMemory) remember(next map[int32]int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next = next
}

// recall returns the remembered next offset of each partition in owned
// that the last successful read covered; a partition assigned since is
// left out, for its offset is not known.
func (m *lagMemory) recall(owned []int32) map[int32]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int32]int64, len(owned))
	for _, p := range owned {
		if n, ok := m.next[p]; ok {
			out[p] = n
		}
	}
	return out
}
