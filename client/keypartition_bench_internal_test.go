package client

import (
	"strconv"
	"testing"
)

// BenchmarkKeyPartition is the cost per record of finding a key's
// partition, which Locks pays for every record of the lock state topic.
func BenchmarkKeyPartition(b *testing.B) {
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = "tenant/lock-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		keyPartition(keys[i%len(keys)], 16)
	}
}
