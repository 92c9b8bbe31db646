package main

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omninode/lockworker/topics"
)

// bench is one run: the target, the driver and the results so far.
type bench struct {
	cfg *Config
	t   *target
	d   *driver
	run string // prefix of every lock name and request_id of this run
	rep *Report
	// progress is where "running scenario N" lines go (stderr).
	progress func(format string, args ...any)
	rss      []rssMark
	cyclers  atomic.Int64 // numbers each cycler, so no two share a request_id
}

func (b *bench) rid(parts ...any) string {
	s := b.run
	for _, p := range parts {
		s += "-" + fmt.Sprint(p)
	}
	return s
}

// quiesce waits until the worker has published everything (outbox empty),
// so one scenario's tail does not load the next. An outbox not empty
// within limit, or that cannot be counted, is a note of the report and a
// line of the progress: what runs next starts under that load. after
// names what ran.
func (b *bench) quiesce(ctx context.Context, after string, limit time.Duration) {
	if b.t.st == nil {
		time.Sleep(time.Second)
		return
	}
	start := time.Now()
	var n int64
	var err error
	for {
		err = b.t.st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n)
		if err != nil || n == 0 || time.Since(start) > limit || ctx.Err() != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	var undrained string
	switch {
	case ctx.Err() != nil || err == nil && n == 0:
		return // cut short (the run's error says so), or drained
	case err != nil:
		undrained = fmt.Sprintf("the outbox could not be counted (%v)", err)
	default:
		undrained = fmt.Sprintf("%d outbox rows still unpublished after %s", n, limit)
	}
	note := fmt.Sprintf("after %s, %s: what ran next, if anything, started with the worker still busy", after, undrained)
	b.rep.note(note)
	b.progress("%s", note)
}

// ---- 1 throughput -------------------------------------------------------

// ThroughputResult is scenario 1.
type ThroughputResult struct {
	Via       string  `json:"via"`
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Commands  int64   `json:"commands"`
	PerSecond float64 `json:"commands_per_second"`
	// Errors are of the commands sent in the window, as the latencies.
	Errors int64 `json:"errors"`
	// Unanswered of the Errors are the commands sent before the window's
	// end and still unanswered when the grace after it (EndGrace) ended.
	Unanswered int64 `json:"unanswered_at_window_end"`
	Acquire    dist  `json:"acquire_latency"`
	Release    dist  `json:"release_latency"`
	// Batches and MeanBatch come from the in-process worker's metrics.
	Batches      int64         `json:"worker_batches,omitempty"`
	MeanBatch    float64       `json:"worker_mean_batch_records,omitempty"`
	MeanBatchMS  float64       `json:"worker_mean_batch_ms,omitempty"`
	CPU          cpuUse        `json:"cpu"`
	WorkerCPUPer *float64      `json:"worker_cpu_seconds_per_1000_commands,omitempty"`
	PGCPUPer     *float64      `json:"postgres_cpu_seconds_per_1000_commands,omitempty"`
	SQL          []sqlStat     `json:"sql_statements,omitempty"`
	Activity     []activityRow `json:"pg_stat_activity,omitempty"`
}

// cycler is one virtual client's acquire then release of its own lock, via
// raw records or the client SDK. It reports how long each took and how many
// commands completed; with an error, the command that failed is the one
// after those, and its time is how long it took to fail. ctx ending (the
// end of the grace after the window) is such an error, for the command it
// was waiting for.
type cycler func(ctx context.Context, client, i int) (acq, rel time.Duration, done int, err error)

func (b *bench) rawCycler(timeout time.Duration) cycler { return b.shapedCycler(timeout, lockShape{}) }

// lockShape says which lock each virtual client takes, and how.
type lockShape struct {
	// lock, when set, is the one lock every client takes; else each client
	// takes its own.
	lock  string
	mode  string
	limit int
	wait  float64 // seconds in the queue
}

