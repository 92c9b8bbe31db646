package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// startMain runs the real wiring with the embedded broker and HTTP on a free
// port, stopped (drained) when the test ends.
func startMain(t *testing.T, dbURL string) *Main {
	m, _ := start(t, dbURL, freeAddr(t), t.TempDir())
	return m
}

// testingT is a *testing.T or, inside an EventuallyWithT condition, its
// *assert.CollectT: a failed assertion there fails the attempt, which is
// retried, where a *testing.T's would end the condition's goroutine and
// leave Eventually to wait out its whole window.
type testingT interface {
	require.TestingT
	Helper()
}

// get fetches a path of m's HTTP server, decoding a JSON answer into v when
// v is not nil, and returns the status code and body.
func get(t testingT, m *Main, path string, v any) (int, string) {
	t.Helper()
	cl := http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get("http://" + m.HTTPAddr + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if v != nil {
		require.NoError(t, json.Unmarshal(body, v), "%s answered %s", path, body)
	}
	return resp.StatusCode, string(body)
}

// scrape reads /metrics.
func scrape(t testingT, m *Main) map[string]*dto.MetricFamily {
	t.Helper()
	code, body := get(t, m, "/metrics", nil)
	require.Equal(t, http.StatusOK, code, body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	require.NoError(t, err)
	return fams
}

// values flattens counters and gauges to "name{k=v,...}" -> value, and
// histograms to their sample count under "name_count{...}".
func values(fams map[string]*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for name, f := range fams {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			key := "{" + strings.Join(labels, ",") + "}"
			switch {
			case s.Counter != nil:
				out[name+key] = s.GetCounter().GetValue()
			case s.Gauge != nil:
				out[name+key] = s.GetGauge().GetValue()
			case s.Histogram != nil:
				out[name+"_count"+key] = float64(s.GetHistogram().GetSampleCount())
				out[name+"_sum"+key] = s.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// subset reports which of want differ in got.
func subset(want, got map[string]float64) string {
	var diff []string
	for k, v := range want {
		if got[k] != v {
			diff = append(diff, fmt.Sprintf("%s = %v, want %v", k, got[k], v))
		}
	}
	return strings.Join(diff, "; ")
}

// TestMetricsAfterTraffic drives every operation through the real service
// and finds each counter moved by exactly what the traffic caused; on the
// way, /locks/{name} shows what the database holds.
func TestMetricsAfterTraffic(t *testing.T) {
	sch := testdb.NewSchema(t)
	m := startMain(t, sch.URL)
	broker := m.Brokers[0]
	a := newClient(t, broker, "locks.replies.a")
	b := newClient(t, broker, "locks.replies.b")
	c := newClient(t, broker, "locks.replies.c")
	d := newClient(t, broker, "locks.replies.d")

	a.send(topics.Command{RequestID: "r1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	held := a.await("r1", topics.TypeAcquired)
	b.send(topics.Command{RequestID: "r2", Operation: "acquire", LockName: "job", OwnerID: "b", WaitTimeout: 60})
	b.await("r2", topics.TypeQueued)
	d.send(topics.Command{RequestID: "r3", Operation: "acquire", LockName: "job", OwnerID: "d", WaitTimeout: 60, LeaseDuration: 5})
	d.await("r3", topics.TypeQueued)
	c.send(topics.Command{RequestID: "r4", Operation: "acquire", LockName: "job", OwnerID: "c"})
	require.Equal(t, topics.CodeLockHeld, c.await("r4", topics.TypeRejected).ErrorCode)

	checkLockPage(t, m, sch.URL, "", "job", "a", held.LockInfo.FencingToken, []string{"b", "d"})

	a.send(topics.Command{RequestID: "r5", Operation: "extend", LockName: "job", OwnerID: "a"})
	a.await("r5", topics.TypeExtended)
	a.send(topics.Command{RequestID: "r6", Operation: "query", LockName: "job"})
	a.await("r6", topics.TypeStatus)
	a.send(topics.Command{RequestID: "r7", Operation: "release", LockName: "job", OwnerID: "a"})
	a.await("r7", topics.TypeReleased)
	b.await("r2", topics.TypeAcquired) // hand-off 1
	c.send(topics.Command{RequestID: "r8", Operation: "release", LockName: "job", OwnerID: "c"})
	require.Equal(t, topics.CodeNotOwner, c.await("r8", topics.TypeRejected).ErrorCode)
	b.send(topics.Command{RequestID: "r9", Operation: "release", LockName: "job", OwnerID: "b"})
	b.await("r9", topics.TypeReleased)
	d.await("r3", topics.TypeAcquired) // hand-off 2
	d.send(topics.Command{RequestID: "r10", Operation: "release", LockName: "job", OwnerID: "d"})
	d.await("r10", topics.TypeReleased)

	require.NoError(t, a.cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte("job"), Value: []byte("not json")}).FirstErr())
	a.send(topics.Command{RequestID: "r11", Operation: "acquire", LockName: "short", OwnerID: "a", LeaseDuration: 0.2})
	a.await("r11", topics.TypeAcquired)
	a.await("", topics.TypeExpired) // ended by the expiry scheduler
	maxAge := 0.0
	a.send(topics.Command{RequestID: "r12", Operation: "cleanup", LockName: "*", MaxAgeSeconds: &maxAge})
	a.await("r12", topics.TypeCleaned)

	want := map[string]float64{
		`lockworker_commands_total{operation=acquire,result=ok}`:            2,
		`lockworker_commands_total{operation=acquire,result=queued}`:        2,
		`lockworker_commands_total{operation=acquire,result=LOCK_HELD}`:     1,
		`lockworker_commands_total{operation=extend,result=ok}`:             1,
		`lockworker_commands_total{operation=query,result=ok}`:              1,
		`lockworker_commands_total{operation=release,result=ok}`:            3,
		`lockworker_commands_total{operation=release,result=NOT_OWNER}`:     1,
		`lockworker_commands_total{operation=cleanup,result=ok}`:            1,
		`lockworker_commands_total{operation=other,result=INVALID_REQUEST}`: 1,
		`lockworker_command_duration_seconds_count{operation=acquire}`:      5,
		`lockworker_command_duration_seconds_count{operation=release}`:      4,
		`lockworker_batch_records_sum{}`:                                    13,
		`lockworker_dead_lettered_total{reason=INVALID_REQUEST}`:            1,
		`lockworker_handoffs_total{}`:                                       2,
		`lockworker_lock_hold_seconds_count{}`:                              4, // the scheduler's expiry included
		`lockworker_lock_wait_seconds_count{}`:                              2,
		`lockworker_expiries_total{by=scheduler}`:                           1,
		`lockworker_locks_held{}`:                                           0,
		`lockworker_lock_waiters{}`:                                         0,
		`lockworker_outbox_backlog{}`:                                       0,
		`lockworker_consumer_lag{partition=0}`:                              0,
		`lockworker_consumer_lag{partition=15}`:                             0,
		`lockworker_commands_undecided{partition=0}`:                        0,
		`lockworker_commands_undecided{partition=15}`:                       0,
	}
	var got map[string]float64
	// The database gauges (locks_held, lock_waiters, outbox_backlog) may be
	// up to 10 s old: the window allows that on top of the traffic settling.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got = values(scrape(c, m))
		assert.Empty(c, subset(want, got), "metrics")
	}, 40*time.Second, 50*time.Millisecond)
	require.Positive(t, got[`lockworker_outbox_published_total{}`])
	require.Positive(t, got[`lockworker_outbox_publish_latency_seconds_count{}`])
	// Every command series that moved is one of those above.
	for k, v := range got {
		if strings.HasPrefix(k, "lockworker_commands_total{") {
			require.Contains(t, want, k, "unexpected series %s = %v", k, v)
		}
	}

	var s metrics.Summary
	code, body := get(t, m, "/health/metrics", &s)
	require.Equal(t, http.StatusOK, code, body)
	require.Positive(t, s.AvgAcquireTimeMS)
	require.Positive(t, s.AvgReleaseTimeMS)
	s.AvgAcquireTimeMS, s.AvgReleaseTimeMS = 0, 0
	require.Equal(t, metrics.Summary{TotalAcquires: 5, TotalReleases: 4, TotalExtends: 1, TotalQueries: 1, TotalCleanups: 1,
		FailedAcquires: 1, SuccessRate: 0.8}, s)
	for _, field := range []string{"total_acquires", "total_releases", "total_extends", "total_queries", "total_cleanups",
		"failed_acquires", "success_rate", "avg_acquire_time_ms", "avg_release_time_ms"} {
		require.Contains(t, body, `"`+field+`":`)
	}

	var lh httpapi.LocksHealth
	code, body = get(t, m, "/health/locks", &lh)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "ok", lh.Status)
	require.Zero(t, lh.HeldLocks)
	require.Zero(t, lh.Waiters)

	// The cleanup removed every row: the lock is gone.
	code, _ = get(t, m, "/locks/job", nil)
	require.Equal(t, http.StatusNotFound, code)
}

// checkLockPage compares /locks/{name} with the lock_holders and lock_waiters rows.
func checkLockPage(t *testing.T, m *Main, dbURL, ns, name, holder string, token int64, queue []string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var owner string
	var dbToken int64
	var expires time.Time
	require.NoError(t, conn.QueryRow(ctx, `SELECT owner_id, fencing_token, expires_at FROM lock_holders WHERE namespace = $1 AND lock_name = $2`,
		ns, name).Scan(&owner, &dbToken, &expires))
	rows, err := conn.Query(ctx, `SELECT owner_id, request_id, deadline FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 ORDER BY id`, ns, name)
	require.NoError(t, err)
	type w struct {
		owner, request string
		deadline       time.Time
	}
	dbQueue, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (w, error) {
		var x w
		return x, r.Scan(&x.owner, &x.request, &x.deadline)
	})
	require.NoError(t, err)

	var v httpapi.LockView
	code, body := get(t, m, "/locks/"+url.PathEscape(name)+"?namespace="+url.QueryEscape(ns), &v)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, holder, owner)
	require.Equal(t, owner, v.LockInfo.OwnerID)
	require.Equal(t, token, dbToken)
	require.Equal(t, dbToken, v.LockInfo.FencingToken)
	require.Equal(t, topics.StatusAcquired, v.LockInfo.Status)
	require.True(t, expires.Equal(v.LockInfo.ExpiresAt.Time), "expires_at %s, database %s", v.LockInfo.ExpiresAt, expires)
	require.NotNil(t, v.ExpiresInSeconds)
	require.InDelta(t, time.Until(expires).Seconds(), *v.ExpiresInSeconds, 5)
	require.True(t, v.Redacted)
	require.Equal(t, len(queue), v.QueueLength)
	require.Len(t, dbQueue, len(queue))
	require.Len(t, v.Queue, len(queue))
	for i, q := range v.Queue {
		require.Equal(t, i+1, q.Position)
		require.Equal(t, queue[i], q.OwnerID)
		require.Equal(t, dbQueue[i].owner, q.OwnerID)
		require.NotEmpty(t, dbQueue[i].request)
		require.Empty(t, q.RequestID, "without an INSPECT_TOKEN request_ids are left out")
		require.True(t, dbQueue[i].deadline.Equal(q.Deadline.Time))
	}
}

