package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// LoadConfig shapes a Load. Zero fields take the defaults in brackets.
type LoadConfig struct {
	Brokers []string
	// Commands is the commands topic [locks.commands] and Partitions its
	// partition count [16]; every partition gets LocksPerPartition locks [2].
	Commands          string
	Partitions        int
	LocksPerPartition int
	// Contenders compete for each lock [2], each with its own owner_id.
	Contenders int
	// Lease of every acquire [1 s]. A holder keeps it Hold [20 ms] and
	// releases it, except one grant in AbandonEvery [10], left to expire.
	Lease, Hold  time.Duration
	AbandonEvery int
	// Pause after a refused acquire [50 ms].
	Pause time.Duration
	// Resend an unanswered command (same request_id) every Resend [2 s], as
	// a requester would.
	Resend time.Duration
	// Patient contenders of every lock (the last ones) never resend [none]:
	// they send each command once and wait for its answer however long.
	// A reply committed but never published (an outbox row a crash lost)
	// then leaves its command unanswered for Check to report, where a
	// resend would have been answered from the stored outcome (the same
	// event) and hidden the loss. A send Kafka refused is sent again.
	Patient int
	// ReplyTopic [locks.replies.chaos-<random>].
	ReplyTopic string
	// Modes makes every third lock a semaphore of 2 and every third a
	// read/write lock whose first contender writes and the others read;
	// the rest stay mutexes. Default false: mutexes only.
	Modes bool
	// AbandonOnly adds that many mutexes to every partition [none], each
	// with one owner that leaves every lease it is granted to expire and
	// sends nothing until its lock.expired comes. A contender's acquire
	// ends a lease that ran out on the way (the command path settles the
	// lock first); nobody asks for these, so only the expiry scheduler ends
	// them, and Expiries measures them alone.
	AbandonOnly int
}

// shape is how a contender acquires: its mode and the lock's limit.
type shape struct {
	mode  string
	limit int
}

// shapeOf is the shape of contender c on the k-th lock.
func (c *LoadConfig) shapeOf(k, contender int) shape {
	switch {
	case !c.Modes || k%3 == 0:
		return shape{}
	case k%3 == 1:
		return shape{limit: 2}
	case contender == 0:
		return shape{mode: topics.ModeExclusive}
	}
	return shape{mode: topics.ModeShared}
}

func (c *LoadConfig) defaults() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	defd := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Commands == "" {
		c.Commands = topics.DefaultNames().Commands
	}
	def(&c.Partitions, 16)
	def(&c.LocksPerPartition, 2)
	def(&c.Contenders, 2)
	def(&c.AbandonEvery, 10)
	defd(&c.Lease, time.Second)
	defd(&c.Hold, 20*time.Millisecond)
	defd(&c.Pause, 50*time.Millisecond)
	defd(&c.Resend, 2*time.Second)
	if c.ReplyTopic == "" {
		c.ReplyTopic = fmt.Sprintf("locks.replies.chaos-%08x", rand.Uint32())
	}
}

// request is one command as its requester saw it.
type request struct {
	id        string
	owner     string // its contender
	partition int
	sent      time.Time // first send
	answered  time.Time // first answer (zero: none yet)
	once      bool      // a patient contender's: never resent for want of an answer
	done      chan struct{}
}