// shapedCycler is rawCycler for any lock shape.
func (b *bench) shapedCycler(timeout time.Duration, shape lockShape) cycler {
	gen := b.cyclers.Add(1)
	return func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		lock := shape.lock
		if lock == "" {
			lock = b.rid("tp", "raw", c)
		}
		owner := fmt.Sprintf("tp-owner-%d", c)
		var took [2]time.Duration
		for k, op := range []string{topics.OpAcquire, topics.OpRelease} {
			// A request_id used again would be answered from its stored
			// outcome without any lock work.
			cmd := topics.Command{RequestID: b.rid("tp", gen, c, i, op[:1]), Operation: op, LockName: lock, OwnerID: owner, LeaseDuration: 60}
			if op == topics.OpAcquire {
				cmd.Mode, cmd.Limit, cmd.WaitTimeout = shape.mode, shape.limit, shape.wait
			}
			start := time.Now()
			r, err := b.d.call(ctx, cmd, timeout)
			if err != nil {
				took[k] = time.Since(start)
				return took[0], took[1], k, err
			}
			took[k] = r.at.Sub(start)
			want := map[string]string{topics.OpAcquire: topics.TypeAcquired, topics.OpRelease: topics.TypeReleased}[op]
			if r.ev.Type != want {
				return took[0], took[1], k, fmt.Errorf("%s answered %s %s", op, r.ev.Type, r.ev.ErrorCode)
			}
		}
		return took[0], took[1], 2, nil
	}
}

