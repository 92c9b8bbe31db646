// Command lockbench measures lockworker end to end and beside the limits of
// the machine: it starts a lockworker in process (or as a child process, or
// connects to a running one), drives it with raw command records as any
// requester would, and prints a report (a table, or JSON with --json).
//
// Scenarios (--scenario all, or a comma-separated list of names or numbers):
//
//  1. throughput: closed loop, many virtual clients, acquire+release on
//     distinct locks; commands/s from produced to reply consumed.
//  2. latency: open loop at a fixed rate, after a warm-up at that rate;
//     p50/p95/p99/max per operation, measured from the intended send time
//     (coordinated omission corrected). Acquires and releases alternate,
//     each release 1/rate after its acquire, before its grant is read (at
//     1,000/s the two often share a worker batch, which a requester waiting
//     for lock.acquired cannot do). The latency's legs split at the reply's
//     Kafka record timestamp, of 1 ms resolution.
//  3. contention: many clients waiting on one lock: hand-off time from
//     release to the next holder's lock.acquired, and grant order = the order the
//     waiters were sent in (each told its place in queue_position).
//  4. expiry: many short leases: delay from expires_at to lock.expired on the
//     lifecycle topic.
//  5. cleanup: time to clean N expired locks.
//  6. ceiling: the worker's own SQL (handlers.NewBatch, QueueAtOnce, Apply, Flush)
//     applied straight to PostgreSQL with the same batching and concurrency,
//     so the report says what fraction of the database's limit the pipeline
//     reaches.
//  7. resources: the worker's peak RSS over the whole run (read after the
//     last scenario) and CPU seconds per 1,000 commands.
//  8. peer: the original node's own design (its table, one statement per
//     acquire and release) beside lockworker, alternating, with the same
//     clients and window; every figure as a ratio (issue 17).
//
// Not part of "all", by name only:
//
//   - modes: exclusive locks, one shared (read) lock and one semaphore, the
//     same clients and window alternating: what a shared command costs
//     beside an exclusive one (issue 14: at most twice).
//
//   - soak: a closed loop of 32 clients on 64 locks for 10 minutes against
//     the database as it is (autovacuum on or off); throughput and p99 per
//     minute, and the last minute's over the first's (issue 11: hours of
//     load must not wear the worker down). With --worker-bin it reads the
//     worker's /metrics every 15 s, as monitoring would. --vacuum=false turns the
//     worker's vacuum loop off, for comparison.
//
//   - burst: an acquire and a release (with --burst-extends keep-alives
//     between; by --burst-owners owners in turn) of each of 10,000 locks
//     sent at once: how long the worker takes to answer them all, draining them as
//     it drains a backlog after an outage.
//
//   - builds: one lockworker binary (--worker-bin) against another
//     (--baseline-bin), scenario 1's closed loop alternating, each on a
//     target of its own: every figure as a ratio (issue 17: every change
//     measured against the build before it).
//
//   - failover: three lockworker processes on a cmd/devkafka process under
//     load on every partition, each reaching PostgreSQL through a TCP
//     proxy of its own in lockbench's process; SIGKILL one, SIGSTOP one
//     (SIGCONT after --failover-freeze-for, longer than the session
//     timeout), SIGTERM one, roll all three, cut one off from PostgreSQL
//     (its proxy hangs for --failover-cut-for, longer than the worker's
//     default POSTGRES_UNREACHABLE_TIMEOUT, then forwards again); the
//     worst and p99 time to answer per fault and the unanswered count,
//     and how many SIGTERMs did not end in exit status 0 and how many
//     replicas exited with no fault asking (each counted and started
//     again; the run goes on) (make bench-failover).
//
// By default it creates a fresh schema in database "lockbench" of the local
// PostgreSQL and an embedded kfake broker on a free port, and removes both
// at the end.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/worker"
)

// DefaultDatabaseURL is where lockbench creates its schemas by default.
const DefaultDatabaseURL = "postgres://postgres@127.0.0.1:5432/lockbench?sslmode=disable"

// Scenario names, in the order they run.
var scenarioNames = []string{"throughput", "latency", "contention", "expiry", "cleanup", "ceiling", "resources", "peer"}

// longScenarios run only when named, after the others.
var longScenarios = []string{"soak", failoverScenario, "modes", buildsScenario, "burst"}

// buildsScenario compares two worker binaries (builds.go).
const buildsScenario = "builds"

