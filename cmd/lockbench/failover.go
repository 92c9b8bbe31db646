package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/worker"
)

// failoverScenario is not part of "all": it needs the lockworker and
// devkafka binaries and runs its own replicas (make bench-failover).
const failoverScenario = "failover"

// FailoverConfig shapes the failover scenario.
type FailoverConfig struct {
	DevkafkaBin string `json:"devkafka_bin"`
	// Kills and Terms are how many times one replica is SIGKILLed and
	// SIGTERMed; Rolls how many rolling restarts of all three.
	Kills int `json:"kills"`
	Terms int `json:"terms"`
	Rolls int `json:"rolls"`
	// Freezes is how many times one replica is SIGSTOPped for FreezeFor
	// and then SIGCONTed, as a paused VM or container resumes: longer than
	// the session timeout, the group evicts it meanwhile.
	Freezes   int           `json:"freezes"`
	FreezeFor time.Duration `json:"freeze_for_ns"`
	// Cuts is how many times one replica's proxy in front of PostgreSQL
	// hangs for CutFor and then forwards again: a network partition between
	// that replica and PostgreSQL, the replica running on.
	Cuts   int           `json:"cuts"`
	CutFor time.Duration `json:"cut_for_ns"`
	// Static runs the replicas with KAFKA_STATIC_MEMBERSHIP.
	Static bool `json:"static"`
	// SessionTimeout and Heartbeat are the replicas' KAFKA_SESSION_TIMEOUT and
	// KAFKA_HEARTBEAT_INTERVAL (0: lockworker's defaults).
	SessionTimeout time.Duration `json:"session_timeout_ns"`
	Heartbeat      time.Duration `json:"heartbeat_ns"`
	// LogFile receives the replicas' logs.
	LogFile string `json:"-"`
}

// FailoverPhase is what one kind of fault cost.
type FailoverPhase struct {
	Fault string `json:"fault"`
	// Times is how many faults the phase struck: fewer than asked when the
	// run failed in it.
	Times      int     `json:"times"`
	Commands   int     `json:"commands"`
	Unanswered int     `json:"unanswered"`
	WorstMS    float64 `json:"worst_ms"`
	// P99MS is the p99 of the commands sent, which the closed loop's
	// coordinated omission holds down (a stall counts once however long it
	// lasts); OverSecond answered commands took over 1 s; CorrectedP99MS is
	// the p99 corrected for the coordinated omission (chaos.Load.Stats).
	P99MS          float64 `json:"p99_ms"`
	OverSecond     int     `json:"over_1s"`
	CorrectedP99MS float64 `json:"corrected_p99_ms"`
	faultCounts
}

// faultCounts is what the replicas did in a phase that its faults did not
// ask for. Each such replica was started again and the run went on.
type faultCounts struct {
	// SIGTERMs is how many SIGTERMs the phase sent (none: its faults are
	// SIGKILLs); UncleanStops how many of them the replica did not answer
	// with exit status 0 within the grace (a failed drain).
	SIGTERMs     int `json:"sigterms"`
	UncleanStops int `json:"unclean_stops"`
	// ExitedUnasked is how many times a replica was found exited that no
	// fault had stopped (a panic, a fatal error): after each fault every
	// replica is looked at, and a fault's stop finds one gone.
	ExitedUnasked int `json:"exited_unasked"`
	// FailedStarts is how many times a replica started again (after a fault
	// or an exit) exited, or was not ready within a minute, before it
	// consumed; it is started again, up to five times in all.
	FailedStarts int `json:"failed_starts"`
}

// replicaFaults stops replicas as a phase's faults and counts in a
// faultCounts what they do wrong (an unclean stop, an exit nobody asked
// for): that is a result, not an error, and the run goes on. Its errors are
// lockbench's: a signal that could not be sent, a replica that could not be
// started again in five tries.
type replicaFaults struct {
	ctx      context.Context // the run's
	replicas []*chaos.Replica
	// proxies are the replicas' own proxies in front of PostgreSQL, which
	// cut hangs.
	proxies map[*chaos.Replica]*tcpproxy.Proxy
	// readyWithin is how long a started replica has to be ready, retryPause
	// the pause between a failed start and the next.
	readyWithin, retryPause time.Duration
	progress                func(string, ...any)
}