// TestHealthFollowsPostgres: with the worker's PostgreSQL behind a proxy,
// /health answers 503 (quickly) once the proxy cuts it off, 200 again when
// it is back, and the worker goes on applying commands.
func TestHealthFollowsPostgres(t *testing.T) {
	sch := testdb.NewSchema(t)
	dbURL, proxy := testdb.Proxied(t, sch.URL)
	m := startMain(t, dbURL)
	a := newClient(t, m.Brokers[0], "locks.replies.a")

	var code int
	var h httpapi.Health
	// awaitHealth reads /health until cond passes. An answer slower than its
	// check timeout fails the test, not only the attempt: checked on t after
	// the wait, as an attempt may still run when the window ends, and must
	// not touch t once the test may have ended.
	awaitHealth := func(cond func(c *assert.CollectT)) {
		t.Helper()
		var slowest time.Duration
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			h = httpapi.Health{}
			start := time.Now()
			code, _ = get(c, m, "/health", &h)
			slowest = max(slowest, time.Since(start))
			cond(c)
		}, 20*time.Second, 50*time.Millisecond)
		require.Less(t, slowest, 5*time.Second, "/health must answer within its check timeout")
	}
	// Ready comes before the group assigned the partitions.
	awaitHealth(func(c *assert.CollectT) { assert.Len(c, h.Partitions, 16) })
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok", h.Status)
	require.True(t, h.Ready)
	require.Equal(t, "ok", h.Checks["postgres"].Status)
	require.Equal(t, "ok", h.Checks["kafka"].Status)

	proxy.Cut()
	awaitHealth(func(c *assert.CollectT) { assert.Equal(c, http.StatusServiceUnavailable, code) })
	require.Equal(t, "unavailable", h.Status)
	require.True(t, h.Live)
	require.False(t, h.Ready)
	require.Equal(t, "unavailable", h.Checks["postgres"].Status)
	require.NotEmpty(t, h.Checks["postgres"].Error)
	require.Equal(t, "ok", h.Checks["kafka"].Status)
	code, _ = get(t, m, "/health/postgres", nil)
	require.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = get(t, m, "/health/locks", nil)
	require.Equal(t, http.StatusServiceUnavailable, code)
	// A command sent during the outage is applied once the database is back.
	a.send(topics.Command{RequestID: "during", Operation: "acquire", LockName: "job", OwnerID: "a"})

	proxy.Restore()
	awaitHealth(func(c *assert.CollectT) { assert.Equal(c, http.StatusOK, code) })
	require.Equal(t, "ok", h.Checks["postgres"].Status)
	a.await("during", topics.TypeAcquired)
}

