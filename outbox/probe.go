package outbox

import (
	"context"
	"slices"
	"sync"
	"time"
)

// A topic Kafka was away for (no leader for its partition, a broker that
// does not answer) is tried again in a probe: a publish of its rows that no
// pass waits for. kgo holds such a publish up to its delivery timeout or
// PublishTimeout (30 s by default), and a pass that waited for it would
// hold every other topic of the partition (other requesters' answers, the
// lifecycle and state topics) that long at each retry of its backoff. Its
// rows stay out of the reads and hand-offs while the probe runs (the
// topic's block waits, block.probing), so nothing of it overtakes them;
// the first pass after the probe returned settles its outcome as it would
// a publish of its own (settleProbes), and then reads the topic's rows
// behind the probe's. The probe is not bounded more tightly than any
// publish: kgo fails every record buffered for a Kafka partition once the
// first one's context ends, other relay partitions' records of the same
// topic too.

// probes are one Run's probes: those running, and those that returned
// with their outcome, for the next pass to settle.
type probes struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	done []probed
}

type probed struct {
	u   unit
	err error
}

// startProbes starts a probe of each unit whose topic backs off after a
// failure, up to maxConcurrentTopics probes of the partition (a unit past
// them is published in the pass, as any), and returns the others. A unit
// of a topic a probe publishes already (OrderAcrossTopics splits a topic's
// rows into runs) is dropped: its rows stay in the table, behind the
// probe's. p.lock is held.
func (r *Relay) startProbes(ctx context.Context, p *partition, units []unit) []unit {
	pr := p.probes
	running := 0
	for _, b := range p.blocked {
		if b.probing {
			running++
		}
	}
	return slices.DeleteFunc(units, func(u unit) bool {
		b, ok := p.blocked[u.topic]
		if !ok || b.failures == 0 {
			return false
		}
		if b.probing {
			return true
		}
		if running == maxConcurrentTopics {
			return false
		}
		running++
		b.probing = true
		p.blocked[u.topic] = b
		pr.wg.Add(1)
		go func() {
			defer pr.wg.Done()
			err := r.publish(ctx, p, u.topic, u.rows)
			pr.mu.Lock()
			pr.done = append(pr.done, probed{u: u, err: err})
			pr.mu.Unlock()
			p.signal()
		}()
		return true
	})
}

// settleProbes accounts the probes that returned since the last pass, each
// as settle does a publish, and has the next pass read the table for the
// rows behind them. p.lock is held.
func (r *Relay) settleProbes(ctx context.Context, p *partition) passResult {
	pr := p.probes
	pr.mu.Lock()
	done := pr.done
	pr.done = nil
	pr.mu.Unlock()
	ps := &passState{failed: map[string]bool{}}
	if len(done) == 0 {
		return ps.res
	}
	for _, d := range done {
		b := p.blocked[d.u.topic]
		b.probing, b.until = false, time.Now() // as if its backoff ended now: a failure starts the next
		p.blocked[d.u.topic] = b
		r.settle(ctx, p, d.u, d.err, ps, false)
	}
	p.readTable.Store(true)
	return r.passDone(ctx, ps)
}