// Config is every knob of a run.
type Config struct {
	Scenarios []string `json:"scenarios"`
	Quick     bool     `json:"quick"`

	Brokers     []string `json:"brokers,omitempty"`
	DatabaseURL string   `json:"-"`
	WorkerBin   string   `json:"worker_bin,omitempty"`
	// BaselineBin is the builds scenario's other worker binary.
	BaselineBin  string `json:"baseline_bin,omitempty"`
	BrokerMemory bool   `json:"broker_memory"`
	BrokerBin    string `json:"broker_bin,omitempty"`
	Keep         bool   `json:"-"`

	PGMaxConns      int   `json:"pg_max_conns"`
	MaxPollRecords  int   `json:"max_poll_records"`
	Appliers        int   `json:"appliers"`
	ReplyPartitions int32 `json:"reply_partitions"`

	Clients  int           `json:"clients"`
	Warmup   time.Duration `json:"warmup_ns"`
	Duration time.Duration `json:"duration_ns"`
	// EndGrace is how long a closed loop's commands sent before its
	// window's end (the soak's last) may still be answered after it; then
	// those unanswered are errors. Below the loops' 30 s wait for an
	// answer, it bounds a run's end; tests shorten it.
	EndGrace time.Duration `json:"end_grace_ns"`

	Rate            int           `json:"rate"`
	LatencyDuration time.Duration `json:"latency_duration_ns"`

	Waiters int `json:"waiters"`

	BurstLocks   int `json:"burst_locks"`
	BurstExtends int `json:"burst_extends"`
	BurstOwners  int `json:"burst_owners"`

	Leases int           `json:"leases"`
	Lease  time.Duration `json:"lease_ns"`

	CleanupSizes []int `json:"cleanup_sizes"`
	// CleanupEndedMax bounds the sizes measured with ended leases.
	CleanupEndedMax int `json:"cleanup_ended_max"`

	CeilingDuration time.Duration `json:"ceiling_duration_ns"`
	CeilingAppliers int           `json:"ceiling_appliers"`
	CeilingBatch    int           `json:"ceiling_batch"`
	CeilingBigBatch int           `json:"ceiling_big_batch"`

	SoakDuration time.Duration `json:"soak_duration_ns"`
	SoakWindow   time.Duration `json:"soak_window_ns"`
	SoakClients  int           `json:"soak_clients"`
	SoakLocks    int           `json:"soak_locks"`
	// SoakScrape is how often the soak reads the child's /metrics, as
	// Prometheus would (0: never).
	SoakScrape time.Duration `json:"soak_scrape_ns"`
	// Vacuum runs the worker's vacuum loop (VACUUM_ENABLED).
	Vacuum bool `json:"worker_vacuum"`

	JSON       bool   `json:"-"`
	JSONOut    string `json:"-"`
	CPUProfile string `json:"-"`
	MemProfile string `json:"-"`
	SQLStats   bool   `json:"sql_stats"`
	PGSample   bool   `json:"pg_sample"`
	Verbose    bool   `json:"-"`
	// ServeFloor makes this process a floor (floor.go) instead of a run.
	ServeFloor string `json:"-"`
	SDK        bool   `json:"sdk"`
	// RelayConcurrentTopics is the in-process relay's default; false sets
	// its OrderAcrossTopics.
	RelayConcurrentTopics bool `json:"relay_concurrent_topics"`

	Failover FailoverConfig `json:"failover"`
	// Rounds is how many times the peer, modes and builds scenarios alternate
	// what they compare.
	Rounds int `json:"rounds"`
}

// DefaultConfig is `make bench`: a few minutes on a 2-core machine.
func DefaultConfig() Config {
	return Config{
		Scenarios: scenarioNames, SDK: true, PGMaxConns: 10, ReplyPartitions: 4,
		Clients: 256, Warmup: 3 * time.Second, Duration: 15 * time.Second, EndGrace: 10 * time.Second,
		Rate: 1000, LatencyDuration: 10 * time.Second,
		Waiters: 100, Leases: 10000, Lease: time.Second, BurstLocks: 10000,
		CleanupSizes: []int{100, 100000}, CleanupEndedMax: 10000,
		CeilingDuration: 10 * time.Second, CeilingAppliers: worker.DefaultAppliers, CeilingBigBatch: 500,
		Failover: FailoverConfig{Kills: 10, Terms: 10, Rolls: 3, Freezes: 3, FreezeFor: 15 * time.Second, Cuts: 3, CutFor: 30 * time.Second}, Rounds: 3,
		SoakDuration: 10 * time.Minute, SoakWindow: time.Minute, SoakClients: 32, SoakLocks: 64, SoakScrape: 15 * time.Second, Vacuum: true,
	}
}

// quick shrinks everything to a CI-speed smoke run.
func (c *Config) quick() {
	c.Quick = true
	c.Clients, c.Warmup, c.Duration = 32, time.Second, 3*time.Second
	c.Rate, c.LatencyDuration = 200, 2*time.Second
	c.Waiters, c.Leases, c.BurstLocks = 10, 200, 200
	c.CleanupSizes = []int{100, 1000}
	c.CeilingDuration, c.CeilingBigBatch = 2*time.Second, 200
	// FreezeFor and CutFor kept: a shorter freeze is no eviction, a shorter
	// cut no give-up.
	c.Failover.Kills, c.Failover.Terms, c.Failover.Rolls, c.Failover.Freezes, c.Failover.Cuts = 2, 2, 1, 1, 1
	c.SoakDuration, c.SoakWindow = 30*time.Second, 10*time.Second
	c.Rounds = 1
}

func (c *Config) wants(name string) bool { return slices.Contains(c.Scenarios, name) }