// restart starts a stopped replica again and waits until it is ready, as a
// supervisor would: a start that fails (it exits before it is ready, as
// with PostgreSQL out of connections on a shared machine, or is not ready
// within readyWithin) is counted in c and tried again, five tries in all.
func (f *replicaFaults) restart(c *faultCounts, r *chaos.Replica) error {
	var err error
	for try := 1; try <= 5; try++ {
		if err = r.Start(); err != nil {
			return err
		}
		rctx, cancel := context.WithTimeout(f.ctx, f.readyWithin)
		err = r.Ready(rctx)
		cancel()
		if err == nil {
			return nil
		}
		_ = r.Kill() // its error is err
		if f.ctx.Err() != nil {
			return err
		}
		c.FailedStarts++
		if try == 5 {
			break
		}
		f.progress("failover: %v; counted, and it starts again", err)
		time.Sleep(f.retryPause)
	}
	return fmt.Errorf("%w (five starts failed)", err)
}

// kill SIGKILLs r; the caller starts it again.
func (f *replicaFaults) kill(c *faultCounts, r *chaos.Replica) error {
	err := r.Kill()
	if errors.Is(err, chaos.ErrExitedUnasked) {
		f.exitedUnasked(c, err, "; counted, and it starts again")
		return f.ctx.Err() // cut short: not started again
	}
	return err
}

// exitedUnasked counts in c a replica found exited that no fault stopped
// (err), and says so, then what follows. Once the run is cut short it
// counts none: the signal that ended it reaches the replicas too (a
// terminal's Ctrl-C goes to the whole process group), and their exit is
// no crash.
func (f *replicaFaults) exitedUnasked(c *faultCounts, err error, then string) {
	if f.ctx.Err() != nil {
		return
	}
	c.ExitedUnasked++
	f.progress("failover: %v%s", err, then)
}

// term SIGTERMs r and waits up to grace for it to exit (then kills it);
// the caller starts it again.
func (f *replicaFaults) term(c *faultCounts, r *chaos.Replica, grace time.Duration) error {
	err := r.Term(grace)
	switch {
	case err == nil:
		c.SIGTERMs++
		return nil
	case errors.Is(err, chaos.ErrExitedUnasked): // gone before the signal
		f.exitedUnasked(c, err, "; counted, and it starts again")
		return f.ctx.Err() // cut short: not started again
	case f.ctx.Err() != nil:
		return f.ctx.Err() // the run's signal reached it too: no stop of the fault's to count
	case errors.Is(err, chaos.ErrUncleanStop): // a non-zero exit after the signal, or killed after grace
		c.SIGTERMs++
		c.UncleanStops++
	default:
		return err
	}
	f.progress("failover: %v; counted, and it starts again", err)
	return nil
}

// freeze SIGSTOPs r for d, then SIGCONTs it. It is not started again: a
// resumed VM or container is the same process, which must find out itself
// that the group evicted it, rejoin and go on. It is resumed whatever
// happens (an error, the run's end), so that no replica is left stopped.
// A replica found gone is left to checkExits, which counts it as exited
// unasked and starts it again.
func (f *replicaFaults) freeze(r *chaos.Replica, d time.Duration) (err error) {
	if err := r.Signal(syscall.SIGSTOP); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
		return err
	}
	defer func() {
		if cerr := r.Signal(syscall.SIGCONT); cerr != nil && !errors.Is(cerr, os.ErrProcessDone) && err == nil {
			err = cerr
		}
	}()
	return f.hold(d)
}

// cut hangs r's proxy in front of PostgreSQL for d, then restores it: a
// network partition between the replica and PostgreSQL while the replica
// runs on (its connections stay open and nothing passes; new ones are
// accepted and held). A replica that gives its partitions up after
// POSTGRES_UNREACHABLE_TIMEOUT has them answered by the others meanwhile;
// one that keeps them leaves their commands waiting for the whole cut. It
// is restored whatever happens (the run's end), so that no replica is left
// cut off. A replica found gone is left to checkExits, as by freeze.
func (f *replicaFaults) cut(r *chaos.Replica, d time.Duration) error {
	p := f.proxies[r]
	if p == nil {
		return fmt.Errorf("replica %s has no proxy in front of PostgreSQL", r.Name)
	}
	if r.Err() != nil {
		return nil
	}
	p.Hang()
	defer p.Restore()
	return f.hold(d)
}

