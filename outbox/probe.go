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
// behind the probe's. A topic's first failure is taken out of the pass
// the same way: a unit whose publish is still running probeGrace after
// the pass's other units were answered becomes a probe (probeRest), its
// publish going on without the pass (Run's passes, not OrderAcrossTopics,
// whose order across topics is that wait). The probe is not bounded more
// tightly than any publish: kgo fails every record buffered for a Kafka
// partition once the first one's context ends, other relay partitions'
// records of the same topic too.

// probes are one Run's probes: those running, and those that returned
// with their outcome, for the next pass to settle. Their rows' bytes are
// counted in the relay's budget (Relay.probed) from their start until
// they are taken (taken).
type probes struct {
	wg   sync.WaitGroup
	mu   sync.Mutex
	done []probed
}

type probed struct {
	u     unit
	bytes int // counted in Relay.probed
	err   error
	at    time.Time // when the publish returned
	acks  uint64    // partition.acks when it started
}

// startProbes starts a probe of each unit whose topic backs off after a
// failure, within the probes' bounds (probeFits; a unit past them is
// published in the pass, as any), and returns the others. A unit of a
// topic a probe publishes already (OrderAcrossTopics splits a topic's rows
// into runs) is dropped: its rows stay in the table, behind the probe's;
// one of a topic whose earlier run was kept for the pass is kept too, or
// it could overtake that run. p.lock is held.
func (r *Relay) startProbes(ctx context.Context, p *partition, units []unit) []unit {
	if len(p.blocked) == 0 {
		return units // every pass comes here: nothing to probe, nothing to allocate
	}
	running := p.probing()
	kept := map[string]bool{}
	return slices.DeleteFunc(units, func(u unit) bool {
		b, ok := p.blocked[u.topic]
		if !ok || b.failures == 0 || kept[u.topic] {
			return false
		}
		if b.probing {
			return true
		}
		size := rowBytes(u.rows)
		if !r.probeFits(running, size) {
			kept[u.topic] = true
			return false
		}
		running++
		// Its own copy: a run of OrderAcrossTopics is a slice of the
		// whole batch, which the probe would keep otherwise.
		u.rows = slices.Clone(u.rows)
		end := p.beginProbe(u, size)
		go func() { end(r.publish(ctx, p, u.topic, u.rows)) }()
		return true
	})
}

// probing counts the partition's probes running. p.lock is held.
func (p *partition) probing() int {
	n := 0
	for _, b := range p.blocked {
		if b.probing {
			n++
		}
	}
	return n
}

// probeFits says whether one more probe of size bytes of rows fits beside
// the partition's running ones, and counts its bytes in the relay's budget
// if so: at most maxConcurrentTopics of the partition, the relay's probes
// holding at most its budget, but for the partition's first, which runs
// whatever its size and whatever the other partitions' probes hold (each
// partition's stuck topic is still probed; its other topics' units go in
// its passes while the budget is full).
func (r *Relay) probeFits(running, size int) bool {
	return running < maxConcurrentTopics && r.probed.take(size, running == 0)
}

// beginProbe makes u, of size bytes of rows (counted in the relay's budget
// by probeFits), a probe: its topic waits (block.probing), its rows out of
// the reads and hand-offs, until the pass after the returned end was
// called with the publish's outcome settles it (settleProbes). p.lock is
// held.
func (p *partition) beginProbe(u unit, size int) (end func(error)) {
	pr := p.probes
	b := p.blocked[u.topic]
	b.probing = true
	p.blocked[u.topic] = b
	pr.wg.Add(1)
	acks := p.acks
	return func(err error) {
		defer pr.wg.Done()
		pr.mu.Lock()
		pr.done = append(pr.done, probed{u: u, bytes: size, err: err, at: time.Now(), acks: acks})
		pr.mu.Unlock()
		p.signal()
	}
}