// A replica answers its liveness probe from its first moment, and /health
// says what it waits for until it serves, so a long migration or a slow
// broker at start is not mistaken for a hung process.
func TestHealthWhileStarting(t *testing.T) {
	kafka, external := externalKafka(t)
	_, release := kafkatest.HoldFirst(kafka, kmsg.CreateTopics)
	m, run, _ := launch(t, testdb.NewSchema(t).URL, external)
	run.await(t, m.Serving)

	var h httpapi.Health
	// Any answer but 503 while starting fails the test, not only the
	// attempt: kept, and checked on t after the wait, as an attempt may
	// still run when the window ends, and must not touch t once the test
	// may have ended.
	var others []int
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, _ := get(c, m, "/health", &h)
		if code != http.StatusServiceUnavailable {
			others = append(others, code)
		}
		assert.Equal(c, "checking the Kafka topics", h.Step)
	}, 30*time.Second, 10*time.Millisecond)
	require.Empty(t, others, "/health answered other than 503 while starting")
	require.Equal(t, "starting", h.Status)
	require.True(t, h.Live)
	require.False(t, h.Ready)
	var live httpapi.Live
	code, _ := get(t, m, "/health/live", &live)
	require.Equal(t, http.StatusOK, code)
	require.True(t, live.Live)
	code, body := get(t, m, "/locks/a", nil)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Contains(t, body, "starting: checking the Kafka topics")

	release()
	run.await(t, m.Ready)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		h = httpapi.Health{}
		code, _ := get(c, m, "/health", &h)
		assert.Equal(c, http.StatusOK, code)
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, "ok", h.Status)
	require.Empty(t, h.Step)
}

// A request that declares a body and never sends it does not hold its
// connection: net/http reads the body before answering, and the server
// gives up at HTTPReadTimeout, answers and closes.
func TestHTTPBodyNeverSent(t *testing.T) {
	m := NewMain()
	m.Logger = zerolog.Nop()
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.HTTPReadTimeout = 500 * time.Millisecond
	require.NoError(t, m.listenHTTP())
	t.Cleanup(m.Close)

	conn, err := net.Dial("tcp", m.HTTPAddr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /health/live HTTP/1.1\r\nHost: lockworker\r\nContent-Length: 10\r\n\r\n")
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second))) // far past the server's bound
	answer, err := io.ReadAll(conn)
	require.NoError(t, err, "the server closes the connection; it answered %q", answer)
	require.Contains(t, string(answer), "HTTP/1.1 200 OK\r\n")
	require.Contains(t, string(answer), "\r\nConnection: close\r\n")

	code, body := get(t, m, "/health/live", nil)
	require.Equal(t, http.StatusOK, code, "a request without a body is served as before: %s", body)
}
