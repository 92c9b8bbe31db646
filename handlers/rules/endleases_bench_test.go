package rules

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// manyReaders is a shared lock's n readers, granted together by one
// hand-off (one lease_duration, so they expire together), and a writer
// waiting behind them; at now they have all expired.
func manyReaders(n int) (holders []Holder, writer Waiter, now time.Time) {
	granted := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		holders = append(holders, Holder{Owner: fmt.Sprintf("r%d", i), Mode: Shared, Token: int64(i + 1),
			AcquiredAt: granted, ExpiresAt: granted.Add(30 * time.Second), Lease: 30, RequestID: fmt.Sprintf("req-%d", i)})
	}
	writer = Waiter{ID: 1, Owner: "w", Mode: Exclusive, Lease: 30, Deadline: granted.Add(time.Hour)}
	return holders, writer, granted.Add(31 * time.Second)
}

// benchmarkEnding times end on a lock holding n readers, loaded afresh
// (untimed) for each run: ending them all takes time in proportion to n.
func benchmarkEnding(b *testing.B, end func(l *Lock) []Effect) {
	for _, n := range []int{5000, 10000, 20000, 40000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			holders, writer, now := manyReaders(n)
			for range b.N {
				b.StopTimer()
				l := &Lock{Limit: 1, Holders: slices.Clone(holders), Head: []Waiter{writer}, Waiting: 1, Now: now,
					NextTokens: func(n int) []int64 { return make([]int64, n) }}
				b.StartTimer()
				if effs := end(l); len(effs) != n+1 {
					b.Fatalf("%d effects, want %d", len(effs), n+1)
				}
			}
		})
	}
}

// BenchmarkSettleManyReaders: the expiry step of a lock whose n readers
// have expired together (lock.expired each, then the writer's grant).
func BenchmarkSettleManyReaders(b *testing.B) {
	benchmarkEnding(b, func(l *Lock) []Effect { return l.Expire() })
}

// BenchmarkRevokeManyHolders: a revoke without owner_id of a lock with n
// readers in force.
func BenchmarkRevokeManyHolders(b *testing.B) {
	benchmarkEnding(b, func(l *Lock) []Effect {
		l.Now = l.Holders[0].AcquiredAt
		return l.Revoke("", "/k")
	})
}