// hold waits d, the length of a fault that its caller undoes: it ends
// early with the run's error when the run ends.
func (f *replicaFaults) hold(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-f.ctx.Done():
		return f.ctx.Err()
	}
}

// proxied starts a proxy in front of the PostgreSQL server of dbURL, a
// connection string (URL or keyword/value) naming one TCP server, and
// returns it with dbURL pointing at it; the user, the database and the
// other parameters are kept.
func proxied(dbURL string) (*tcpproxy.Proxy, string, error) {
	target, err := connstr.Server(dbURL)
	if err != nil {
		return nil, "", fmt.Errorf("the failover scenario puts a proxy in front of PostgreSQL: --database-url must name one TCP server: %w", err)
	}
	p, err := tcpproxy.Listen(target)
	if err != nil {
		return nil, "", err
	}
	out, err := connstr.Redirect(dbURL, p.Addr())
	if err != nil {
		p.Close()
		return nil, "", err
	}
	return p, out, nil
}

// checkExits looks at every replica after a fault: one that exited
// although no fault stopped it is counted and started again. After a
// restart it waits pause, the pause the phase leaves after each fault, so
// that the rebalance the restart causes is over before the next fault and
// is not charged to it.
func (f *replicaFaults) checkExits(c *faultCounts, pause time.Duration) error {
	if err := f.ctx.Err(); err != nil {
		return err // cut short: the replicas stop with the run
	}
	restarted := false
	for _, r := range f.replicas {
		err := r.Err()
		if err == nil {
			continue
		}
		f.exitedUnasked(c, err, "; counted, and it starts again")
		_ = r.Kill() // forgets the exited process: its error is err
		if err := f.restart(c, r); err != nil {
			return err
		}
		restarted = true
	}
	if restarted {
		time.Sleep(pause)
	}
	return nil
}

// countExits counts the replicas found exited unasked without starting
// them again: the look after the drain at the end of the run, which would
// otherwise leave a crash after the last fault's look to the deferred
// Kill, which ignores it.
func (f *replicaFaults) countExits(c *faultCounts) {
	for _, r := range f.replicas {
		if err := r.Err(); err != nil {
			f.exitedUnasked(c, err, " after the last fault; counted")
		}
	}
}

// phaseRun is what a phase struck: its faults' windows, each from a second
// before the fault (commands in flight when it struck count too) to the
// next fault, and what its replicas did (faultCounts). A window and the
// counts of a fault are kept together, also when the fault failed.
type phaseRun struct {
	fault   string
	times   int // faults struck
	windows []chaos.Window
	counts  faultCounts
}

// result is the phase's figures over its windows, taken once every command
// is answered. A phase with no window has none (0): stats of no window are
// the whole run's.
func (pr *phaseRun) result(stats func(...chaos.Window) chaos.Stats) FailoverPhase {
	ph := FailoverPhase{Fault: pr.fault, Times: pr.times, faultCounts: pr.counts}
	if len(pr.windows) == 0 {
		return ph
	}
	s := stats(pr.windows...)
	ph.Commands, ph.Unanswered, ph.WorstMS, ph.P99MS, ph.OverSecond, ph.CorrectedP99MS =
		s.Commands, s.Unanswered, ms(s.Worst), ms(s.P99), s.OverSecond, ms(s.CorrectedP99)
	return ph
}

// phases runs the failover scenario's phases and keeps what each struck.
type phases struct {
	ctx    context.Context
	faults *replicaFaults
	stats  func(...chaos.Window) chaos.Stats // chaos.Load.Stats
	runs   []*phaseRun
	// lastTo is where the last fault's window ended: the next begins no
	// earlier, so that no command counts in two phases.
	lastTo time.Time
}

// windowLead is how long before its fault a fault's window begins: the
// commands in flight as it strikes are its.
const windowLead = time.Second

