package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

type env struct {
	t     testing.TB
	st    *store.Store
	srv   *httptest.Server
	proxy *tcpproxy.Proxy
	kafka *kfake.Cluster
	slots *DBSlots
	token string // sent as the bearer token when set
	// lagKafka, when set, stands for the consumer lag's Kafka round trips,
	// before its read of the stored offsets.
	lagKafka atomic.Pointer[func(context.Context) error]
}

// newEnv serves the endpoints over a store reached through a proxy and a
// kfake broker.
func newEnv(t testing.TB, stopping <-chan struct{}, configure ...func(*Config)) *env {
	return newEnvPool(t, stopping, 8, configure...)
}

// newEnvPool is newEnv with a pool of maxConns connections. /metrics reads
// the consumer lag as the worker's does: PostgreSQL's stored offsets.
func newEnvPool(t testing.TB, stopping <-chan struct{}, maxConns int32, configure ...func(*Config)) *env {
	sch := testdb.NewSchema(t)
	direct := sch.Open(t, store.Config{})
	require.NoError(t, direct.Migrate(context.Background()))
	proxied, proxy := testdb.Proxied(t, sch.URL)
	sch.URL = proxied
	// No lock_timeout: a read waits for a locked table as long as its
	// check lets it (TestHealthHasItsOwnSlot).
	st := sch.Open(t, store.Config{MaxConns: maxConns, LockTimeout: -1})

	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)

	// The vacuum loop reads the database directly, as the worker's own pool
	// would: its state is served whatever the proxy does.
	vac, err := worker.NewVacuumer(worker.VacuumConfig{Store: direct, Enabled: true, Interval: 50 * time.Millisecond})
	require.NoError(t, err)
	vctx, stopVacuum := context.WithCancel(context.Background())
	vacuumed := make(chan struct{})
	go func() { defer close(vacuumed); vac.Run(vctx) }()
	t.Cleanup(func() { stopVacuum(); <-vacuumed })

	// The default check timeout: a busy machine's reads take their time.
	// Tests of a hung database shorten it (hung).
	cfg := Config{Pool: st.Pool, DBSlots: NewDBSlots(maxConns), Kafka: cl, Stopping: stopping,
		Partitions: func() []int32 { return []int32{1, 2} }, Instance: "test", Group: "g", CheckTimeout: 2 * time.Second, Vacuum: vac.Status}
	for _, c := range configure {
		c(&cfg)
	}
	cfg.Metrics = metrics.New(metrics.Config{Pool: st.Pool, QueryTimeout: cfg.CheckTimeout, Hold: cfg.DBSlots.Hold})
	e := &env{t: t, st: direct, proxy: proxy, kafka: c, slots: cfg.DBSlots}
	cfg.Metrics.WatchLag(func(ctx context.Context, hold func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
		if kafka := e.lagKafka.Load(); kafka != nil {
			if err := (*kafka)(ctx); err != nil {
				return nil, err
			}
		}
		err := hold(ctx, func(ctx context.Context) error {
			_, err := st.Offsets(ctx, cfg.Group, "locks.commands")
			return err
		})
		return map[int32]int64{1: 0, 2: 0}, err
	})
	e.srv = httptest.NewServer(New(cfg))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *env) get(path string, v any) (int, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	require.NoError(e.t, err)
	if e.token != "" {
		req.Header.Set("Authorization", "Bearer "+e.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	if v != nil {
		require.NoError(e.t, json.Unmarshal(body, v), "%s answered %s", path, body)
	}
	return resp.StatusCode, string(body)
}

// hung shortens the checks' timeout, for tests that hang the database.
func hung(c *Config) { c.CheckTimeout = 300 * time.Millisecond }

// apply runs commands through the state machine, as the worker does.
func (e *env) apply(cmds ...topics.Command) {
	ctx := context.Background()
	require.NoError(e.t, e.st.InTx(ctx, func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, handlers.Env{})
		for _, c := range cmds {
			if _, err := b.Apply(ctx, c, time.Now()); err != nil {
				return err
			}
		}
		return b.Flush(ctx)
	}))
}