func (b *bench) throughput(ctx context.Context, via string, cycle cycler, profile bool) (ThroughputResult, error) {
	cfg := b.cfg
	res := ThroughputResult{Via: via, Clients: cfg.Clients}
	var completed, errs, unanswered atomic.Int64
	var reported atomic.Int64
	// windowStart is set when the window starts: a command sent before it
	// (in the warm-up) is in no figure, however late it is answered or
	// fails. windowEnd is set when the window ends: the clients start no
	// cycle after it, and no command sent after it is in any figure.
	var windowStart, windowEnd atomic.Pointer[time.Time]
	acq, rel := newHist(), newHist()
	// lctx ends with the grace after the window (or a signal).
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; windowEnd.Load() == nil && lctx.Err() == nil; i++ {
				start := time.Now()
				a, r, n, err := cycle(lctx, c, i)
				if ctx.Err() != nil {
					return // a signal: the window's figures are dropped
				}
				completed.Add(int64(n))
				// A cycle in flight at the window's end sends its release
				// in the grace too (a semaphore's queue moves only as its
				// holders release), but that release is in no figure.
				begin, end := windowStart.Load(), windowEnd.Load()
				sentIn := func(at time.Time) bool { return begin != nil && !at.Before(*begin) && (end == nil || !at.After(*end)) }
				relSent, failed := start.Add(a), start
				if n == 1 {
					failed = relSent
				}
				// A failed command is in the figures too, with the time it
				// took to fail (a timeout's whole wait; one the grace's end
				// cut off, its wait until then): left out, a build that
				// times out would show only its fast cycles.
				if sentIn(start) {
					acq.add(a)
				}
				if n > 0 && sentIn(relSent) {
					rel.add(r)
				}
				if err == nil || !sentIn(failed) {
					continue
				}
				errs.Add(1)
				if lctx.Err() != nil {
					unanswered.Add(1) // still waiting when the grace ended
				} else if reported.Add(1) <= 5 {
					b.progress("throughput (%s): %v", via, err)
				}
			}
		}()
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return res, ctx.Err()
	}
	// The measured window. The profile first: failing, it leaves no
	// sampler or tracing on.
	if profile && cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	var sampler *activitySampler
	if profile && cfg.PGSample && b.t.st != nil {
		s, err := startSampler(b.t.dbURL, 10*time.Millisecond)
		if err == nil {
			sampler = s
		}
	}
	if profile && b.t.sql != nil {
		b.t.sql.enable(true)
	}
	pg := b.t.pg
	if sampler != nil && pg != nil {
		// Its queries, 100 a second, are lockbench's, not the load's.
		pg = pg.without(sampler.backend)
	}
	var b0, r0 int64
	var t0 time.Duration
	if b.t.metrics != nil {
		b0, r0, t0 = b.t.metrics.snapshot()
	}
	// From here on the commands sent are in the figures. Counted just
	// before each snapshot: its time is taken before it scans /proc, so the
	// commands and the seconds are of one window.
	begin := time.Now()
	windowStart.Store(&begin)
	c0 := completed.Load()
	cpu0 := takeCPU(b.t.proc, b.t.brokerProc, pg)
	var cut error
	select {
	case <-time.After(cfg.Duration):
	case <-ctx.Done():
		cut = ctx.Err()
	}
	c1 := completed.Load()
	cpu1 := takeCPU(b.t.proc, b.t.brokerProc, pg)
	// The grace: the commands in flight may still be answered, into the
	// figures but not the window's count; those unanswered when it ends
	// are cut off, errors.
	end := cpu1.at
	windowEnd.Store(&end)
	defer time.AfterFunc(cfg.EndGrace, stop).Stop()
	if profile && cfg.CPUProfile != "" {
		pprof.StopCPUProfile()
	}
	if profile && cfg.MemProfile != "" {
		if f, err := os.Create(cfg.MemProfile); err == nil {
			_ = pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	if b.t.metrics != nil {
		b1, r1, t1 := b.t.metrics.snapshot()
		res.Batches = b1 - b0
		if res.Batches > 0 {
			res.MeanBatch = float64(r1-r0) / float64(res.Batches)
			res.MeanBatchMS = ms(t1-t0) / float64(res.Batches)
		}
	}
	if b.t.sql != nil && profile {
		b.t.sql.enable(false)
		res.SQL = b.t.sql.top(15)
	}
	if sampler != nil {
		res.Activity = sampler.stop()
	}
	wg.Wait()
	if cut != nil {
		// A shorter window's figures would read as the whole window's.
		return ThroughputResult{Via: via, Clients: cfg.Clients}, fmt.Errorf("%s: the window was cut short after %.1f s of %s: %w",
			via, cpu1.at.Sub(cpu0.at).Seconds(), cfg.Duration, cut)
	}
	res.CPU = cpuBetween(cpu0, cpu1)
	res.Seconds = res.CPU.Seconds
	res.Commands = c1 - c0
	res.Unanswered = unanswered.Load()
	res.Errors = errs.Load()
	res.PerSecond = float64(res.Commands) / res.Seconds
	res.WorkerCPUPer = perThousand(res.CPU.WorkerCPU, res.Commands)
	res.PGCPUPer = perThousand(res.CPU.PostgresCPU, res.Commands)
	res.Acquire, res.Release = acq.dist(), rel.dist()
	return res, nil
}

// ---- 2 latency ----------------------------------------------------------

// LatencyResult is scenario 2.
type LatencyResult struct {
	Rate    int     `json:"rate_per_second"`
	Seconds float64 `json:"seconds"`
	// WarmupSent commands went first at the same rate, their answers unread.
	WarmupSent int   `json:"warmup_sent"`
	Sent       int   `json:"sent"`
	Answered   int64 `json:"answered"`
	Missing    int64 `json:"missing"`
	// Unexpected answers (a refusal, not the grant or release asked for)
	// are in no figure below.
	Unexpected int64 `json:"unexpected_answers"`
	// SendLagMax is how far the sender fell behind its schedule at worst
	// (the latencies count from the intended time regardless).
	SendLagMaxMS float64 `json:"send_lag_max_ms"`
	Acquire      dist    `json:"acquire"`
	Release      dist    `json:"release"`
	All          dist    `json:"all"`
	// Worker is the answers' duration_ms: from the worker polling the
	// record to its transaction's commit. The rest of All is Kafka, the
	// relay and the queueing before the poll.
	Worker dist `json:"worker_poll_to_commit"`
	// The path of every answer in three legs, by the clocks of one machine:
	// ToTx is from the intended send time to the worker's transaction
	// start (the event's occurred_at: producing, the broker, the worker's
	// fetch and its applier's queue); InTx from there to the relay producing
	// the answer (the record's timestamp, of 1 ms resolution: the
	// transaction, its commit, the relay's wake and read); FromRelay from
	// there to lockbench reading it.
	ToTx      dist `json:"leg_send_to_transaction"`
	InTx      dist `json:"leg_transaction_to_relay_produce"`
	FromRelay dist `json:"leg_relay_produce_to_read"`
	// CPU is from the first measured send to the last answer: how busy the
	// fixed rate keeps the machine, hence how much the answers queue for a
	// core.
	CPU cpuUse `json:"cpu"`
}

// whole says the figures are of every command sent: percentiles of the
// answers that came as asked say nothing of the others.
func (l *LatencyResult) whole() bool { return l.Missing == 0 && l.Unexpected == 0 }

// pairs is how many commands rate a second sends over d: acquires and
// their releases.
func pairs(rate int, d time.Duration) int {
	n := int(float64(rate) * d.Seconds())
	return n - n%2
}

func (b *bench) latency(ctx context.Context) (LatencyResult, error) {
	cfg := b.cfg
	n := pairs(cfg.Rate, cfg.LatencyDuration)
	// A fresh worker's first commands prepare its statements and fetch
	// metadata: --warmup at the same rate goes first, its answers unread.
	warm := pairs(cfg.Rate, cfg.Warmup)
	res := LatencyResult{Rate: cfg.Rate, Seconds: cfg.LatencyDuration.Seconds(), WarmupSent: warm, Sent: n}
	acq, rel, all, wrk := newHist(), newHist(), newHist(), newHist()
	toTx, inTx, fromRelay := newHist(), newHist(), newHist()
	var answered, unexpected atomic.Int64
	interval := time.Second / time.Duration(cfg.Rate)
	start := time.Now().Add(50 * time.Millisecond)
	var lagMax time.Duration
	var cpu0 cpuSnapshot
	time.Sleep(time.Until(start))
	for k := 0; ctx.Err() == nil; k++ {
		// The window starts at the first measured send, read even when
		// there is none: compared with no reading, it would be since boot.
		if k == warm {
			cpu0 = takeCPU(b.t.proc, b.t.brokerProc, b.t.pg)
		}
		if k == warm+n {
			break
		}
		measured := k >= warm
		intended := start.Add(time.Duration(k) * interval)
		if d := time.Until(intended); d > 0 {
			time.Sleep(d)
		} else if measured {
			lagMax = max(lagMax, -d)
		}
		j := k / 2
		op, want, h := topics.OpAcquire, topics.TypeAcquired, acq
		if k%2 == 1 {
			op, want, h = topics.OpRelease, topics.TypeReleased, rel
		}
		cmd := topics.Command{RequestID: b.rid("lat", j, op[:1]), Operation: op, LockName: b.rid("lat", j), OwnerID: "lat-owner", LeaseDuration: 60}
		if !measured {
			if err := b.d.send(ctx, cmd); err != nil {
				return res, err
			}
			continue
		}
		b.d.on(cmd.RequestID, func(r reply) bool {
			if r.ev.Type == topics.TypeQueued {
				return false
			}
			// answered is counted last, once the answer is recorded: the
			// wait below reads the figures as soon as every answer counts.
			defer answered.Add(1)
			// A refusal (LOCK_HELD, NOT_HELD) is no grant or release, and
			// often faster than one: counted apart, in no figure.
			if r.ev.Type != want {
				unexpected.Add(1)
				return true
			}
			// Coordinated omission: from the intended send time.
			d := r.at.Sub(intended)
			h.add(d)
			all.add(d)
			if r.ev.DurationMS != nil {
				wrk.add(time.Duration(*r.ev.DurationMS * float64(time.Millisecond)))
			}
			if tx := r.ev.OccurredAt.Time; !tx.IsZero() && !r.produced.IsZero() {
				toTx.add(tx.Sub(intended))
				inTx.add(r.produced.Sub(tx))
				fromRelay.add(r.at.Sub(r.produced))
			}
			return true
		})
		if err := b.d.send(ctx, cmd); err != nil {
			return res, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for answered.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("cut short: %w", err) // not the whole run's figures
	}
	res.CPU = cpuBetween(cpu0, takeCPU(b.t.proc, b.t.brokerProc, b.t.pg))
	res.Answered, res.Unexpected = answered.Load(), unexpected.Load()
	res.Missing = int64(n) - res.Answered
	res.SendLagMaxMS = ms(lagMax)
	res.Acquire, res.Release, res.All, res.Worker = acq.dist(), rel.dist(), all.dist(), wrk.dist()
	res.ToTx, res.InTx, res.FromRelay = toTx.dist(), inTx.dist(), fromRelay.dist()
	return res, nil
}

// ---- 3 contention -------------------------------------------------------

// ContentionResult is scenario 3.
type ContentionResult struct {
	Waiters int `json:"waiters"`
	Granted int `json:"granted"`
	// HandOff is from sending the holder's release to the next holder's
	// lock.acquired read from its reply topic.
	HandOff dist `json:"hand_off"`
	// Fair is true when every grant followed the order the waiters were
	// sent in (one producer, one partition: the order they arrived in),
	// not the worker's own account of its queue.
	Fair          bool   `json:"fair"`
	InOrder       int    `json:"grants_in_send_order"`
	FirstMismatch string `json:"first_mismatch,omitempty"`
	// Positions is true when every waiter's lock.queued said its place in
	// the send order (queue_position 1..N).
	Positions        bool   `json:"queue_positions_in_send_order"`
	PositionMismatch string `json:"position_mismatch,omitempty"`
}

// waiterNames are n waiters' owner_ids in the order they are sent. Their
// names sort neither in that order nor against it (from 3 on): a queue
// ordered by owner_id (or by request_id, which has it) is told from one in
// arrival order.
func waiterNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		k := i / 2 // 0, n-1, 1, n-2, ...
		if i%2 == 1 {
			k = n - 1 - i/2
		}
		names[i] = fmt.Sprintf("cont-w%03d", k)
	}
	return names
}