func parseScenarios(s string) ([]string, error) {
	if s == "" || s == "all" {
		return scenarioNames, nil
	}
	var out []string
	for _, x := range strings.Split(s, ",") {
		x = strings.TrimSpace(x)
		if n, err := strconv.Atoi(x); err == nil && n >= 1 && n <= len(scenarioNames) {
			x = scenarioNames[n-1]
		}
		if !slices.Contains(scenarioNames, x) && !slices.Contains(longScenarios, x) {
			return nil, fmt.Errorf("unknown scenario %q (want all, or some of %s, or 1-8)", x, strings.Join(append(scenarioNames, longScenarios...), ","))
		}
		out = append(out, x)
	}
	return out, nil
}

func parseFlags(args []string, stderr io.Writer) (_ *Config, err error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("lockbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenario", "all", "scenarios to run: all, or a comma-separated list of "+strings.Join(scenarioNames, ",")+" (or 1-8), or "+strings.Join(longScenarios, ",")+" (by name only)")
	quick := fs.Bool("quick", false, "CI-speed smoke run: small counts and short durations (set before other flags' defaults apply)")
	brokers := fs.String("brokers", "", "connect to a running lockworker through these Kafka brokers (comma-separated) instead of starting one")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "PostgreSQL: where lockbench creates its schemas (default "+DefaultDatabaseURL+"); with --brokers, the running worker's database (seeding for cleanup, the ceiling's schema)")
	fs.StringVar(&cfg.WorkerBin, "worker-bin", "", "run this lockworker binary as a child process instead of in process (scenario 7 then measures the worker alone); builds: the candidate; floor:kafka, floor:commit or floor:outbox runs a floor instead, the least any service with this API does (floor.go)")
	fs.StringVar(&cfg.BaselineBin, "baseline-bin", "", "builds: the lockworker binary (or floor:MODE) the candidate (--worker-bin) is measured against, alternating")
	fs.StringVar(&cfg.ServeFloor, "serve-floor", "", "internal: serve as the floor of this mode (what lockbench starts for --worker-bin floor:MODE)")
	fs.BoolVar(&cfg.BrokerMemory, "broker-memory", false, "in-memory kfake broker instead of the embedded broker with a data directory (a broker in lockbench's process only: not with --broker-bin or --brokers)")
	fs.StringVar(&cfg.BrokerBin, "broker-bin", "", "run this devkafka binary as the broker, a process of its own, so that its CPU is measured apart from the worker's and lockbench's")
	fs.BoolVar(&cfg.Keep, "keep", false, "keep the schemas lockbench created")
	pgConns := fs.Int("pg-max-conns", cfg.PGMaxConns, "worker's pool size (POSTGRES_MAX_CONNECTIONS), also used by the ceiling")
	fs.IntVar(&cfg.MaxPollRecords, "max-poll-records", 0, "in-process worker's MaxPollRecords (0: the worker's default; in-process mode only, lockworker has no setting of it)")
	fs.IntVar(&cfg.Appliers, "appliers", 0, "in-process worker's Appliers, transactions of commands at once, and the ceiling's (0: the worker's default; a child or running worker keeps its default, and so does the ceiling)")
	clients := fs.Int("clients", 0, "throughput: virtual clients (default 256, quick 32)")
	duration := fs.Duration("duration", 0, "throughput: measured window (default 15s, quick 3s)")
	warmup := fs.Duration("warmup", 0, "throughput, latency and soak: warm-up before the measured window, discarded (default 3s, quick 1s)")
	rate := fs.Int("rate", 0, "latency: commands per second (default 1000, quick 200)")
	latDur := fs.Duration("latency-duration", 0, "latency: how long to send (default 10s, quick 2s)")
	waiters := fs.Int("waiters", 0, "contention: clients waiting on the lock (default 100, quick 10)")
	burstLocks := fs.Int("burst-locks", 0, "burst: locks acquired and released, all their commands sent at once (default 10000, quick 200)")
	fs.IntVar(&cfg.BurstExtends, "burst-extends", 0, "burst: keep-alives (extends) of each lease between its acquire and its release")
	fs.IntVar(&cfg.BurstOwners, "burst-owners", 1, "burst: owners taking each lock in turn, each an acquire, its extends and a release")
	leases := fs.Int("leases", 0, "expiry: leases (default 10000, quick 200)")
	lease := fs.Duration("lease", 0, "expiry: lease duration (default 1s)")
	sizes := fs.String("cleanup-sizes", "", "cleanup: comma-separated lock counts (default 100,100000, quick 100,1000)")
	fs.IntVar(&cfg.CleanupEndedMax, "cleanup-ended-max", cfg.CleanupEndedMax, "cleanup: measure ended leases (three records each for the relay) only up to this many locks")
	ceilDur := fs.Duration("ceiling-duration", 0, "ceiling: duration of each run (default 10s, quick 2s)")
	ceilBatch := fs.Int("ceiling-batch", 0, "ceiling: commands per batch (default: clients / appliers, the closed loop's share per applier, as scenario 1's worker batches; "+
		"the pipeline's fraction of the ceiling is judged only at that)")
	soakDur := fs.Duration("soak-duration", 0, "soak: how long to measure (default 10m, quick 30s)")
	soakWin := fs.Duration("soak-window", 0, "soak: window of each throughput and p99 figure (default 1m, quick 10s)")
	rounds := fs.Int("rounds", 0, "peer, modes and builds: rounds of alternation (default 3, quick 1)")
	fs.IntVar(&cfg.SoakClients, "soak-clients", cfg.SoakClients, "soak: virtual clients")
	fs.IntVar(&cfg.SoakLocks, "soak-locks", cfg.SoakLocks, "soak: locks the clients share out, each its own (at least --soak-clients)")
	fs.DurationVar(&cfg.SoakScrape, "soak-scrape", cfg.SoakScrape, "soak: read the worker's /metrics this often, as Prometheus would (child process only; 0: never)")
	fs.BoolVar(&cfg.Vacuum, "vacuum", cfg.Vacuum, "run the worker's vacuum loop (VACUUM_ENABLED); false to measure without it")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&cfg.JSONOut, "json-out", "", "also write the JSON report to this file; not written (an earlier run's left as it was) when the run failed before any scenario had a result")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write a CPU profile of the throughput window (in-process mode only)")
	fs.StringVar(&cfg.MemProfile, "memprofile", "", "write an allocations profile after the throughput window (in-process mode only)")
	fs.BoolVar(&cfg.SQLStats, "sql-stats", false, "time every statement of the in-process worker during the throughput window (in-process mode only)")
	fs.BoolVar(&cfg.PGSample, "pg-sample", false, "sample pg_stat_activity every 10 ms during the throughput window")
	fs.BoolVar(&cfg.SDK, "sdk", true, "throughput: also run it through the client SDK (package client)")
	fs.BoolVar(&cfg.RelayConcurrentTopics, "relay-concurrent-topics", true, "in-process relay: publish each topic's rows of a batch in one call, topics concurrently (false: outbox.Config.OrderAcrossTopics; in-process mode only, lockworker has no setting of it)")
	fs.BoolVar(&cfg.Verbose, "v", false, "log the worker's warnings to stderr")
	fs.StringVar(&cfg.Failover.DevkafkaBin, "devkafka-bin", "", "failover: the cmd/devkafka binary")
	kills := fs.Int("failover-kills", cfg.Failover.Kills, "failover: SIGKILLs of one replica (2 with --quick)")
	freezes := fs.Int("failover-freezes", cfg.Failover.Freezes, "failover: SIGSTOPs of one replica, each SIGCONTed after --failover-freeze-for (1 with --quick)")
	freezeFor := fs.Duration("failover-freeze-for", 0, "failover: how long each SIGSTOP lasts; longer than the session timeout, the group evicts the replica meanwhile (default 15s)")
	terms := fs.Int("failover-terms", cfg.Failover.Terms, "failover: SIGTERMs of one replica (2 with --quick)")
	rolls := fs.Int("failover-rolls", cfg.Failover.Rolls, "failover: rolling restarts of all three (1 with --quick)")
	cuts := fs.Int("failover-cuts", cfg.Failover.Cuts, "failover: PostgreSQL cuts from one replica (its proxy hangs), each restored after --failover-cut-for (1 with --quick)")
	cutFor := fs.Duration("failover-cut-for", 0, fmt.Sprintf("failover: how long each PostgreSQL cut lasts; longer than the worker's default POSTGRES_UNREACHABLE_TIMEOUT (%s), so that a replica that gives its partitions up does so meanwhile (default 30s)", worker.DefaultUnreachableTimeout))
	fs.BoolVar(&cfg.Failover.Static, "failover-static", false, "failover: replicas with KAFKA_STATIC_MEMBERSHIP=true")
	fs.DurationVar(&cfg.Failover.SessionTimeout, "failover-session-timeout", 0, "failover: replicas' KAFKA_SESSION_TIMEOUT (default lockworker's)")
	fs.DurationVar(&cfg.Failover.Heartbeat, "failover-heartbeat", 0, "failover: replicas' KAFKA_HEARTBEAT_INTERVAL (default lockworker's)")
	fs.StringVar(&cfg.Failover.LogFile, "failover-log", "", "failover: write the replicas' logs to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err // fs has said what is wrong, with the usage
	}
	// The checks below say what they refuse, as fs does: main only exits.
	defer func() {
		if err != nil {
			fmt.Fprintln(stderr, "lockbench:", err)
		}
	}()
	// A number given is taken as given or refused where it is given, never
	// replaced by a default (most flags are 0, "not given", until --quick's
	// or DefaultConfig's applies) nor left to fail later. 0 means
	// something (none, never, the worker's default) to these only.
	zeroMeans := map[string]bool{
		"warmup": true, "max-poll-records": true, "appliers": true, "burst-extends": true,
		"cleanup-ended-max": true, "soak-scrape": true, "failover-kills": true,
		"failover-freezes": true, "failover-terms": true, "failover-rolls": true, "failover-cuts": true,
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		given[f.Name] = true
		var v int64
		switch x := f.Value.(flag.Getter).Get().(type) {
		case int:
			v = int64(x)
		case time.Duration:
			v = int64(x)
		default:
			return
		}
		switch {
		case err != nil:
		case zeroMeans[f.Name] && v < 0:
			err = fmt.Errorf("--%s must be 0 or more", f.Name)
		case !zeroMeans[f.Name] && v < 1:
			err = fmt.Errorf("--%s must be positive", f.Name)
		}
	})
	if err != nil {
		return nil, err
	}
	if cfg.Scenarios, err = parseScenarios(*scen); err != nil {
		return nil, err
	}
	if *quick {
		cfg.quick()
	}
	cfg.PGMaxConns = *pgConns
	setGiven(given, "clients", &cfg.Clients, *clients)
	setGiven(given, "rounds", &cfg.Rounds, *rounds)
	setGiven(given, "rate", &cfg.Rate, *rate)
	setGiven(given, "waiters", &cfg.Waiters, *waiters)
	setGiven(given, "burst-locks", &cfg.BurstLocks, *burstLocks)
	setGiven(given, "leases", &cfg.Leases, *leases)
	// The failover's counts default to DefaultConfig's (the help says so)
	// or --quick's; given, they override either (0 skips that fault).
	setGiven(given, "failover-kills", &cfg.Failover.Kills, *kills)
	setGiven(given, "failover-terms", &cfg.Failover.Terms, *terms)
	setGiven(given, "failover-rolls", &cfg.Failover.Rolls, *rolls)
	setGiven(given, "failover-freezes", &cfg.Failover.Freezes, *freezes)
	setGiven(given, "failover-cuts", &cfg.Failover.Cuts, *cuts)
	setGiven(given, "ceiling-batch", &cfg.CeilingBatch, *ceilBatch)
	// The ceiling batches as scenario 1's worker does: a child worker (or a
	// running one) has no setting of it, and runs the default.
	if cfg.WorkerBin == "" && *brokers == "" && cfg.Appliers > 0 {
		cfg.CeilingAppliers = cfg.Appliers
	}
	setGiven(given, "duration", &cfg.Duration, *duration)
	setGiven(given, "warmup", &cfg.Warmup, *warmup)
	setGiven(given, "latency-duration", &cfg.LatencyDuration, *latDur)
	setGiven(given, "lease", &cfg.Lease, *lease)
	setGiven(given, "ceiling-duration", &cfg.CeilingDuration, *ceilDur)
	setGiven(given, "soak-duration", &cfg.SoakDuration, *soakDur)
	setGiven(given, "soak-window", &cfg.SoakWindow, *soakWin)
	setGiven(given, "failover-freeze-for", &cfg.Failover.FreezeFor, *freezeFor)
	setGiven(given, "failover-cut-for", &cfg.Failover.CutFor, *cutFor)
	// Fewer would measure nothing and report it as done.
	if n := pairs(cfg.Rate, cfg.LatencyDuration); n < 2 {
		return nil, fmt.Errorf("--rate %d for --latency-duration %s sends %d commands to measure: at least an acquire and its release (2) are needed", cfg.Rate, cfg.LatencyDuration, n)
	}
	if cfg.SoakWindow > cfg.SoakDuration {
		return nil, errors.New("--soak-window must be at most --soak-duration")
	}
	// Each soak client takes locks of its own; fewer locks than clients
	// would have two share one, and each refusal (LOCK_HELD) of the other's
	// acquire would count as an error of the worker and fail the goals.
	if cfg.SoakLocks < cfg.SoakClients {
		return nil, fmt.Errorf("--soak-locks (%d) must be at least --soak-clients (%d): each client acquires and releases locks of its own, uncontended", cfg.SoakLocks, cfg.SoakClients)
	}
	if *sizes != "" {
		cfg.CleanupSizes = nil
		for _, s := range strings.Split(*sizes, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n < 1 {
				return nil, fmt.Errorf("--cleanup-sizes: %q is not a positive count", s)
			}
			cfg.CleanupSizes = append(cfg.CleanupSizes, n)
		}
	}
	if err := checkFloor(cfg.WorkerBin, cfg.BaselineBin); err != nil {
		return nil, err
	}
	if err := checkInProcess(&cfg, given, *brokers != ""); err != nil {
		return nil, err
	}
	if cfg.wants(buildsScenario) && (cfg.WorkerBin == "" || cfg.BaselineBin == "" || *brokers != "") {
		return nil, errors.New("--scenario builds runs two worker binaries of its own: it needs --worker-bin and --baseline-bin, and no --brokers")
	}
	if *brokers != "" {
		cfg.Brokers = strings.Split(*brokers, ",")
	} else if cfg.DatabaseURL == "" {
		cfg.DatabaseURL = DefaultDatabaseURL
	}
	return &cfg, nil
}