// run strikes times faults, each, and after each waits pause, then
// restarts a replica that exited unasked (and waits pause again). A phase
// is reported from its first fault on; an error ends it after its fault's
// window is closed.
func (ps *phases) run(fault string, times int, pause time.Duration, each func(i int, c *faultCounts) error) error {
	var pr *phaseRun
	for i := range times {
		if err := ps.ctx.Err(); err != nil {
			return err
		}
		if pr == nil {
			pr = &phaseRun{fault: fault}
			ps.runs = append(ps.runs, pr)
		}
		pr.times++
		// A command sent just before a fault waits for it: counted in the
		// window before too, a cut's 15 s would show as the rolling
		// restart's.
		if d := windowLead - time.Since(ps.lastTo); d > 0 {
			time.Sleep(d)
		}
		w := chaos.Window{From: time.Now().Add(-windowLead)}
		err := each(i, &pr.counts)
		if err == nil {
			time.Sleep(pause)
			err = ps.faults.checkExits(&pr.counts, pause)
		}
		w.To = time.Now()
		ps.lastTo = w.To
		pr.windows = append(pr.windows, w)
		if err != nil {
			return fmt.Errorf("%s %d: %w", fault, i+1, err)
		}
		s := ps.stats(w)
		ps.faults.progress("failover: %s %d/%d: %d commands, worst answered so far %.0f ms", fault, i+1, times, s.Commands, ms(s.Worst))
	}
	return nil
}

// results are the phases' figures, after the drain: a replica found
// exited unasked then is counted in the last phase.
func (ps *phases) results() []FailoverPhase {
	if len(ps.runs) > 0 {
		ps.faults.countExits(&ps.runs[len(ps.runs)-1].counts)
	}
	var out []FailoverPhase
	for _, pr := range ps.runs {
		out = append(out, pr.result(ps.stats))
	}
	return out
}

// FailoverResult is the failover scenario.
type FailoverResult struct {
	Replicas         int             `json:"replicas"`
	Partitions       int             `json:"partitions"`
	SessionTimeoutMS float64         `json:"session_timeout_ms"`
	HeartbeatMS      float64         `json:"heartbeat_ms"`
	Static           bool            `json:"static"`
	Phases           []FailoverPhase `json:"phases"`
	// The abandon-only leases of the SIGKILL phase (chaos.Load.Expiries:
	// nobody asks for their locks, so only the expiry scheduler ends them):
	// those that ended while their partition had no owner, the worst time
	// from the takeover to their lock.expired, and those that ended with no
	// lock.expired.
	Orphaned       int     `json:"orphaned_leases"`
	ExpiredAfterMS float64 `json:"expired_after_takeover_ms"`
	Unexpired      int     `json:"unexpired_leases"`
	Commands       int     `json:"commands"`
	Unanswered     int     `json:"unanswered"`
	Resends        int     `json:"resends"`
	// CutShort says the run's context ended (a signal) before its figures
	// were taken. The signal reaches the replicas and devkafka too: the
	// unanswered commands and the last phase's worst time to answer are
	// not judged, and no replica's exit after it is counted.
	CutShort          bool   `json:"cut_short,omitempty"`
	ContractViolation string `json:"contract_violation,omitempty"`
	// TableDiff is where the lock state topic, read from its start, and the
	// database's locks still differed after the run (chaos.CompareTable).
	TableDiff string `json:"table_diff,omitempty"`
}