// TestLock: a namespaced lock whose name has a slash, its queue in order,
// a released lock, and 404 for one without a row.
func TestLock(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	e.token = "inspect-secret"
	e.apply(
		topics.Command{RequestID: "r1", Operation: "acquire", Namespace: "billing", LockName: "orders/42", OwnerID: "a",
			LeaseDuration: 60, OwnerMetadata: json.RawMessage(`{"host":"x"}`)},
		topics.Command{RequestID: "r2", Operation: "acquire", Namespace: "billing", LockName: "orders/42", OwnerID: "b", WaitTimeout: 30},
		topics.Command{RequestID: "r3", Operation: "acquire", Namespace: "billing", LockName: "orders/42", OwnerID: "c", WaitTimeout: 10, LeaseDuration: 5},
	)
	var v LockView
	code, body := e.get("/locks/orders/42?namespace=billing", &v)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "billing", v.LockInfo.Namespace)
	require.Equal(t, "orders/42", v.LockInfo.LockName)
	require.Equal(t, "a", v.LockInfo.OwnerID)
	require.Equal(t, topics.StatusAcquired, v.LockInfo.Status)
	require.JSONEq(t, `{"host":"x"}`, string(v.LockInfo.OwnerMetadata))
	require.InDelta(t, 60, *v.ExpiresInSeconds, 5)
	require.Equal(t, 2, v.QueueLength)
	require.Equal(t, []string{"b", "c"}, []string{v.Queue[0].OwnerID, v.Queue[1].OwnerID})
	require.Equal(t, []string{"r2", "r3"}, []string{v.Queue[0].RequestID, v.Queue[1].RequestID})
	require.Equal(t, 5.0, v.Queue[1].LeaseDuration)
	require.InDelta(t, 10, v.Queue[1].Deadline.Sub(v.Queue[1].QueuedAt.Time).Seconds(), 0.1)
	for _, field := range []string{`"lock_info":`, `"fencing_token":`, `"expires_at":`, `"queue_length":2`, `"position":1`, `"queued_at":`, `"deadline":`, `"checked_at":`} {
		require.Contains(t, body, field)
	}

	code, _ = e.get("/locks/orders/42", nil) // another namespace
	require.Equal(t, http.StatusNotFound, code)

	e.apply(topics.Command{RequestID: "r4", Operation: "acquire", LockName: "done", OwnerID: "a"},
		topics.Command{RequestID: "r5", Operation: "release", LockName: "done", OwnerID: "a"})
	v = LockView{}
	code, body = e.get("/locks/done", &v)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, topics.StatusReleased, v.LockInfo.Status)
	require.Nil(t, v.ExpiresInSeconds)
	require.Empty(t, v.Queue)
	require.Contains(t, body, `"queue":[]`)
}