// Load drives lock traffic on every partition and records what it sees.
type Load struct {
	cfg  LoadConfig
	prod *kgo.Client
	cons *kgo.Client

	mu       sync.Mutex
	reqs     map[string]*request
	order    []*request
	replies  []topics.Event
	sources  []string // each reply's publisher (its ce_source header), by index
	resends  int
	stopping bool
	// abandoned are the abandon-only locks; ends has a channel per granted
	// abandon-only lease ("lock#token"), closed at its lock.expired.
	abandoned map[string]bool
	ends      map[string]chan struct{}
	// whens are When's conditions not yet met.
	whens []when

	stopOnce sync.Once
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// StartLoad creates the reply topic and starts the contenders.
func StartLoad(ctx context.Context, cfg LoadConfig) (*Load, error) {
	cfg.defaults()
	prod, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.DefaultProduceTopic(cfg.Commands),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0))
	if err != nil {
		return nil, err
	}
	resp, err := kadm.NewClient(prod).CreateTopic(ctx, 4, -1, nil, cfg.ReplyTopic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		prod.Close()
		return nil, fmt.Errorf("creating reply topic %s: %w", cfg.ReplyTopic, err)
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(cfg.Brokers...), kgo.ConsumeTopics(cfg.ReplyTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(50*time.Millisecond))
	if err != nil {
		prod.Close()
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	l := &Load{cfg: cfg, prod: prod, cons: cons, reqs: map[string]*request{}, cancel: cancel,
		abandoned: map[string]bool{}, ends: map[string]chan struct{}{}}
	for p := range cfg.Partitions {
		for i := range cfg.AbandonOnly {
			l.abandoned[fmt.Sprintf("p%03d-a%d", p, i)] = true
		}
	}
	l.wg.Go(func() { l.consume(lctx) })
	for p := range cfg.Partitions {
		for i := range cfg.LocksPerPartition {
			lock := fmt.Sprintf("p%03d-l%d", p, i)
			for c := range cfg.Contenders {
				owner, sh := fmt.Sprintf("%s-o%d", lock, c), cfg.shapeOf(p*cfg.LocksPerPartition+i, c)
				once := c >= cfg.Contenders-cfg.Patient
				l.wg.Go(func() { l.contend(lctx, p, lock, owner, sh, once) })
			}
		}
		for i := range cfg.AbandonOnly {
			lock := fmt.Sprintf("p%03d-a%d", p, i)
			l.wg.Go(func() { l.abandon(lctx, p, lock, lock+"-o0") })
		}
	}
	return l, nil
}

func (l *Load) consume(ctx context.Context) {
	for {
		fs := l.cons.PollFetches(ctx)
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			var ev topics.Event
			if json.Unmarshal(r.Value, &ev) != nil {
				return
			}
			source := ""
			for _, h := range r.Headers {
				if h.Key == topics.HeaderCESource {
					source = string(h.Value)
				}
			}
			l.receive(ev, source, now)
		})
	}
}

// receive records one reply read at now from source (its ce_source).
func (l *Load) receive(ev topics.Event, source string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.replies = append(l.replies, ev)
	l.sources = append(l.sources, source)
	if li := ev.LockInfo; li != nil && l.abandoned[li.LockName] {
		switch {
		case ev.Type == topics.TypeExpired:
			if ch := l.endOf(li.LockName, li.FencingToken); !closed(ch) {
				close(ch)
			}
		case ev.Type == topics.TypeAcquired && ev.Success:
			// Registered here, before the request is answered below, not by
			// abandon once its call returns: Stop takes the leases to wait
			// for once every acquire in flight is answered, and a lease
			// registered later would be left out and never seen to expire
			// (Expiries' Unexpired). Every grant read counts, as in
			// Expiries, not only the one its requester takes.
			l.endOf(li.LockName, li.FencingToken)
		}
	}
	q := l.reqs[ev.RequestID]
	if q != nil && ev.Type != topics.TypeQueued && q.answered.IsZero() {
		q.answered = now
		close(q.done)
	}
	if len(l.whens) > 0 {
		r := Read{Event: ev, Source: source, Partition: -1}
		if q != nil {
			r.Partition, r.Sent = q.partition, q.sent
		}
		l.whens = slices.DeleteFunc(l.whens, func(w when) bool {
			if w.cond(r) {
				close(w.met)
				return true
			}
			return false
		})
	}
}

// Read is a reply as the load read it, for When.
type Read struct {
	Event topics.Event
	// Source is its ce_source: "lockworker/" and the instance that
	// applied the command (its relay may not be the one that published it).
	Source string
	// Partition is the commands partition of the command it answers, and
	// Sent that command's first send; -1 and zero for a reply to none of
	// the load's commands (a lock.expired).
	Partition int
	Sent      time.Time
}