// failover runs three lockworker processes on a devkafka process under
// steady load on every partition and SIGKILLs one, SIGSTOPs one (then
// SIGCONTs it), SIGTERMs one, rolls all three, and cuts one off from
// PostgreSQL (then restores it), measuring how long each command waited
// for its answer. A replica that stops uncleanly or exits
// with no fault asking is counted in its phase and started again
// (replicaFaults): only lockbench's own errors (a signal not sent, a killed
// replica not seen gone within 30 s, a replica whose five starts failed)
// end the run.
func failover(ctx context.Context, cfg *Config, progress func(string, ...any), logw io.Writer) (*FailoverResult, error) {
	fc := cfg.Failover
	if cfg.WorkerBin == "" || fc.DevkafkaBin == "" {
		return nil, errors.New("the failover scenario needs --worker-bin and --devkafka-bin (make bench-failover builds them)")
	}
	kc := config.Default().Kafka
	session, heartbeat := kc.SessionTimeout, kc.HeartbeatInterval
	if fc.SessionTimeout > 0 {
		session = fc.SessionTimeout
	}
	if fc.Heartbeat > 0 {
		heartbeat = fc.Heartbeat
	}
	const partitions = 16
	const readyWithin = time.Minute // a replica started, to log that it consumes
	dbURL, drop, err := newSchema(ctx, cfg.DatabaseURL, "lockbench_failover", cfg.Keep)
	if err != nil {
		return nil, err
	}
	defer drop()
	broker, err := chaos.StartBroker(ctx, fc.DevkafkaBin, partitions, config.ApacheMinSessionTimeout)
	if err != nil {
		return nil, err
	}
	defer broker.Close()
	env := []string{
		"KAFKA_BOOTSTRAP_SERVERS=" + broker.Addr, "HTTP_ADDR=127.0.0.1:0", "LOG_LEVEL=info",
		fmt.Sprintf("KAFKA_SESSION_TIMEOUT=%g", session.Seconds()), fmt.Sprintf("KAFKA_HEARTBEAT_INTERVAL=%g", heartbeat.Seconds()),
		fmt.Sprintf("KAFKA_STATIC_MEMBERSHIP=%v", fc.Static), fmt.Sprintf("POSTGRES_MAX_CONNECTIONS=%d", cfg.PGMaxConns),
	}
	// Each replica reaches PostgreSQL through a proxy of its own, which
	// forwards but in the PostgreSQL cut phase. Deferred before the
	// replicas' Kill, a proxy closes after its replica is gone.
	replicas := make([]*chaos.Replica, 3)
	proxies := map[*chaos.Replica]*tcpproxy.Proxy{}
	for i := range replicas {
		proxy, replicaURL, err := proxied(dbURL)
		if err != nil {
			return nil, err
		}
		defer proxy.Close()
		replicas[i] = chaos.NewReplica(fmt.Sprintf("lockworker-%d", i), cfg.WorkerBin, slices.Concat(env, []string{"DATABASE_URL=" + replicaURL}), logw)
		proxies[replicas[i]] = proxy
		if err := replicas[i].Start(); err != nil {
			return nil, err
		}
		defer func() { _ = replicas[i].Kill() }()
		// One at a time: the first migrates. A replica that never logs that
		// it consumes ends the run, as a restart's would.
		rctx, cancel := context.WithTimeout(ctx, readyWithin)
		err = replicas[i].Ready(rctx)
		cancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				err = fmt.Errorf("replica %s not ready within %s", replicas[i].Name, readyWithin)
			}
			return nil, err
		}
	}

	load, err := chaos.StartLoad(ctx, chaos.LoadConfig{Brokers: []string{broker.Addr}, Partitions: partitions, LocksPerPartition: 2, AbandonOnly: 1})
	if err != nil {
		return nil, err
	}
	res := &FailoverResult{Replicas: len(replicas), Partitions: partitions, Static: fc.Static,
		SessionTimeoutMS: ms(session), HeartbeatMS: ms(heartbeat)}
	stopped := false
	defer func() {
		if !stopped {
			load.Stop(0)
		}
	}()
	settle := session + 4*time.Second // a crash's partitions are back within session + 2 s, goal
	time.Sleep(3 * time.Second)       // warm

	faults := &replicaFaults{ctx: ctx, replicas: replicas, proxies: proxies, readyWithin: readyWithin, retryPause: time.Second, progress: progress}
	ps := &phases{ctx: ctx, faults: faults, stats: load.Stats}
	phase := ps.run
	finish := func() {
		load.Stop(2 * settle)
		stopped = true
		res.CutShort = ctx.Err() != nil
		res.Phases = ps.results()
		all := load.Stats()
		res.Commands, res.Unanswered, res.Resends = all.Commands, all.Unanswered, load.Resends()
	}
	// The contract is checked, and the orphaned leases measured, whatever
	// a phase returned: a run cut short (a replica that would not come
	// back) is the likeliest to have broken it.
	killFrom := time.Now()
	var killTo time.Time
	runErr := func() error {
		if err := phase("SIGKILL one of three", fc.Kills, settle, func(i int, c *faultCounts) error {
			r := replicas[i%len(replicas)]
			if err := faults.kill(c, r); err != nil {
				return err
			}
			time.Sleep(time.Second)
			return faults.restart(c, r)
		}); err != nil {
			return err
		}
		killTo = time.Now()
		// The frozen replica's rebalance back in, when it rejoins, is over
		// within settle too.
		if err := phase("SIGSTOP one of three", fc.Freezes, settle, func(i int, _ *faultCounts) error {
			return faults.freeze(replicas[i%len(replicas)], fc.FreezeFor)
		}); err != nil {
			return err
		}
		if err := phase("SIGTERM one of three", fc.Terms, 3*time.Second, func(i int, c *faultCounts) error {
			r := replicas[i%len(replicas)]
			if err := faults.term(c, r, 30*time.Second); err != nil {
				return err
			}
			time.Sleep(time.Second)
			return faults.restart(c, r)
		}); err != nil {
			return err
		}
		if err := phase("rolling restart of all three", fc.Rolls, 2*time.Second, func(_ int, c *faultCounts) error {
			for _, r := range replicas {
				if err := faults.term(c, r, 30*time.Second); err != nil {
					return err
				}
				if err := faults.restart(c, r); err != nil {
					return err
				}
				time.Sleep(2 * time.Second)
			}
			return nil
		}); err != nil {
			return err
		}
		// Last, so that the phases before it run as they did before it was
		// added. A replica that gave its partitions up rejoins once it reaches
		// PostgreSQL again, a rebalance over within settle.
		if err := phase("PostgreSQL cut from one of three", fc.Cuts, settle, func(i int, _ *faultCounts) error {
			return faults.cut(replicas[i%len(replicas)], fc.CutFor)
		}); err != nil {
			return err
		}
		return nil
	}()
	if killTo.IsZero() {
		killTo = time.Now() // ended in the SIGKILL phase
	}

	progress("failover: waiting for the last answers")
	finish()
	x := load.Expiries(chaos.Window{From: killFrom, To: killTo})
	res.Orphaned, res.ExpiredAfterMS, res.Unexpired = x.Orphaned, ms(x.AfterTakeover), x.Unexpired
	if err := chaos.Check(load.History()); err != nil {
		res.ContractViolation = err.Error()
	}
	// As TestChaos: the state topic is the database's locks once settled.
	// A signal before or during the comparison leaves it undone: the run is
	// then cut short, not a pass of the table.
	if err := chaos.CompareTableSettled(ctx, []string{broker.Addr}, dbURL, 30*time.Second); err != nil {
		if ctx.Err() == nil {
			res.TableDiff = err.Error()
		} else if runErr == nil {
			runErr = fmt.Errorf("cut short before the lock state topic was compared with the database: %w", ctx.Err())
		}
	}
	return res, runErr
}

