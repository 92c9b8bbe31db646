package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// target is the lockworker under test and how to reach it.
type target struct {
	mode string // "in-process", "child process", "external"
	// broker says which broker brokers are: what the report's header names.
	broker  string
	brokers []string
	names   topics.Names
	// dbURL reaches the worker's tables (empty in external mode without
	// --database-url).
	dbURL string
	// st is lockbench's own pool on the worker's tables, for seeding.
	st *store.Store
	// adminURL is the database where lockbench may create schemas.
	adminURL string

	metrics *batchMetrics // in-process only
	proc    procSource    // what scenario 7 measures
	// brokerProc is the broker's process when it runs as one (--broker-bin).
	brokerProc procSource
	// pg is PostgreSQL's process tree, when it runs on this machine.
	pg  *postmaster
	sql *sqlTracer // in-process with --sql-stats
	// httpAddr is the child process's HTTP_ADDR (health and metrics).
	httpAddr string

	closers []func()
}

func (t *target) close() {
	for i := len(t.closers) - 1; i >= 0; i-- {
		t.closers[i]()
	}
	t.closers = nil
}

// newSchema creates a fresh schema in the database of url and returns its
// URL and a function dropping it.
func newSchema(ctx context.Context, url, prefix string, keep bool) (string, func(), error) {
	st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 1}) // creates the database when missing
	if err != nil {
		return "", nil, err
	}
	defer st.Close()
	name := fmt.Sprintf("%s_%d_%06x", prefix, time.Now().Unix(), rand.Uint32()>>8)
	if _, err := st.Pool.Exec(ctx, "CREATE SCHEMA "+name); err != nil {
		return "", nil, fmt.Errorf("creating schema %s: %w", name, err)
	}
	drop := func() {
		if keep {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(dctx, url)
		if err != nil {
			return
		}
		defer conn.Close(dctx)
		_, _ = conn.Exec(dctx, "DROP SCHEMA "+name+" CASCADE")
	}
	return connstr.WithParam(url, "search_path", name), drop, nil
}

// startTarget starts (or connects to) the lockworker under test.
func startTarget(ctx context.Context, cfg *Config, log zerolog.Logger) (_ *target, err error) {
	t := &target{names: topics.DefaultNames(), adminURL: cfg.DatabaseURL}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if len(cfg.Brokers) > 0 {
		t.mode, t.broker = "external", "external (--brokers)"
		t.brokers, t.dbURL = cfg.Brokers, cfg.DatabaseURL
	} else if err := t.startLocal(ctx, cfg, log); err != nil {
		return nil, err
	}
	if t.dbURL != "" {
		st, err := store.Open(ctx, store.Config{URL: t.dbURL, MaxConns: 4})
		if err != nil {
			return nil, err
		}
		t.st = st
		t.closers = append(t.closers, st.Close)
	}
	return t, nil
}

// startLocal creates a fresh schema and a broker, and starts a worker on them.
func (t *target) startLocal(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	url, drop, err := newSchema(ctx, cfg.DatabaseURL, "lockbench", cfg.Keep)
	if err != nil {
		return err
	}
	t.closers = append(t.closers, drop)
	t.dbURL = url

	switch {
	case cfg.BrokerBin != "":
		b, err := chaos.StartBroker(ctx, cfg.BrokerBin, 16, config.ApacheMinSessionTimeout)
		if err != nil {
			return err
		}
		t.closers = append(t.closers, b.Close)
		t.brokers, t.brokerProc = []string{b.Addr}, pidProc{b.Pid()}
		// --broker-memory or not: devkafka keeps its data in a directory.
		t.broker = "devkafka process (data dir)"
	case cfg.BrokerMemory:
		c, err := kfakeCluster()
		if err != nil {
			return err
		}
		t.closers = append(t.closers, c.Close)
		t.brokers, t.broker = c.ListenAddrs(), "kfake in lockbench's process, in memory"
	default:
		dir, err := os.MkdirTemp("", "lockbench-kafka-")
		if err != nil {
			return err
		}
		t.closers = append(t.closers, func() { _ = os.RemoveAll(dir) })
		b, err := embedded.Start(ctx, embedded.Options{Addr: "127.0.0.1:0", Dir: dir})
		if err != nil {
			return err
		}
		t.closers = append(t.closers, b.Close)
		t.brokers, t.broker = []string{b.Addr()}, "embedded kfake in lockbench's process (data dir)"
	}

	if cfg.WorkerBin != "" {
		return t.startChild(ctx, cfg, log)
	}
	return t.startInProcess(ctx, cfg, log)
}