// TestInspectionIsPrivate: with an INSPECT_TOKEN, /locks/* and
// /health/locks answer 401 without it (probes and /metrics stay open);
// without one, the lock page leaves out owner_metadata and request_ids.
func TestInspectionIsPrivate(t *testing.T) {
	cmds := []topics.Command{
		{RequestID: "r1", Operation: "acquire", LockName: "l", OwnerID: "a", OwnerMetadata: json.RawMessage(`{"api_key":"hunter2"}`)},
		{RequestID: "r2", Operation: "acquire", LockName: "l", OwnerID: "b", WaitTimeout: 30},
	}
	e := newEnv(t, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	e.apply(cmds...)
	for _, path := range []string{"/locks/l", "/health/locks"} {
		for _, token := range []string{"", "wrong", "inspect-secre"} {
			e.token = token
			code, body := e.get(path, nil)
			require.Equal(t, http.StatusUnauthorized, code, "%s with %q: %s", path, token, body)
			require.NotContains(t, body, "hunter2")
		}
		e.token = "inspect-secret"
		code, body := e.get(path, nil)
		require.Equal(t, http.StatusOK, code, body)
	}
	e.token = ""
	for _, path := range []string{"/health", "/health/live", "/metrics"} {
		code, body := e.get(path, nil)
		require.NotEqual(t, http.StatusUnauthorized, code, "%s stays open: %s", path, body)
	}

	open := newEnv(t, nil)
	open.apply(cmds...)
	var v LockView
	code, body := open.get("/locks/l", &v)
	require.Equal(t, http.StatusOK, code, body)
	require.True(t, v.Redacted)
	require.NotContains(t, body, "hunter2")
	require.NotContains(t, body, `"r2"`)
	require.Equal(t, "b", v.Queue[0].OwnerID)
}

// TestBadRequests: names and namespaces the contract refuses, and query
// strings that do not parse, repeat namespace or give another key, are 400 with the reason
// (not an answer about another lock); other methods and paths are refused
// too.
func TestBadRequests(t *testing.T) {
	e := newEnv(t, nil)
	e.apply(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "orders/42", OwnerID: "a"})
	for path, reason := range map[string]string{
		"/locks/":                            "lock_name is required",
		"/locks/" + strings.Repeat("x", 256): "lock_name is 256 bytes",
		"/locks/x?namespace=" + strings.Repeat("n", 65): "namespace is 65 bytes",
		"/locks/%2A":     `lock_name "*" is only for cleanup`,
		"/locks/bell%07": "printable",
		"/locks/%FF":     "printable",
		// url.URL.Query drops what it cannot parse: these would be
		// orders/42 of the default namespace.
		"/locks/orders%2F42?namespace=bill%ing":              `malformed query string: invalid URL escape "%in"`,
		"/locks/orders%2F42?namespace=billing;x":             "malformed query string: invalid semicolon separator",
		"/locks/orders%2F42?namespace=&namespace=billing":    "namespace is given 2 times",
		"/locks/orders%2F42?namespace=billing&namespace=ops": "namespace is given 2 times",
		"/locks/orders%2F42?namespce=billing":                `unknown query parameter "namespce": only namespace is read`,
		"/locks/orders%2F42?namespace=billing&x":             `unknown query parameter "x"`,
		"/locks/orders%2F42?" + strings.Repeat("k", 100):     `unknown query parameter "` + strings.Repeat("k", 64) + `"`,
	} {
		var eb errorBody
		code, body := e.get(path, &eb)
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", path, body)
		require.Contains(t, eb.Error, reason, path)
	}
	// JSON as every other answer, not Go's plain text.
	var eb errorBody
	code, _ := e.get("/nothing", &eb)
	require.Equal(t, http.StatusNotFound, code)
	require.Equal(t, "no such endpoint", eb.Error)
	for _, path := range []string{"/health", "/locks/orders%2F42"} {
		resp, err := http.Post(e.srv.URL+path, "application/json", nil)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, path)
		require.Equal(t, "GET, HEAD", resp.Header.Get("Allow"), path)
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), path)
		require.NoError(t, json.Unmarshal(body, &eb), "%s answered %s", path, body)
		require.Equal(t, "method POST not allowed: GET and HEAD only", eb.Error)
	}
}

// TestHealthDegraded: parked outbox rows make /health degraded, still
// ready (200), with their count up to outbox.ParkedCap (TestHungDatabase:
// a failed check wins).
func TestHealthDegraded(t *testing.T) {
	e := newEnv(t, nil)
	_, err := e.st.Pool.Exec(context.Background(), `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason) VALUES
			(0, 'locks.commands.dlq', 'big', 'infinity', 'MESSAGE_TOO_LARGE'),
			(1, 'locks.replies.x', 'r', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED'),
			(1, 'locks.replies.x', 'r', now() - interval '1 minute', 'TOPIC_AUTHORIZATION_FAILED'),
			(1, 'locks.replies.y', 'r', NULL, NULL)`)
	require.NoError(t, err)
	var h Health
	code, body := e.get("/health", &h)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "degraded", h.Status)
	require.True(t, h.Ready)
	require.NotNil(t, h.OutboxParked)
	require.EqualValues(t, 2, *h.OutboxParked, "a park that ended does not count")
	require.Contains(t, body, `"outbox_parked":2`)

	// A topic that cannot be written parks its whole backlog: the probe
	// counts up to outbox.ParkedCap, a read bounded whatever the backlog
	// (outbox's TestParkedReadIsBounded), and stays degraded, not 503.
	_, err = e.st.Pool.Exec(context.Background(), `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
		SELECT 1, 'lock.acquired', 'r', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED' FROM generate_series(1, 200000)`)
	require.NoError(t, err)
	h = Health{}
	code, body = e.get("/health", &h)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "degraded", h.Status)
	require.Equal(t, "ok", h.Checks["postgres"].Status)
	require.NotNil(t, h.OutboxParked)
	require.EqualValues(t, outbox.ParkedCap, *h.OutboxParked, "that many or more")
}