// failoverGoals are the goals of issue 11 for the failover scenario.
func (r *Report) failoverGoals(f *FailoverResult) {
	limit := f.SessionTimeoutMS + 2000
	exitedUnasked, failedStarts := 0, 0
	for i, p := range f.Phases {
		last := f.CutShort && i == len(f.Phases)-1 // the signal reached its replicas too
		exitsZero := func(what string) {
			r.goal("failover", what, "all", float64(p.SIGTERMs-p.UncleanStops), fmt.Sprintf(" of %s", fmtNum(float64(p.SIGTERMs))), p.UncleanStops == 0, p.SIGTERMs > 0)
			if last {
				r.unjudged()
			}
		}
		// worst is the phase's goal on its worst time to answer, with
		// nothing left unanswered.
		worst := func(fault string, limitMS float64) {
			r.goal("failover", fault+": worst time to answer", fmt.Sprintf("<= %s ms", fmtNum(limitMS)), p.WorstMS, " ms", p.WorstMS <= limitMS && p.Unanswered == 0, p.Commands > 0)
			if last {
				r.unjudged()
			}
		}
		switch {
		case strings.HasPrefix(p.Fault, "SIGKILL"):
			worst("SIGKILL", limit)
		case strings.HasPrefix(p.Fault, "SIGSTOP"): // evicted after the session timeout, as a crash is
			worst("SIGSTOP", limit)
		case strings.HasPrefix(p.Fault, "SIGTERM"):
			worst("SIGTERM", 1000)
			exitsZero("SIGTERM exits 0")
		case strings.HasPrefix(p.Fault, "PostgreSQL cut"):
			// The replica gives its partitions up after the unreachable
			// timeout (lockbench leaves the worker's default); 5 s more for
			// its probing, the revoke and the rebalance. A build that keeps
			// them answers after the cut.
			worst("PostgreSQL cut from one", ms(worker.DefaultUnreachableTimeout+5*time.Second))
		default:
			worst("rolling restart", 8000)
			exitsZero("rolling restart: SIGTERM exits 0")
		}
		exitedUnasked += p.ExitedUnasked
		failedStarts += p.FailedStarts
	}
	r.goal("failover", "lock.expired after takeover (orphaned leases)", "<= 1,000 ms", f.ExpiredAfterMS, " ms",
		f.ExpiredAfterMS <= 1000 && f.Unexpired == 0, f.Orphaned > 0 || f.Unexpired > 0)
	if f.Unexpired > 0 {
		r.Goals[len(r.Goals)-1].Measured += fmt.Sprintf(", %d never expired", f.Unexpired)
	}
	if f.CutShort {
		r.unjudged() // the replicas that would have expired them were stopped too
	}
	r.goal("failover", "unanswered commands", "0", float64(f.Unanswered), fmt.Sprintf(" of %s", fmtNum(float64(f.Commands))), f.Unanswered == 0, true)
	if f.CutShort {
		r.unjudged()
		r.note("failover: cut short by a signal, which reaches the replicas and devkafka too: the unanswered commands, the orphaned " +
			"leases, and the last phase's worst time to answer and SIGTERM exits are not judged, and no replica's exit after it is counted")
	}
	r.goal("failover", "replicas exited unasked (crashed between faults)", "0", float64(exitedUnasked), "", exitedUnasked == 0, len(f.Phases) > 0)
	r.goal("failover", "replica starts that failed (exited or not ready)", "0", float64(failedStarts), "", failedStarts == 0, len(f.Phases) > 0)
	kept := f.ContractViolation == "" && f.TableDiff == ""
	r.goal("failover", "contract (no double holder, tokens rise, one answer, state topic = database)", "kept", 0, "", kept, true)
	r.Goals[len(r.Goals)-1].Measured = map[bool]string{true: "kept", false: "BROKEN"}[kept]
}