// startInProcess wires the worker as cmd/lockworker does (store, migrations,
// publisher client, relay with its listener, worker), with the service's
// defaults.
func (t *target) startInProcess(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	t.mode = "in-process"
	scfg := store.Config{URL: t.dbURL, MinConns: 1, MaxConns: int32(cfg.PGMaxConns), RetryBase: 100 * time.Millisecond}
	if cfg.SQLStats {
		// A client-side pg_stat_statements: every statement timed.
		t.sql = newSQLTracer()
		scfg.Tracer = t.sql
	}
	st, err := store.Open(ctx, scfg)
	if err != nil {
		return err
	}
	t.closers = append(t.closers, st.Close)
	if err := st.Migrate(ctx); err != nil {
		return err
	}
	kopts := []kgo.Opt{kgo.SeedBrokers(t.brokers...)}
	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 30*time.Second, topics.DefaultNames().ReplyPrefix, true, -1)
	if err != nil {
		return err
	}
	t.closers = append(t.closers, pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, Logger: log, OrderAcrossTopics: !cfg.RelayConcurrentTopics})
	if err != nil {
		return err
	}
	t.metrics = &batchMetrics{}
	w, err := worker.New(worker.Config{
		KafkaOpts: kopts, Names: t.names, Store: st, Relay: relay, Instance: "lockbench",
		MaxPollRecords: cfg.MaxPollRecords, Appliers: cfg.Appliers, Logger: log, Metrics: t.metrics,
	})
	if err != nil {
		return err
	}
	if err := w.EnsureTopics(ctx); err != nil {
		w.Close()
		return err
	}
	vac, err := worker.NewVacuumer(worker.VacuumConfig{Store: st, Enabled: cfg.Vacuum, Logger: log})
	if err != nil {
		w.Close()
		return err
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan struct{})
	go func() { defer close(rdone); _ = w.Run(rctx) }()
	vdone := make(chan struct{})
	go func() { defer close(vdone); vac.Run(rctx) }()
	t.closers = append(t.closers, func() { rcancel(); <-rdone; <-vdone; w.Close() })
	t.proc = selfProc{}
	return nil
}

// startChild runs a lockworker binary against lockbench's broker and schema,
// so scenario 7 measures the worker alone.
func (t *target) startChild(ctx context.Context, cfg *Config, log zerolog.Logger) error {
	t.mode = "child process"
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpAddr := l.Addr().String()
	l.Close()
	t.httpAddr = httpAddr
	name, args, ready := cfg.WorkerBin, []string(nil), migratedSQL
	if mode := floorMode(cfg.WorkerBin); mode != "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		name, args, ready = exe, []string{"--serve-floor", mode}, floorReady
		t.mode += ": " + cfg.WorkerBin + " (not lockworker)"
	}
	cmd := exec.Command(name, args...)
	cmd.Env = config.ChildEnv(os.Environ(),
		"DATABASE_URL="+t.dbURL,
		"KAFKA_BOOTSTRAP_SERVERS="+strings.Join(t.brokers, ","),
		"POSTGRES_MAX_CONNECTIONS="+fmt.Sprint(cfg.PGMaxConns),
		"LOG_LEVEL=warn",
		"INSTANCE_ID=lockbench-child",
		"HTTP_ADDR="+httpAddr,
		"VACUUM_ENABLED="+fmt.Sprint(cfg.Vacuum),
	)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	// A lockbench killed before its closers run takes the worker with it,
	// as internal/chaos's replicas and brokers.
	childproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", cfg.WorkerBin, err)
	}
	var once sync.Once
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.closers = append(t.closers, func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		})
	})
	t.proc = pidProc{pid: cmd.Process.Pid}
	// The worker migrates its schema; wait for that before anyone seeds it.
	deadline := time.After(60 * time.Second)
	for !migrated(ctx, t.dbURL, ready) {
		select {
		case <-exited:
			return fmt.Errorf("the child process (%s) exited during start", cfg.WorkerBin)
		case <-deadline:
			return fmt.Errorf("the child process (%s) did not create its schema within 60 s", cfg.WorkerBin)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// migratedSQL says lockworker's schema is there.
const migratedSQL = `SELECT to_regclass('consumer_offsets') IS NOT NULL AND to_regclass('locks') IS NOT NULL`

// migrated runs ready, a query of one boolean, on url.
func migrated(ctx context.Context, url, ready string) bool {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return false
	}
	defer conn.Close(ctx)
	var ok bool
	err = conn.QueryRow(ctx, ready).Scan(&ok)
	return err == nil && ok
}

// waitReady waits until the worker answers a query (it has joined its group
// and owns the partitions).
func waitReady(ctx context.Context, d *driver, run string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i := 0; ; i++ {
		c := topics.Command{RequestID: fmt.Sprintf("%s-ready-%d", run, i), Operation: topics.OpQuery, LockName: run + "-ready"}
		_, err := d.call(ctx, c, 5*time.Second)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("lockworker not ready after %s: %w", timeout, err)
		}
	}
}

// batchMetrics is the in-process worker's worker.Metrics: how many batches of
// how many records.
type batchMetrics struct {
	mu      sync.Mutex
	batches int64
	records int64
	took    time.Duration
}

func (m *batchMetrics) Batch(records int, took time.Duration) {
	m.mu.Lock()
	m.batches++
	m.records += int64(records)
	m.took += took
	m.mu.Unlock()
}
func (m *batchMetrics) Command(string, string, time.Duration) {}
func (m *batchMetrics) Events(string, []topics.Event)         {}
func (m *batchMetrics) DeadLettered(string)                   {}
func (m *batchMetrics) DataLoss()                             {}

func (m *batchMetrics) snapshot() (batches, records int64, took time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.batches, m.records, m.took
}