// setGiven sets *dst to v when its flag was given: the flags whose
// defaults --quick changes are parsed apart, and applied after it.
func setGiven[T any](given map[string]bool, name string, dst *T, v T) {
	if given[name] {
		*dst = v
	}
}

// checkInProcess refuses the options given (even at their defaults) of
// the worker or the broker lockbench runs in its own process when that
// runs elsewhere, rather than report a run they did not change. With
// --worker-bin or --brokers the worker is another process; with
// --broker-bin or --brokers the broker is.
func checkInProcess(cfg *Config, given map[string]bool, external bool) error {
	for _, c := range []struct {
		elsewhere bool
		flags     []string
		why       string
	}{
		{cfg.WorkerBin != "" || external, []string{"cpuprofile", "memprofile", "sql-stats", "max-poll-records", "relay-concurrent-topics"},
			"for the in-process worker only; with --worker-bin or --brokers the worker is another process " +
				"(--cpuprofile and --memprofile would profile lockbench's load generator and broker, --sql-stats would time nothing, " +
				"and lockworker has no setting of --max-poll-records or --relay-concurrent-topics)"},
		{cfg.BrokerBin != "" || external, []string{"broker-memory"},
			"for a broker in lockbench's process only; with --broker-bin or --brokers the broker is another process " +
				"(devkafka keeps its data in a directory, a running broker as it was started)"},
	} {
		if !c.elsewhere {
			continue
		}
		var refused []string
		for _, f := range c.flags {
			if given[f] {
				refused = append(refused, "--"+f)
			}
		}
		if len(refused) > 0 {
			return fmt.Errorf("%s: %s", strings.Join(refused, ", "), c.why)
		}
	}
	return nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, cancel := signalContext()
	defer cancel()
	if cfg.ServeFloor != "" {
		if err := serveFloor(ctx, cfg.ServeFloor); err != nil {
			fmt.Fprintln(os.Stderr, "lockbench: floor:", err)
			os.Exit(1)
		}
		return
	}
	rep, err := run(ctx, cfg, os.Stderr)
	writeReport(rep, cfg, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lockbench:", err)
		os.Exit(1)
	}
}