type when struct {
	cond func(Read) bool
	met  chan struct{}
}

// When returns a channel closed once cond returns true. cond is called
// with each reply read from now on, in the order read, until then; it
// runs under the load's lock, so it must not call the load.
func (l *Load) When(cond func(Read) bool) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	met := make(chan struct{})
	l.whens = append(l.whens, when{cond: cond, met: met})
	return met
}

// contend is one owner's loop on one lock; once says it never resends.
func (l *Load) contend(ctx context.Context, partition int, lock, owner string, sh shape, once bool) {
	grants := 0
	for n := 0; ctx.Err() == nil; n++ {
		ev, ok := l.call(ctx, partition, topics.Command{Operation: "acquire", LockName: lock, OwnerID: owner,
			LeaseDuration: l.cfg.Lease.Seconds(), RequestID: fmt.Sprintf("%s-%d-acq", owner, n), Mode: sh.mode, Limit: sh.limit}, once)
		if !ok {
			return
		}
		if ev.Type != topics.TypeAcquired {
			sleep(ctx, l.cfg.Pause+rand.N(l.cfg.Pause))
			continue
		}
		grants++
		if grants%l.cfg.AbandonEvery == 0 {
			sleep(ctx, l.cfg.Lease+l.cfg.Pause) // left to expire
			continue
		}
		sleep(ctx, l.cfg.Hold)
		if _, ok := l.call(ctx, partition, topics.Command{Operation: "release", LockName: lock, OwnerID: owner,
			RequestID: fmt.Sprintf("%s-%d-rel", owner, n)}, once); !ok {
			return
		}
	}
}

// abandon is the one owner of an abandon-only lock: it takes the lock,
// leaves the lease to expire and asks again once its lock.expired came.
func (l *Load) abandon(ctx context.Context, partition int, lock, owner string) {
	for n := 0; ctx.Err() == nil; n++ {
		ev, ok := l.call(ctx, partition, topics.Command{Operation: "acquire", LockName: lock, OwnerID: owner,
			LeaseDuration: l.cfg.Lease.Seconds(), RequestID: fmt.Sprintf("%s-%d-acq", owner, n)}, false)
		if !ok {
			return
		}
		if ev.Type != topics.TypeAcquired || ev.LockInfo == nil {
			sleep(ctx, l.cfg.Pause+rand.N(l.cfg.Pause))
			continue
		}
		l.mu.Lock()
		end := l.endOf(lock, ev.LockInfo.FencingToken) // receive made it with the grant
		l.mu.Unlock()
		select {
		case <-end:
		case <-ctx.Done():
		}
	}
}

// endOf is the channel closed at the lock.expired of the abandon-only
// lease of lock with token; l.mu is held.
func (l *Load) endOf(lock string, token int64) chan struct{} {
	key := fmt.Sprintf("%s#%d", lock, token)
	ch := l.ends[key]
	if ch == nil {
		ch = make(chan struct{})
		l.ends[key] = ch
	}
	return ch
}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// call sends c until it is answered (once: sends it once, again only if
// Kafka refused the send); false when the load stops first.
func (l *Load) call(ctx context.Context, partition int, c topics.Command, once bool) (topics.Event, bool) {
	c.ReplyTo = l.cfg.ReplyTopic
	v, err := c.Encode()
	if err != nil {
		panic(err) // a Command always encodes
	}
	q := &request{id: c.RequestID, owner: c.OwnerID, partition: partition, sent: time.Now(), once: once, done: make(chan struct{})}
	l.mu.Lock()
	if l.stopping {
		l.mu.Unlock()
		return topics.Event{}, false
	}
	l.reqs[q.id] = q
	l.order = append(l.order, q)
	l.mu.Unlock()
	refused := make(chan struct{}, 1)
	for {
		l.prod.Produce(ctx, &kgo.Record{Key: []byte(c.Key()), Value: v, Partition: int32(partition)}, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case refused <- struct{}{}:
				default:
				}
			}
		})
		var resend <-chan time.Time // nil, never ready: once
		if !once {
			resend = time.After(l.cfg.Resend)
		}
		select {
		case <-q.done:
			return l.answer(q.id), true
		case <-ctx.Done():
			return topics.Event{}, false
		case <-refused:
			// Not in Kafka, or not known to be: no answer can come.
			if ctx.Err() != nil {
				return topics.Event{}, false
			}
			sleep(ctx, l.cfg.Pause)
		case <-resend:
		}
		l.mu.Lock()
		l.resends++
		l.mu.Unlock()
	}
}