// probeRest makes probes of the units of a pass's publish still running
// (rest, by index in units), whose outcomes are still to come on outcomes
// (those of the others were taken), unless they do not all fit the
// probes' bounds (probeFits): it then returns false and changes nothing,
// and the pass waits for them. When ctx ends first, the publish is left
// behind (finished closes when it returns): Run deletes the rows Kafka
// acknowledged of it (handOver), the others are published again. p.lock
// is held.
func (r *Relay) probeRest(ctx context.Context, p *partition, units []unit, rest []int, outcomes <-chan outcome, finished <-chan struct{}) bool {
	running := p.probing()
	sizes := make(map[int]int, len(rest))
	for _, k := range rest {
		size := rowBytes(units[k].rows)
		if !r.probeFits(running, size) {
			for _, n := range sizes {
				r.probed.give(n)
			}
			return false
		}
		sizes[k] = size
		running++
	}
	ends := make(map[int]func(error), len(rest))
	for _, k := range rest {
		ends[k] = p.beginProbe(units[k], sizes[k])
	}
	go func() {
		for len(ends) > 0 {
			select {
			case o := <-outcomes:
				ends[o.k](o.err)
				delete(ends, o.k)
			case <-ctx.Done():
				p.left.leave(p.left.current(), finished, unsettled(units, outcomes), true)
				for _, end := range ends {
					end(ctx.Err())
				}
				return
			}
		}
	}()
	return true
}

// rowBytes is what rows hold in memory: keys, values and headers.
func rowBytes(rows []row) int {
	n := 0
	for _, x := range rows {
		n += len(x.key) + len(x.value) + len(x.headers)
	}
	return n
}

// taken returns the probes that returned since it was last called, their
// bytes given back to b (the relay's budget).
func (pr *probes) taken(b *budget) []probed {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	done := pr.done
	pr.done = nil
	for _, d := range done {
		b.give(d.bytes)
	}
	return done
}

// settleProbes accounts the probes that returned since the last pass, each
// as settle does a publish (a failure while Kafka acknowledged other
// publishes of the partition is the topic's own, and pauses nothing), and
// has the next pass read the table for the rows behind them. p.lock is
// held.
func (r *Relay) settleProbes(ctx context.Context, p *partition) passResult {
	ps := &passState{failed: map[string]bool{}}
	done := p.probes.taken(&r.probed)
	if len(done) == 0 {
		return ps.res
	}
	for _, d := range done {
		b := p.blocked[d.u.topic]
		b.probing, b.until = false, time.Now() // as if its backoff ended now: a failure starts the next
		p.blocked[d.u.topic] = b
		ps.at = d.at // setAside clears it once it publishes anew
		r.settle(ctx, p, d.u, d.err, ps, p.acks != d.acks)
	}
	p.readTable.Store(true)
	return r.passDone(ctx, ps)
}

// endProbes, as Run ends, waits for its probes (each returns at once, its
// publish left behind in p.left if Kafka has not answered: handOver waits
// for it, and deletes what Kafka acknowledged of it) and deletes the rows
// of those Kafka acknowledged, rather than have the partition's next owner
// publish them again. They are taken, their bytes given back, before
// p.lock, which the database may keep: the rows are in the table then,
// and the relay's other partitions need not wait for this one's next Run
// for the room. p.lock is taken, as by deleteNow.
func (r *Relay) endProbes(ctx context.Context, p *partition) {
	p.probes.wg.Wait()
	done := p.probes.taken(&r.probed)
	lctx, cancel := beyond(ctx, queryTimeout)
	defer cancel()
	if !p.acquire(lctx) {
		return
	}
	defer p.release()
	var answers []answer
	for _, d := range done {
		answers = append(answers, answer{d.u, d.err, d.at})
	}
	for t, b := range p.blocked { // for a DrainOnce after Run (tests)
		if b.probing {
			b.probing, b.until = false, time.Now()
			p.blocked[t] = b
		}
	}
	r.deleteAtEnd(ctx, p, answers)
}