// signalContext is cancelled by the first SIGINT or SIGTERM. Unwinding
// after it (a failover's settle, the broker's close, the report) can take
// tens of seconds: a second SIGINT (Ctrl-C again) ends the process at once,
// as is usual, but later SIGTERMs are ignored, since they come in pairs
// (timeout, a CI's cancel or a kill of the process group reaching
// lockbench directly and through make) and would lose the report of a run
// nobody meant to cut short. Its children die with it
// (childproc.DieWithParent).
func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
		case <-ctx.Done():
			signal.Stop(ch)
			return
		}
		cancel()
		for sig := range ch {
			if sig == os.Interrupt {
				signal.Reset(os.Interrupt)
				_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
				return
			}
		}
	}()
	return ctx, cancel
}

// writeReport prints rep to stdout and, with --json-out, writes it to that
// file, but only if some scenario has a result: a run that failed before
// any completed (a bad --failover-log, no database) leaves the file of an
// earlier run as it was, and says so.
func writeReport(rep *Report, cfg *Config, stdout, stderr io.Writer) {
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.print(stdout, cfg)
	}
	if cfg.JSONOut == "" {
		return
	}
	if !rep.hasResults() {
		fmt.Fprintf(stderr, "lockbench: %s not written: no scenario has a result\n", cfg.JSONOut)
		return
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err == nil {
		err = os.WriteFile(cfg.JSONOut, b, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "lockbench: --json-out:", err)
	}
}