func (l *Load) answer(id string) topics.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.replies) - 1; i >= 0; i-- {
		if ev := l.replies[i]; ev.RequestID == id && ev.Type != topics.TypeQueued {
			return ev
		}
	}
	return topics.Event{}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// Stop sends no new command, waits up to settle for the ones in flight to
// be answered (resending them, but for the patient contenders') and for the abandon-only leases granted to
// be expired, then stops. Only the first call does
// anything (a later one waits for it to end).
func (l *Load) Stop(settle time.Duration) {
	l.stopOnce.Do(func() { l.stop(settle) })
}

func (l *Load) stop(settle time.Duration) {
	l.settle(settle)
	l.cancel()
	l.wg.Wait()
	l.prod.Close()
	l.cons.Close()
}

// settle is stop's wait: no new command is sent, and within settle the
// commands in flight are answered and then the abandon-only leases granted
// expire. Every grant read has its lease's channel in l.ends by the time its
// request counts as answered (receive, under l.mu), so once every request
// is answered the one snapshot of l.ends holds every lease granted.
func (l *Load) settle(settle time.Duration) {
	l.mu.Lock()
	l.stopping = true
	var open []*request
	for _, q := range l.order {
		if q.answered.IsZero() {
			open = append(open, q)
		}
	}
	l.mu.Unlock()
	deadline := time.After(settle)
	wait := func(chs []chan struct{}) bool {
		for _, ch := range chs {
			select {
			case <-ch:
			case <-deadline:
				return false
			}
		}
		return true
	}
	done := make([]chan struct{}, len(open))
	for i, q := range open {
		done[i] = q.done
	}
	// The leases' ends once every acquire is answered: no grant comes after.
	if wait(done) {
		l.mu.Lock()
		var ends []chan struct{}
		for _, ch := range l.ends {
			if !closed(ch) {
				ends = append(ends, ch)
			}
		}
		l.mu.Unlock()
		wait(ends)
	}
}

// History is what the load saw, for Check.
func (l *Load) History() History {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := History{Replies: slices.Clone(l.replies)}
	for _, q := range l.order {
		h.Sent = append(h.Sent, q.id)
	}
	return h
}

// Stats of the commands first sent in a window.
type Stats struct {
	Commands, Unanswered int
	// Worst and P99 time from a command's first send to its first answer
	// over the commands sent, and how many answered commands took over a
	// second.
	Worst, P99 time.Duration
	OverSecond int
	// CorrectedP99 is the p99 time to answer corrected for coordinated
	// omission (see Load.Stats).
	CorrectedP99 time.Duration
	// Once counts the commands of patient contenders (LoadConfig.Patient),
	// and OnceLate those of them answered after LoadConfig.Resend: a lost
	// reply to one of these is what a resend would have hidden.
	Once, OnceLate int
}

// Window is a span of time, From inclusive, To exclusive.
type Window struct{ From, To time.Time }

func (w Window) has(t time.Time) bool { return !t.Before(w.From) && t.Before(w.To) }

// statsMax bounds the histogram: a longer wait counts as an hour.
const statsMax = time.Hour