// TestHungDatabase: a database that stops answering makes every check fail
// within its timeout, /metrics still answers without the database gauges,
// and all is well again once it answers.
func TestHungDatabase(t *testing.T) {
	e := newEnv(t, nil)
	var h Health
	code, body := e.get("/health", &h)
	require.Equal(t, http.StatusOK, code, body)
	none := int64(0)
	require.Equal(t, Health{Status: "ok", Live: true, Ready: true, Instance: "test", Uptime: h.Uptime, Partitions: []int32{1, 2},
		Checks:       map[string]Check{"postgres": {Status: "ok", LatencyMS: h.Checks["postgres"].LatencyMS}, "kafka": {Status: "ok", LatencyMS: h.Checks["kafka"].LatencyMS}},
		OutboxParked: &none}, h)
	var kh KafkaHealth
	code, _ = e.get("/health/kafka", &kh)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "g", kh.Group)
	var lh LocksHealth
	code, _ = e.get("/health/locks", &lh)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", lh.Status)
	code, body = e.get("/metrics", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "\nlockworker_locks_held 0\n")

	// Short checks from here, for a database that hangs: a server of its
	// own, so the healthy answers above had the default timeout.
	e = newEnv(t, nil, hung)
	e.proxy.Hang()
	for _, path := range []string{"/health", "/health/postgres", "/health/locks", "/locks/x"} {
		start := time.Now()
		code, body := e.get(path, nil)
		require.Equal(t, http.StatusServiceUnavailable, code, "%s: %s", path, body)
		require.Less(t, time.Since(start), 2*time.Second, path)
		require.Contains(t, body, "deadline exceeded", path)
	}
	var failed LocksHealth
	code, body = e.get("/health/locks", &failed)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.NotNil(t, failed.Vacuum, "the vacuum loop's state is the process's own")
	require.Equal(t, LocksHealth{Status: "unavailable", Error: failed.Error, Vacuum: failed.Vacuum}, failed, "no counts when they could not be read")
	require.NotContains(t, body, "held_locks")
	h = Health{}
	code, body = e.get("/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "unavailable", h.Status)
	require.Nil(t, h.OutboxParked, "no count when it could not be read")
	require.Equal(t, "unavailable", h.Checks["postgres"].Status)
	require.Equal(t, "ok", h.Checks["kafka"].Status, body)
	start := time.Now()
	code, body = e.get("/metrics", nil)
	require.Equal(t, http.StatusOK, code)
	require.Less(t, time.Since(start), 2*time.Second)
	require.NotContains(t, body, "lockworker_locks_held")
	require.Contains(t, body, "lockworker_handoffs_total")
	var live Live
	code, body = e.get("/health/live", &live)
	require.Equal(t, http.StatusOK, code, "the process itself is fine: %s", body)
	require.True(t, live.Live)

	e.proxy.Restore()
	require.Eventually(t, func() bool {
		code, _ := e.get("/health", nil)
		return code == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond)
}

// TestDraining: once the process is stopping, /health is 503 "draining".
func TestDraining(t *testing.T) {
	stopping := make(chan struct{})
	e := newEnv(t, stopping)
	close(stopping)
	var h Health
	code, _ := e.get("/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "draining", h.Status)
	require.True(t, h.Live)
	require.False(t, h.Ready)
}

// TestWithdrawn: a replica withdrawn from its group (PostgreSQL did not
// answer it) is not ready, though its checks answer: 503 "withdrawn" until
// it takes partitions again.
func TestWithdrawn(t *testing.T) {
	var withdrawn atomic.Bool
	withdrawn.Store(true)
	e := newEnv(t, nil, func(c *Config) { c.Withdrawn = withdrawn.Load })
	var h Health
	code, _ := e.get("/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.Equal(t, "withdrawn", h.Status)
	require.Equal(t, "ok", h.Checks["postgres"].Status)
	require.True(t, h.Live)
	require.False(t, h.Ready)

	withdrawn.Store(false)
	code, _ = e.get("/health", &h)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", h.Status)
}

// TestLocksHealthVacuum: /health/locks carries the vacuum loop's state: on
// or off, the server's autovacuum settings, the bound, the last run and the
// hot tables' dead rows.
func TestLocksHealthVacuum(t *testing.T) {
	e := newEnv(t, nil)
	var lh LocksHealth
	require.Eventually(t, func() bool {
		lh = LocksHealth{}
		code, _ := e.get("/health/locks", &lh)
		return code == http.StatusOK && lh.Vacuum != nil && len(lh.Vacuum.Tables) == len(store.HotTables)
	}, 10*time.Second, 50*time.Millisecond)
	require.True(t, lh.Vacuum.Enabled)
	require.NotNil(t, lh.Vacuum.Settings)
	require.Equal(t, int64(10000), lh.Vacuum.DeadRowsBound)
	_, body := e.get("/health/locks", nil)
	for _, field := range []string{`"vacuum":{"enabled":true`, `"settings":{"autovacuum":`, `"track_counts":`, `"dead_rows_bound":10000`,
		`"last_run":`, `"runs":`, `"tables":[{"table":"locks","live_rows":`, `"dead_rows":`, `"last_vacuum":`, `"last_autovacuum":`} {
		require.Contains(t, body, field)
	}
}

// TestLocksHealthSharesTheScrapesRead: /health/locks answers from the read
// of the database gauges that /metrics made (cached for statsMaxAge, 10 s),
// not by counting the tables again for each request on an open port.
//
// Its counted_at (RFC 3339, UTC) says when that read was made, and
// age_seconds how old it was at the answer.
func TestLocksHealthSharesTheScrapesRead(t *testing.T) {
	e := newEnv(t, nil)
	before := time.Now().Truncate(time.Millisecond)
	code, body := e.get("/metrics", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "\nlockworker_locks_held 0\n")
	scraped := time.Now()
	e.apply(
		topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 60},
		topics.Command{RequestID: "r2", Operation: "acquire", LockName: "job", OwnerID: "b", WaitTimeout: 30},
	)
	time.Sleep(300*time.Millisecond - time.Since(scraped))
	var lh LocksHealth
	asked := time.Now()
	code, body = e.get("/health/locks", &lh)
	require.Equal(t, http.StatusOK, code, body)
	require.NotNil(t, lh.LockStats, body)
	require.Zero(t, lh.HeldLocks, "the scrape's read, younger than statsMaxAge")
	require.Zero(t, lh.Waiters)

	require.Regexp(t, `"counted_at":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z","age_seconds":\d+(\.\d+)?,`, body)
	require.Equal(t, time.UTC, lh.CountedAt.Location())
	require.False(t, lh.CountedAt.Before(before), "counted_at %s, scrape from %s", lh.CountedAt, before)
	require.False(t, lh.CountedAt.After(scraped), "counted_at %s, scrape answered at %s", lh.CountedAt, scraped)
	require.NotNil(t, lh.AgeSeconds, body)
	require.GreaterOrEqual(t, *lh.AgeSeconds, asked.Sub(scraped).Seconds()-0.001, "as old as the scrape's read")
	require.Less(t, *lh.AgeSeconds, time.Since(before).Seconds()+0.001)
}

// TestDatabaseReadsAreBounded: however many requests come at once, to
// every endpoint that reads PostgreSQL, /metrics's two reads included, the
// HTTP side reads on at most httpConns of the worker's pool (half of it),
// so the HTTP port cannot take the connections the worker's batches need,
// in a small pool too. The tables they read are locked meanwhile, so each
// read holds its connection, waiting, until the test lets them go.
func TestDatabaseReadsAreBounded(t *testing.T) {
	for _, maxConns := range []int32{1, 4, 8} {
		t.Run(fmt.Sprint(maxConns), func(t *testing.T) {
			e := newEnvPool(t, nil, maxConns, func(c *Config) { c.CheckTimeout = time.Minute })
			ctx := context.Background()
			tx, err := e.st.Pool.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, `LOCK TABLE locks, lock_holders, lock_waiters, sessions, outbox, consumer_offsets IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
			waiting := func() int {
				var n int
				require.NoError(t, e.st.Pool.QueryRow(ctx, `SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted
					AND relation = ANY (ARRAY['locks', 'lock_holders', 'lock_waiters', 'sessions', 'outbox', 'consumer_offsets']::regclass[])`).Scan(&n))
				return n
			}
			paths := []string{"/locks/x", "/health/postgres", "/health/locks", "/health", "/metrics", "/sessions/x"}
			var wg sync.WaitGroup
			for i := range 18 {
				wg.Go(func() {
					path := paths[i%len(paths)]
					code, body := e.get(path, nil)
					require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, code, "%s answers once the tables are free: %s", path, body)
				})
			}
			want := httpConns(maxConns)
			require.Eventually(t, func() bool { return waiting() >= want }, 30*time.Second, 10*time.Millisecond,
				"the reads fill the HTTP side's slots")
			for range 20 {
				require.LessOrEqual(t, waiting(), want, "no read beyond them")
				time.Sleep(10 * time.Millisecond)
			}
			require.NoError(t, tx.Rollback(ctx))
			wg.Wait()
		})
	}
}

// TestLagKafkaHoldsNoSlot: a scrape's consumer lag holds one of the HTTP
// side's slots of the pool for its read of the stored offsets only, not
// while it waits for Kafka: in a pool of two (one slot), a scrape whose
// Kafka round trips hang keeps neither /health nor the other endpoints
// waiting for PostgreSQL.
func TestLagKafkaHoldsNoSlot(t *testing.T) {
	e := newEnvPool(t, nil, 2, func(c *Config) { c.CheckTimeout = 20 * time.Second })
	require.Equal(t, 1, httpConns(2))
	release, waiting := make(chan struct{}), make(chan struct{})
	var once sync.Once
	kafka := func(ctx context.Context) error {
		once.Do(func() { close(waiting) })
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	e.lagKafka.Store(&kafka)
	scraped := make(chan int, 1)
	go func() { code, _ := e.get("/metrics", nil); scraped <- code }()
	<-waiting
	for _, path := range []string{"/health/postgres", "/health", "/locks/x", "/health/locks"} {
		start := time.Now()
		code, body := e.get(path, nil)
		require.Contains(t, []int{http.StatusOK, http.StatusNotFound}, code, "%s: %s", path, body)
		require.Less(t, time.Since(start), 5*time.Second, "%s waited for the lag's Kafka round trips", path)
	}
	close(release)
	require.Equal(t, http.StatusOK, <-scraped)
}

// The HTTP side's share of a pool of any size: at most half of it, its
// endpoints' reads at most a quarter, one connection at least, and, from
// four connections on, one left for /health's own read; from the default
// 10 on, as many as its reads can use (none waits for another).
func TestDBSlotsShareOfThePool(t *testing.T) {
	for n := int32(1); n <= 1000; n++ {
		all, requests := httpConns(n), requestConns(n)
		require.LessOrEqual(t, all, max(1, int(n)/2), n)
		require.LessOrEqual(t, requests, max(1, int(n)/4), n)
		require.GreaterOrEqual(t, requests, 1, n)
		if n >= 4 {
			require.Less(t, requests, all, n)
		}
		if n >= 10 {
			require.Equal(t, maxRequestConns+1+2, all, n)
			require.Equal(t, maxRequestConns, requests, n)
		}
	}
}

// TestHealthHasItsOwnSlot: inspection requests holding every slot of the
// endpoints (each waiting for a table the test locks) do not keep /health,
// the readiness probe, waiting: it reads on a slot of its own, in a pool of
// four connections too (one slot each, of the HTTP side's two).
func TestHealthHasItsOwnSlot(t *testing.T) {
	for _, maxConns := range []int32{4, 8} {
		t.Run(fmt.Sprint(maxConns), func(t *testing.T) {
			// Checks long enough that the holders keep their slots until the
			// test lets the table go.
			e := newEnvPool(t, nil, maxConns, func(c *Config) { c.CheckTimeout = time.Minute })
			ctx := context.Background()
			tx, err := e.st.Pool.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			_, err = tx.Exec(ctx, `LOCK TABLE locks IN ACCESS EXCLUSIVE MODE`)
			require.NoError(t, err)
			codes := make([]int, cap(e.slots.requests))
			var holders sync.WaitGroup
			for i := range codes {
				holders.Go(func() { codes[i], _ = e.get("/locks/x", nil) })
			}
			require.Eventually(t, func() bool {
				var waiting int
				err := e.st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
					WHERE relation = 'locks'::regclass AND mode = 'AccessShareLock' AND NOT granted`).Scan(&waiting)
				return err == nil && waiting == len(codes)
			}, 30*time.Second, 10*time.Millisecond, "the inspection requests wait for the table, holding the endpoints' slots")

			// Waiting for an endpoints' slot, /health would wait out its
			// check and fail it.
			var h Health
			code, body := e.get("/health", &h)
			require.Equal(t, http.StatusOK, code, body)
			require.Equal(t, "ok", h.Checks["postgres"].Status)

			require.NoError(t, tx.Rollback(ctx))
			holders.Wait()
			for _, code := range codes {
				require.Equal(t, http.StatusNotFound, code, "the holders answer once the table is free")
			}
		})
	}
}