// run runs the scenarios of cfg and returns the report, partial on error:
// the figures and goals of the scenarios that completed, and the error. A
// scenario that fails, or that a signal cuts short, leaves no figures,
// but failover, which keeps what it measured (its contract checked).
func run(ctx context.Context, cfg *Config, stderr io.Writer) (*Report, error) {
	rep := newReport(cfg)
	err := runScenarios(ctx, cfg, rep, stderr)
	if err != nil {
		rep.Error = err.Error()
	}
	rep.finish(cfg)
	return rep, err
}

// runScenarios runs the scenarios of cfg into rep, each result kept only
// if its scenario completed (the failover's and the builds' are kept on
// error too: what a fault did, what the rounds measured).
func runScenarios(ctx context.Context, cfg *Config, rep *Report, stderr io.Writer) error {
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "lockbench: "+format+"\n", args...)
	}
	log := zerolog.Nop()
	if cfg.Verbose {
		log = zerolog.New(stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	if cfg.wants(failoverScenario) {
		logw, closeLog, err := replicaLog(cfg, stderr)
		if err != nil {
			return err
		}
		progress("failover: 3 replicas, %d SIGKILLs, %d SIGSTOPs of %s, %d SIGTERMs, %d rolling restarts, %d PostgreSQL cuts of %s",
			cfg.Failover.Kills, cfg.Failover.Freezes, cfg.Failover.FreezeFor, cfg.Failover.Terms, cfg.Failover.Rolls, cfg.Failover.Cuts, cfg.Failover.CutFor)
		f, err := failover(ctx, cfg, progress, logw)
		closeLog()
		rep.Failover = f
		if f != nil {
			rep.failoverGoals(f)
		}
		if err != nil {
			return fmt.Errorf("failover: %w", err)
		}
		if len(cfg.Scenarios) == 1 {
			rep.Mode, rep.Broker = "child processes", "devkafka process (data dir)"
			return nil
		}
	}
	if cfg.wants(buildsScenario) {
		r, err := builds(ctx, cfg, rep, log, progress)
		rep.Builds = r
		if err != nil {
			return fmt.Errorf("builds: %w", err)
		}
		if len(cfg.Scenarios) == 1 {
			rep.Mode = "child processes"
			return nil
		}
	}
	b, stop, err := connect(ctx, cfg, rep, log, progress)
	if err != nil {
		return err
	}
	defer stop()
	t, run := b.t, b.run
	b.markRSS("start")
	// VmHWM is the peak so far: read once the last scenario is over (a
	// failed one too), the worker still running.
	defer func() {
		if cfg.wants("resources") {
			rep.Resources = b.resources()
		}
	}()

	if cfg.Appliers > 0 && t.mode != "in-process" {
		rep.note(fmt.Sprintf("--appliers %d is the in-process worker's: not applied to the %s worker; the ceiling runs the worker's default (%d)", cfg.Appliers, t.mode, worker.DefaultAppliers))
	}

	var direct *store.Store
	if (cfg.wants("cleanup") || cfg.wants("ceiling")) && t.adminURL != "" {
		url, drop, err := newSchema(ctx, t.adminURL, "lockbench_direct", cfg.Keep)
		if err != nil {
			return err
		}
		defer drop()
		direct, err = store.Open(ctx, store.Config{URL: url, MaxConns: int32(cfg.PGMaxConns)})
		if err != nil {
			return err
		}
		defer direct.Close()
		if err := direct.Migrate(ctx); err != nil {
			return err
		}
	}

	if cfg.wants("throughput") || cfg.wants("resources") {
		progress("1 throughput: %d clients, %s warm-up, %s measured", cfg.Clients, cfg.Warmup, cfg.Duration)
		r, err := b.throughput(ctx, "raw records", b.rawCycler(30*time.Second), true)
		if err != nil {
			return fmt.Errorf("throughput: %w", err)
		}
		rep.Throughput = &r
		b.markRSS("throughput")
		b.quiesce(ctx, "1 throughput", time.Minute)
		if cfg.SDK {
			progress("1 throughput through the client SDK: %d clients, %s warm-up, %s measured", cfg.Clients, cfg.Warmup, cfg.Duration)
			sdk, closeSDK, err := b.sdkCycler(ctx)
			if err != nil {
				return fmt.Errorf("client SDK: %w", err)
			}
			r, err := b.throughput(ctx, "client SDK", sdk, false)
			closeSDK()
			if err != nil {
				return fmt.Errorf("throughput (SDK): %w", err)
			}
			rep.ThroughputSDK = &r
			b.quiesce(ctx, "1 throughput through the client SDK", time.Minute)
		}
	}
	if cfg.wants("latency") {
		progress("2 latency: %d commands/s for %s", cfg.Rate, cfg.LatencyDuration)
		r, err := b.latency(ctx)
		if err != nil {
			return fmt.Errorf("latency: %w", err)
		}
		rep.Latency = &r
		b.markRSS("latency")
		b.quiesce(ctx, "2 latency", time.Minute)
	}
	if cfg.wants("contention") {
		progress("3 contention: %d waiters on one lock", cfg.Waiters)
		r, err := b.contention(ctx)
		if err != nil {
			return fmt.Errorf("contention: %w", err)
		}
		rep.Contention = &r
		b.markRSS("contention")
		b.quiesce(ctx, "3 contention", time.Minute)
	}
	if cfg.wants("expiry") {
		progress("4 expiry: %d leases of %s", cfg.Leases, cfg.Lease)
		r, err := b.expiry(ctx)
		if err != nil {
			return fmt.Errorf("expiry: %w", err)
		}
		rep.Expiry = &r
		b.markRSS("expiry")
		b.quiesce(ctx, "4 expiry", time.Minute)
	}
	if cfg.wants("cleanup") {
		if t.st == nil && direct == nil {
			rep.Notes = append(rep.Notes, "cleanup skipped: it seeds expired locks in the database, and no --database-url was given")
		} else {
			progress("5 cleanup: %v locks", cfg.CleanupSizes)
			r, err := b.cleanup(ctx, direct)
			b.markRSS("cleanup")
			if err != nil {
				return fmt.Errorf("cleanup: %w", err)
			}
			rep.Cleanup = r
		}
	}
	if cfg.wants("ceiling") {
		if direct == nil {
			rep.Notes = append(rep.Notes, "ceiling skipped: no --database-url")
		} else {
			var runs []CeilingResult
			for _, cr := range ceilingRuns(cfg) {
				progress("6 ceiling (%s): %d transactions at once, %d commands per batch, %s", cr.label, cfg.CeilingAppliers, cr.batch, cfg.CeilingDuration)
				r, err := ceiling(ctx, direct, t.pg, cr.label, cfg.CeilingAppliers, cr.batch, cfg.CeilingDuration, cfg.PGMaxConns, run)
				if err != nil {
					return fmt.Errorf("ceiling: %w", err)
				}
				runs = append(runs, r)
				if err := truncateDirect(ctx, direct); err != nil {
					return err
				}
			}
			rep.Ceiling = runs
		}
	}
	if cfg.wants("burst") {
		progress("burst: acquire, %d extends and release of %d locks by %d owners in turn, sent at once", cfg.BurstExtends, cfg.BurstLocks, cfg.BurstOwners)
		r, err := b.burst(ctx)
		b.markRSS("burst")
		if err != nil {
			return fmt.Errorf("burst: %w", err)
		}
		rep.Burst = &r
		b.quiesce(ctx, "burst", time.Minute)
	}
	if cfg.wants("modes") {
		r, err := b.modes(ctx)
		b.markRSS("modes")
		if err != nil {
			return fmt.Errorf("modes: %w", err)
		}
		rep.Modes = &r
	}
	if cfg.wants("peer") {
		if t.adminURL == "" {
			rep.Notes = append(rep.Notes, "peer skipped: the original design needs --database-url")
		} else {
			r, err := b.peer(ctx)
			b.markRSS("peer")
			if err != nil {
				return fmt.Errorf("peer: %w", err)
			}
			rep.Peer = &r
		}
	}
	if cfg.wants("soak") {
		progress("soak: %d clients on %d locks for %s (windows of %s), worker vacuum loop %v", cfg.SoakClients, cfg.SoakLocks, cfg.SoakDuration, cfg.SoakWindow, cfg.Vacuum)
		r, err := b.soak(ctx)
		b.markRSS("soak")
		if err != nil {
			return fmt.Errorf("soak: %w", err)
		}
		rep.Soak = &r
	}
	return nil
}

// connect starts the target cfg describes and a driver on it, waits until
// the worker answers, and returns the bench to run scenarios with; stop
// stops them.
func connect(ctx context.Context, cfg *Config, rep *Report, log zerolog.Logger, progress func(string, ...any)) (_ *bench, stop func(), err error) {
	progress("starting the target")
	t, err := startTarget(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	rep.Mode, rep.Broker, rep.Brokers = t.mode, t.broker, t.brokers
	if t.st != nil {
		_ = t.st.Pool.QueryRow(ctx, `SELECT split_part(version(), ' ', 1) || ' ' || split_part(version(), ' ', 2)`).Scan(&rep.Machine.PostgreSQL)
		pg, perr := findPostmaster(ctx, t.st.Pool)
		if perr != nil {
			rep.note("PostgreSQL CPU not measured: " + perr.Error())
		}
		t.pg = pg
	} else {
		rep.note("PostgreSQL CPU not measured: no --database-url")
	}
	rep.postgresFound(t.pg != nil)
	run := fmt.Sprintf("lb%06x", time.Now().UnixNano()&0xffffff)
	d, err := newDriver(ctx, t.brokers, t.names, t.names.ReplyTopic("lockbench-"+run), cfg.ReplyPartitions)
	if err != nil {
		return nil, nil, err
	}
	if err := waitReady(ctx, d, run, 90*time.Second); err != nil {
		d.close()
		return nil, nil, err
	}
	return &bench{cfg: cfg, t: t, d: d, run: run, rep: rep, progress: progress}, func() { d.close(); d.addTo(&rep.Driver); t.close() }, nil
}

// ResourceResult is scenario 7.
type ResourceResult struct {
	Measured   string  `json:"measured"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// CPU per 1,000 commands over scenario 1's window.
	CPUPer1000   *float64 `json:"cpu_seconds_per_1000_commands,omitempty"`
	PGCPUPer1000 *float64 `json:"postgres_cpu_seconds_per_1000_commands,omitempty"`
	// PeakAfter is the peak RSS (VmHWM, MiB) when each scenario ended;
	// PeakRSSMiB is read after the last.
	PeakAfter []rssMark `json:"peak_rss_after_each_scenario"`
}

type rssMark struct {
	After string  `json:"after"`
	MiB   float64 `json:"mib"`
}

func (b *bench) markRSS(after string) {
	if b.t.proc == nil {
		return
	}
	if rss, err := b.t.proc.peakRSS(); err == nil {
		b.rss = append(b.rss, rssMark{after, float64(rss) / (1 << 20)})
	}
}

func (b *bench) resources() *ResourceResult {
	if b.t.proc == nil {
		b.rep.Notes = append(b.rep.Notes, "resources: the worker runs elsewhere (--brokers): not measured")
		return nil
	}
	r := &ResourceResult{Measured: b.t.proc.describe(), PeakAfter: b.rss}
	if rss, err := b.t.proc.peakRSS(); err == nil {
		r.PeakRSSMiB = float64(rss) / (1 << 20)
	}
	if tp := b.rep.Throughput; tp != nil {
		r.CPUPer1000, r.PGCPUPer1000 = tp.WorkerCPUPer, tp.PGCPUPer
	}
	return r
}