// Stats covers the commands first sent in any of the windows (all commands
// when none is given). A command still in flight counts as unanswered.
//
// A contender has one command in flight: while its partition has no owner
// it waits and sends nothing, so a percentile over the commands sent counts
// a stall once however long it lasts (coordinated omission). CorrectedP99
// counts what a requester sending at the contender's usual interval i
// (intervals, over the whole load) would have seen: a command that took d
// adds the waits d-i, d-2i, ... that are at least i of the commands sent
// every i meanwhile (HdrHistogram's RecordCorrectedValue): nothing when
// d < 2i, and the last wait, under i, is left out.
func (l *Load) Stats(ws ...Window) Stats {
	// Copied under the lock, computed outside it: the contenders and the
	// reply consumer wait on l.mu, and Stats runs while they work.
	l.mu.Lock()
	all := make([]sample, len(l.order))
	for i, q := range l.order {
		all[i] = sample{owner: q.owner, sent: q.sent, answered: q.answered, once: q.once}
	}
	l.mu.Unlock()
	return stats(all, ws, l.cfg.Resend)
}

// sample is what Stats needs of a request.
type sample struct {
	owner          string
	sent, answered time.Time
	once           bool
}

func stats(all []sample, ws []Window, resend time.Duration) Stats {
	interval := intervals(all)
	h := hdrhistogram.New(1, statsMax.Microseconds(), 3)
	var s Stats
	var took []time.Duration
	for _, q := range all {
		if len(ws) > 0 && !slices.ContainsFunc(ws, func(w Window) bool { return w.has(q.sent) }) {
			continue
		}
		s.Commands++
		if q.once {
			s.Once++
		}
		if q.answered.IsZero() {
			s.Unanswered++
			continue
		}
		d := q.answered.Sub(q.sent)
		if q.once && d > resend {
			s.OnceLate++
		}
		took = append(took, d)
		if d > time.Second {
			s.OverSecond++
		}
		_ = h.RecordCorrectedValue(min(max(d, time.Microsecond), statsMax).Microseconds(), interval[q.owner].Microseconds())
	}
	if len(took) > 0 {
		slices.Sort(took)
		s.Worst, s.P99 = took[len(took)-1], NearestRank(took, 99)
		s.CorrectedP99 = time.Duration(h.ValueAtQuantile(99)) * time.Microsecond
	}
	return s
}

// NearestRank is the pct-th percentile of sorted (ascending, not empty) by
// the nearest rank: the ceil(pct/100 * n)-th smallest sample, in integers
// so that a whole rank is not pushed up by a float's error. lockbench's
// exact percentiles are these too.
func NearestRank(sorted []time.Duration, pct int) time.Duration {
	return sorted[(pct*len(sorted)+99)/100-1]
}

// intervals is each contender's usual time from one first send to the next
// (none for a contender that sent once): the mean of its gaps, leaving out
// those over ten times their median. Its gaps fall in clusters (an answer;
// an answer and the hold; an answer and the pause after a refusal), so the
// median alone sits at the edge of two and jumps between them from run to
// run, and the correction with it; the mean moves only as the mix does. The
// gaps left out are the stalls (the very waits being corrected for, which
// commands / active time would count) and the leases left to expire
// (lockbench: over 1.05 s, beyond ten times any median under 105 ms), rare
// enough to sway the mean by chance; few gaps fall near the cut.
func intervals(all []sample) map[string]time.Duration {
	sent := map[string][]time.Time{} // a contender's calls follow one another in all
	for _, q := range all {
		sent[q.owner] = append(sent[q.owner], q.sent)
	}
	iv := map[string]time.Duration{}
	for owner, ts := range sent {
		if len(ts) < 2 {
			continue
		}
		gaps := make([]time.Duration, len(ts)-1)
		for i := range gaps {
			gaps[i] = ts[i+1].Sub(ts[i])
		}
		slices.Sort(gaps)
		limit := 10 * gaps[len(gaps)/2]
		var sum time.Duration
		n := 0
		for _, g := range gaps {
			if g > limit {
				break
			}
			sum += g
			n++
		}
		iv[owner] = sum / time.Duration(n) // n >= 1: the median itself is kept
	}
	return iv
}