func (f *FailoverResult) print(p func(string, ...any)) {
	p("\nfailover: %d replicas (child processes) on a devkafka process, %d partitions; session timeout %.0f ms, heartbeat %.0f ms, static membership %v\n",
		f.Replicas, f.Partitions, f.SessionTimeoutMS, f.HeartbeatMS, f.Static)
	p("  %-32s %6s %10s %11s %10s %8s %9s %18s %14s %15s %14s\n", "fault", "times", "commands", "unanswered", "worst ms", "p99 ms", "over 1 s", "corrected p99 ms",
		"unclean stops", "exited unasked", "failed starts")
	for _, x := range f.Phases {
		unclean := "-" // no SIGTERM to stop uncleanly
		if x.SIGTERMs > 0 {
			unclean = fmt.Sprintf("%d of %d", x.UncleanStops, x.SIGTERMs)
		}
		p("  %-32s %6d %10d %11d %10.0f %8.0f %9d %18.0f %14s %15d %14d\n", x.Fault, x.Times, x.Commands, x.Unanswered, x.WorstMS, x.P99MS, x.OverSecond, x.CorrectedP99MS,
			unclean, x.ExitedUnasked, x.FailedStarts)
	}
	p("  abandon-only leases (SIGKILL phase) that ended while their partition had no owner: %d; worst lock.expired after takeover %.0f ms; ended with no lock.expired: %d\n",
		f.Orphaned, f.ExpiredAfterMS, f.Unexpired)
	p("  all: %d commands, %d unanswered, %d resends\n", f.Commands, f.Unanswered, f.Resends)
	if f.ContractViolation != "" {
		p("  CONTRACT BROKEN:\n%s\n", f.ContractViolation)
	}
	if f.TableDiff != "" {
		p("  THE LOCK STATE TOPIC IS NOT THE DATABASE'S LOCKS:\n%s\n", f.TableDiff)
	}
}

// replicaLog is where the replicas' logs go: a file beside the JSON report
// when asked for (-v: stderr), else nowhere.
func replicaLog(cfg *Config, stderr io.Writer) (io.Writer, func(), error) {
	if cfg.Verbose {
		return stderr, func() {}, nil
	}
	if cfg.Failover.LogFile == "" {
		return io.Discard, func() {}, nil
	}
	f, err := os.Create(cfg.Failover.LogFile)
	if err != nil {
		return nil, nil, err
	}
	return f, func() { _ = f.Close() }, nil
}