// judge compares the grants (order) and the queue_position each waiter was
// told (position) with the order the waiters were sent in (sent).
func (res *ContentionResult) judge(sent []string, position map[string]int, order []string) {
	res.Granted = len(order)
	res.Fair = slices.Equal(order, sent)
	for i := range order {
		switch {
		case i < len(sent) && order[i] == sent[i]:
			res.InOrder++
		case res.FirstMismatch == "":
			res.FirstMismatch = fmt.Sprintf("grant %d went to %s, sent as #%d", i+1, order[i], slices.Index(sent, order[i])+1)
		}
	}
	res.Positions = true
	for i, owner := range sent {
		if position[owner] != i+1 {
			res.Positions = false
			res.PositionMismatch = fmt.Sprintf("%s, sent as #%d, was told queue_position %d", owner, i+1, position[owner])
			break
		}
	}
}

func (b *bench) contention(ctx context.Context) (ContentionResult, error) {
	cfg := b.cfg
	res := ContentionResult{Waiters: cfg.Waiters}
	lock := b.rid("contended")
	timeout := 30 * time.Second
	holder := "cont-holder"
	r, err := b.d.call(ctx, topics.Command{RequestID: b.rid("cont", "h"), Operation: topics.OpAcquire, LockName: lock, OwnerID: holder, LeaseDuration: 600}, timeout)
	if err != nil {
		return res, err
	}
	if r.ev.Type != topics.TypeAcquired {
		return res, fmt.Errorf("contention: first acquire answered %s %s", r.ev.Type, r.ev.ErrorCode)
	}
	type grant struct {
		owner string
		at    time.Time
	}
	grants := make(chan grant, cfg.Waiters)
	var mu sync.Mutex
	position := map[string]int{}
	queued := make(chan struct{}, cfg.Waiters)
	// One producer, one key: the records reach the commands partition in
	// the order sent (the client keeps a partition's records in order).
	sent := waiterNames(cfg.Waiters)
	for _, owner := range sent {
		cmd := topics.Command{RequestID: b.rid("cont", owner), Operation: topics.OpAcquire, LockName: lock, OwnerID: owner, LeaseDuration: 600, WaitTimeout: 600}
		b.d.on(cmd.RequestID, func(r reply) bool {
			switch r.ev.Type {
			case topics.TypeQueued:
				mu.Lock()
				position[owner] = r.ev.QueuePosition
				mu.Unlock()
				queued <- struct{}{}
				return false
			case topics.TypeAcquired:
				grants <- grant{owner, r.at}
			}
			return true
		})
		if err := b.d.send(ctx, cmd); err != nil {
			return res, err
		}
	}
	for range cfg.Waiters {
		select {
		case <-queued:
		case <-time.After(timeout):
			mu.Lock()
			defer mu.Unlock()
			return res, fmt.Errorf("contention: only %d of %d waiters were queued", len(position), cfg.Waiters)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}

	hand := newHist()
	current := holder
	var order []string
	for i := 0; i < cfg.Waiters; i++ {
		sent := time.Now()
		if err := b.d.send(ctx, topics.Command{RequestID: b.rid("cont", "rel", i), Operation: topics.OpRelease, LockName: lock, OwnerID: current}); err != nil {
			return res, err
		}
		select {
		case g := <-grants:
			hand.add(g.at.Sub(sent))
			order = append(order, g.owner)
			current = g.owner
		case <-time.After(timeout):
			return res, fmt.Errorf("contention: no grant after release %d", i)
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	_ = b.d.send(ctx, topics.Command{RequestID: b.rid("cont", "rel", "last"), Operation: topics.OpRelease, LockName: lock, OwnerID: current})
	res.HandOff = hand.dist()
	mu.Lock()
	defer mu.Unlock()
	res.judge(sent, position, order)
	return res, nil
}

// ---- 4 expiry -----------------------------------------------------------

// ExpiryResult is scenario 4.
type ExpiryResult struct {
	Leases       int     `json:"leases"`
	LeaseSeconds float64 `json:"lease_seconds"`
	Granted      int64   `json:"granted"`
	Expired      int     `json:"expired_seen"`
	// OnTopic is from expires_at to lock.expired read from the lifecycle
	// topic; InDB is from expires_at to the event's occurred_at (database
	// time the worker ended the lease).
	OnTopic dist `json:"expires_at_to_lifecycle_topic"`
	InDB    dist `json:"expires_at_to_occurred_at"`
}

func (b *bench) expiry(ctx context.Context) (ExpiryResult, error) {
	cfg := b.cfg
	res := ExpiryResult{Leases: cfg.Leases, LeaseSeconds: cfg.Lease.Seconds()}
	prefix := b.rid("exp") + "-"
	var mu sync.Mutex
	var onTopic, inDB []time.Duration
	seen := map[string]bool{}
	got := make(chan struct{}, 1)
	w, err := watchFromEnd(ctx, b.t.brokers, b.t.names.Expired, func(r reply) {
		li := r.ev.LockInfo
		if r.ev.Type != topics.TypeExpired || li == nil || li.ExpiresAt == nil || !strings.HasPrefix(li.LockName, prefix) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if seen[li.LockName] {
			return
		}
		seen[li.LockName] = true
		onTopic = append(onTopic, r.at.Sub(li.ExpiresAt.Time))
		inDB = append(inDB, r.ev.OccurredAt.Sub(li.ExpiresAt.Time))
		if len(seen) == cfg.Leases {
			select {
			case got <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return res, err
	}
	defer w.close()
	var granted atomic.Int64
	sem := make(chan struct{}, 1000) // bounded in flight
	for i := 0; i < cfg.Leases && ctx.Err() == nil; i++ {
		select {
		case sem <- struct{}{}:
		case <-time.After(60 * time.Second):
			return res, fmt.Errorf("expiry: no answer to 1000 acquires in 60 s")
		case <-ctx.Done():
			return res, ctx.Err()
		}
		cmd := topics.Command{RequestID: b.rid("exp", i), Operation: topics.OpAcquire, LockName: prefix + fmt.Sprint(i), OwnerID: "exp-owner", LeaseDuration: cfg.Lease.Seconds()}
		b.d.on(cmd.RequestID, func(r reply) bool {
			if r.ev.Type == topics.TypeAcquired {
				granted.Add(1)
			}
			<-sem
			return true
		})
		if err := b.d.send(ctx, cmd); err != nil {
			return res, err
		}
	}
	select {
	case <-got:
	case <-time.After(cfg.Lease + 60*time.Second):
	case <-ctx.Done():
		return res, fmt.Errorf("cut short: %w", ctx.Err()) // not the whole run's figures
	}
	mu.Lock()
	defer mu.Unlock()
	res.Granted = granted.Load()
	res.Expired = len(seen)
	res.OnTopic, res.InDB = distOf(onTopic), distOf(inDB)
	return res, nil
}
