package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/omninode/lockworker/topics"
)

// The burst scenario produces, as fast as the producer goes, an acquire,
// --burst-extends keep-alives and a release of each of many locks, by each
// of --burst-owners owners in turn (a lock's commands are adjacent in its
// partition), and measures how long the worker takes to answer them all. The records pile up faster than the worker
// applies them, so it drains them as it drains a backlog after an outage or
// a restart: a thousand commands (MaxPollRecords) per transaction.

// BurstResult is the burst scenario.
type BurstResult struct {
	Locks    int   `json:"locks"`
	Extends  int   `json:"extends_per_lease"`
	Owners   int   `json:"owners_per_lock"`
	Commands int   `json:"commands"`
	Answered int64 `json:"answered"`
	// Unexpected counts answers that were not lock.acquired,
	// lock.extended or lock.released.
	Unexpected int64 `json:"unexpected"`
	// Seconds is from the first send to the last answer; PerSecond the
	// commands answered as asked (not the Unexpected) over it.
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"commands_per_second"`
	// Latency is each command's, send to answer read.
	Latency dist   `json:"latency"`
	CPU     cpuUse `json:"cpu"`
}

func (b *bench) burst(ctx context.Context) (BurstResult, error) {
	n := b.cfg.BurstLocks
	ops := []string{topics.OpAcquire}
	for range b.cfg.BurstExtends {
		ops = append(ops, topics.OpExtend)
	}
	ops = append(ops, topics.OpRelease)
	owners := max(b.cfg.BurstOwners, 1)
	res := BurstResult{Locks: n, Extends: b.cfg.BurstExtends, Owners: owners, Commands: len(ops) * owners * n}
	lat := newHist()
	var answered, unexpected atomic.Int64
	var last atomic.Int64 // unix ns of the last answer
	done := make(chan struct{})
	cmds := make([]topics.Command, 0, res.Commands)
	for i := range n {
		lock := b.rid("burst", i)
		for o := range owners {
			owner := fmt.Sprintf("burst-owner-%d-%d", i, o)
			for k, op := range ops {
				cmds = append(cmds, topics.Command{RequestID: b.rid("burst", i, o, k), Operation: op, LockName: lock, OwnerID: owner, LeaseDuration: 60})
			}
		}
	}
	sent := make([]atomic.Int64, len(cmds)) // unix ns
	for k, c := range cmds {
		want := map[string]string{topics.OpAcquire: topics.TypeAcquired, topics.OpExtend: topics.TypeExtended, topics.OpRelease: topics.TypeReleased}[c.Operation]
		b.d.on(c.RequestID, func(r reply) bool {
			if r.ev.Type == topics.TypeQueued {
				return false
			}
			lat.add(r.at.Sub(time.Unix(0, sent[k].Load())))
			if r.ev.Type != want {
				unexpected.Add(1)
			}
			last.Store(r.at.UnixNano())
			if answered.Add(1) == int64(len(cmds)) {
				close(done)
			}
			return true
		})
	}
	defer func() {
		for _, c := range cmds {
			b.d.forget(c.RequestID)
		}
	}()
	cpu0 := takeCPU(b.t.proc, b.t.brokerProc, b.t.pg)
	start := time.Now()
	for k, c := range cmds {
		sent[k].Store(time.Now().UnixNano())
		if err := b.d.send(ctx, c); err != nil {
			return BurstResult{}, err
		}
	}
	timeout := time.Minute + time.Duration(n)*time.Millisecond
	select {
	case <-done:
	case <-time.After(timeout):
	case <-ctx.Done():
		// What was answered so far would read as the whole burst's.
		return BurstResult{}, fmt.Errorf("cut short after %.1f s, %d of %d commands answered: %w",
			time.Since(start).Seconds(), answered.Load(), len(cmds), ctx.Err())
	}
	res.CPU = cpuBetween(cpu0, takeCPU(b.t.proc, b.t.brokerProc, b.t.pg))
	res.Answered, res.Unexpected, res.Latency = answered.Load(), unexpected.Load(), lat.dist()
	if l := last.Load(); l > 0 {
		res.answeredIn(time.Unix(0, l).Sub(start))
	}
	if res.Answered < int64(len(cmds)) {
		return res, fmt.Errorf("%d of %d commands answered within %s", res.Answered, len(cmds), timeout)
	}
	return res, nil
}

// answeredIn sets the burst's Seconds and PerSecond: a refusal (an
// unexpected answer) is often faster than what was asked, and is not in the
// rate.
func (r *BurstResult) answeredIn(d time.Duration) {
	r.Seconds = d.Seconds()
	r.PerSecond = float64(r.Answered-r.Unexpected) / r.Seconds
}

func (r *BurstResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nburst: %d commands (acquire, %d extends and release of %d locks by %d owners each in turn) sent at once: %d answered in %.2f s, %s commands/s answered as asked, %d unexpected (not in the rate)\n",
		r.Commands, r.Extends, r.Locks, r.Owners, r.Answered, r.Seconds, fmtNum(r.PerSecond), r.Unexpected)
	fmt.Fprintf(w, "  send -> answer                   n=%-6d p50 %8.2f  p95 %8.2f  p99 %8.2f  max %8.2f ms\n",
		r.Latency.N, r.Latency.P50, r.Latency.P95, r.Latency.P99, r.Latency.Max)
	printCPU(w, r.CPU)
}