// Resends is how many times a command was sent again: for want of an
// answer, or because Kafka refused its send.
func (l *Load) Resends() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.resends
}

// Expiries measures the lock.expired events of the abandon-only leases
// (LoadConfig.AbandonOnly) that ended in [from, to): no command settles
// them, so each is the expiry scheduler's. Late is the worst time from a
// lease's end to its lock.expired (database time); AfterTakeover, over the
// leases that ended while their partition had no owner (expired more than
// a second late), the worst time from the takeover to the lock.expired;
// Unexpired counts the leases that ended with no lock.expired seen. The
// takeover is the first event of the partition, after the lease ended,
// published by the replica that expired it (its new owner at work: the old
// owner may have answered other commands between the lease's end and its
// own end); or, where that replica's events of the partition fall silent
// for over a second before the lock.expired, the first after its last such
// silence (the lock.expired itself, when the silence lasts until it). A
// replica killed and restarted under its name (one ce_source) takes its
// partitions back: the killed process's last answers are not the new one's
// takeover.
type Expiries struct {
	Count, Orphaned, Unexpired int
	Late, AfterTakeover        time.Duration
}

// takeoverSilence is the gap in a replica's events of a partition that
// Expiries takes for the partition having had no owner: far above the
// gaps of a partition under lockbench's load, far below a failover's.
const takeoverSilence = time.Second

// Expiries covers the abandon-only leases that ended in w.
func (l *Load) Expiries(w Window) Expiries {
	l.mu.Lock()
	defer l.mu.Unlock()
	byPart := map[string][]time.Time{} // partition prefix of the lock name and publisher -> event times
	granted := map[string]bool{}       // "lock#token" of the abandon-only leases that ended in w
	for i, ev := range l.replies {
		li := ev.LockInfo
		if li == nil {
			continue
		}
		// Expiries are left out: the anchor is the new owner answering commands.
		if len(li.LockName) >= 4 && ev.Type != topics.TypeExpired {
			p := li.LockName[:4] + " " + l.sources[i]
			byPart[p] = append(byPart[p], ev.OccurredAt.Time)
		}
		if ev.Type == topics.TypeAcquired && ev.Success && l.abandoned[li.LockName] && li.ExpiresAt != nil && w.has(li.ExpiresAt.Time) {
			granted[fmt.Sprintf("%s#%d", li.LockName, li.FencingToken)] = true
		}
	}
	for _, ts := range byPart {
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
	}
	var x Expiries
	seen := map[string]bool{}
	for n, ev := range l.replies {
		li := ev.LockInfo
		if ev.Type != topics.TypeExpired || li == nil || li.ExpiresAt == nil || !l.abandoned[li.LockName] || seen[ev.EventID] {
			continue
		}
		seen[ev.EventID] = true
		delete(granted, fmt.Sprintf("%s#%d", li.LockName, li.FencingToken))
		end := li.ExpiresAt.Time
		if !w.has(end) {
			continue
		}
		x.Count++
		late := ev.OccurredAt.Sub(end)
		x.Late = max(x.Late, late)
		if late <= time.Second || len(li.LockName) < 4 {
			continue
		}
		x.Orphaned++
		ts := byPart[li.LockName[:4]+" "+l.sources[n]]
		i := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(end) })
		if i == len(ts) {
			continue
		}
		takeover, last := ts[i], ts[i]
		for _, t := range ts[i+1:] {
			if t.After(ev.OccurredAt.Time) {
				break
			}
			if t.Sub(last) > takeoverSilence {
				takeover = t
			}
			last = t
		}
		if ev.OccurredAt.Sub(last) > takeoverSilence {
			takeover = ev.OccurredAt.Time // silent until the lock.expired, its first act
		}
		x.AfterTakeover = max(x.AfterTakeover, ev.OccurredAt.Sub(takeover))
	}
	x.Unexpired = len(granted)
	return x
}