// A read beyond the slots waits for one, and gives up with its context
// without reading. (Which requests of a burst wait depends on when each
// started: here the slots are held for as long as the test likes.)
func TestWithDBWaitsForASlot(t *testing.T) {
	slots := make(chan struct{}, maxRequestConns)
	release := make(chan struct{})
	var holding sync.WaitGroup
	for range maxRequestConns {
		holding.Add(1)
		go func() {
			_ = hold(context.Background(), slots, nil, func(context.Context) error { holding.Done(); <-release; return nil })
		}()
	}
	holding.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := hold(ctx, slots, nil, func(context.Context) error { t.Error("read without a slot"); return nil })
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for a turn to read PostgreSQL behind other HTTP requests")
	// /health's own slot, or a shared one when its own is taken.
	own := make(chan struct{}, 1)
	own <- struct{}{}
	free := make(chan struct{}, 1)
	require.NoError(t, hold(context.Background(), own, free, func(context.Context) error { return nil }), "the other slot")
	close(release)
	require.NoError(t, hold(context.Background(), slots, nil, func(context.Context) error { return nil }), "a slot once they are done")
}

// TestKafkaPingsAreShared: a burst of /health and /health/kafka requests
// sends the brokers one ping, whose answer they share, not one each.
func TestKafkaPingsAreShared(t *testing.T) {
	e := newEnv(t, nil)
	var pings atomic.Int32
	e.kafka.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.kafka.KeepControl()
		pings.Add(1)
		// Long enough for the whole burst to ask while it is under way: a
		// third ping needs the burst spread over more than two of these.
		time.Sleep(time.Second)
		return nil, nil, false
	})
	const burst = 8
	codes := make(chan int, burst)
	var wg sync.WaitGroup
	for i := range burst {
		path := "/health/kafka"
		if i%2 == 0 {
			path = "/health"
		}
		wg.Go(func() {
			resp, err := http.Get(e.srv.URL + path)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		require.Equal(t, http.StatusOK, code)
	}
	require.LessOrEqual(t, pings.Load(), int32(2), "one ping for the burst (two if a request came late)")
}
