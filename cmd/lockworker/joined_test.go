package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// joiningStep is /health's step while the worker joins its group.
const joiningStep = "joining the consumer group"

// A replica whose consumer group Kafka refuses never answers 200 on
// /health: not while it waits for the answer to its join (it says it is
// starting, joining the group), nor once worker.Run has failed and the
// replica drains and closes (draining). With the Kubernetes Deployment's
// readiness probe on /health, one 200 would count the pod ready and let the
// rollout remove a working replica.
func TestHealthNeverReadyWhenTheGroupIsRefused(t *testing.T) {
	kafka, external := externalKafka(t)
	// The first JoinGroup is held until the test has read /health, then
	// refused, as every later one.
	held, release := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	kafka.ControlKey(int16(kmsg.JoinGroup), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		kafka.KeepControl()
		if first.CompareAndSwap(false, true) {
			close(held)
			kafka.SleepControl(func() { <-release })
		}
		resp := kr.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil, true
	})
	var releaseOnce sync.Once
	unhold := func() { releaseOnce.Do(func() { close(release) }) }

	m, run, ctx := launchFailing(t, testdb.NewSchema(t).URL, external)
	// Before launchFailing's stop, which would wait out the held join.
	t.Cleanup(unhold)
	run.await(t, m.Serving)

	ready := pollReady(t, m)
	select {
	case <-held:
	case <-run.done:
		t.Fatalf("Run returned before it joined the group: %v", run.err)
	case <-time.After(runWait):
		t.Fatalf("no JoinGroup in %s", runWait)
	}
	var h httpapi.Health
	code, body := get(t, m, "/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code, "/health while the join is unanswered: %s", body)
	require.Equal(t, "starting", h.Status, body)
	require.Equal(t, joiningStep, h.Step, body)
	require.False(t, h.Ready)
	require.True(t, h.Live)
	code, body = get(t, m, "/health/live", nil)
	require.Equal(t, http.StatusOK, code, body)

	unhold()
	awaitFailed(t, m, run, ctx)
	require.Empty(t, ready(), "/health answered 200 in a replica whose group was refused")
}

// A replica that joined, and is ready, answers 503 "draining" on /health
// from the moment worker.Run fails (here Kafka refuses it the commands
// topic at a fetch), not only once a signal asked it to stop: through the
// drain and until Close stops the HTTP server.
func TestHealthDrainingOnceRunFails(t *testing.T) {
	kafka, external := externalKafka(t)
	m, run, ctx := launchFailing(t, testdb.NewSchema(t).URL, external)
	run.await(t, m.Ready)
	awaitReady(t, m)
	require.EventuallyWithT(t, func(c *assert.CollectT) { assert.NotEmpty(c, owned(c, m)[0]) }, runWait, 20*time.Millisecond,
		"it owns partitions, so it fetches")

	kafka.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: -1}) // as a broker without Read on the topic
	awaitFailed(t, m, run, ctx)
}

// launchFailing starts the real wiring as launch does, for a Run expected
// to fail: stopped and closed when the test ends, whatever Run returned.
func launchFailing(t *testing.T, dbURL string, configure func(*config.Config)) (*Main, *running, context.Context) {
	m := NewMain()
	m.Logger = zerolog.Nop()
	m.Config.Postgres.URL = dbURL
	m.Config.InstanceID = "e2e"
	m.Config.HTTPAddr = "127.0.0.1:0"
	configure(&m.Config)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	run := &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	t.Cleanup(func() { cancel(); <-run.done; m.Close() })
	return m, run, ctx
}

// awaitFailed waits until Run returns worker.ErrNotAuthorized on its own
// (ctx, Run's, not done), and checks that /health says draining then,
// Close not called yet.
func awaitFailed(t *testing.T, m *Main, run *running, ctx context.Context) {
	t.Helper()
	select {
	case <-run.done:
	case <-time.After(runWait):
		t.Fatalf("Run did not stop in %s once Kafka refused it", runWait)
	}
	require.ErrorIs(t, run.err, worker.ErrNotAuthorized)
	require.NoError(t, ctx.Err(), "Run stopped on its own, no signal")
	// Run has returned; Close has not run: the HTTP server still serves.
	var h httpapi.Health
	code, body := get(t, m, "/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code, "/health once Run failed, before Close: %s", body)
	require.Equal(t, "draining", h.Status, body)
	require.False(t, h.Ready)
}

// A replica answers 200 on /health once its worker has completed a join of
// the group, not before (here its first SyncGroup or KIP-848 heartbeat is
// held: it says it is joining the group); a second replica, which the
// group's single partition leaves with none, is ready as well, also after
// its start read lock.acquired.
func TestHealthReadyOnceJoined(t *testing.T) {
	for _, protocol := range []string{config.GroupProtocolClassic, config.GroupProtocolConsumer} {
		t.Run(protocol, func(t *testing.T) { healthReadyOnceJoined(t, protocol) })
	}
}

func healthReadyOnceJoined(t *testing.T, protocol string) {
	names := topics.DefaultNames()
	kafka := kafkatest.Cluster(t, kfake.SeedTopics(1, names.Commands),
		kfake.GroupMinSessionTimeout(time.Second),
		kfake.BrokerConfigs(map[string]string{"group.consumer.heartbeat.interval.ms": "100"}))
	joinKey := kmsg.SyncGroup // the classic join's last step
	if protocol == config.GroupProtocolConsumer {
		joinKey = kmsg.ConsumerGroupHeartbeat // the join itself
	}
	held, release := kafkatest.HoldFirst(kafka, joinKey)
	url := testdb.NewSchema(t).URL
	replica := func(name string) func(*config.Config) {
		return func(c *config.Config) {
			replicaOn(name, protocol, kafka.ListenAddrs())(c)
			c.Topics.CommandsPartitions = 1
		}
	}

	a, run, _ := launch(t, url, replica("a"))
	t.Cleanup(release) // before a's stop, which would wait out the held join
	run.await(t, a.Serving)
	ready := pollReady(t, a)
	run.await(t, held)
	var h httpapi.Health
	code, body := get(t, a, "/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code, "/health while the join is held: %s", body)
	require.Equal(t, "starting", h.Status, body)
	require.Equal(t, joiningStep, h.Step, body)
	require.Empty(t, ready(), "/health answered 200 before the worker joined its group")

	release()
	awaitReady(t, a)
	// A grant on lock.acquired first: b's start reads it with a client of
	// its own (the token floor check), which a readiness judged on the
	// options' clients once took for the worker's.
	c := newClient(t, kafka.ListenAddrs()[0], "locks.replies.ready")
	c.send(topics.Command{RequestID: "g1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	c.await("g1", topics.TypeAcquired)
	b, _ := startWith(t, url, replica("b"))
	awaitReady(t, b)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		all := owned(c, a, b)
		assert.ElementsMatch(c, [][]int32{{0}, {}}, all, "one replica owns the partition, the other none")
		for i, m := range []*Main{a, b} {
			h := httpapi.Health{}
			code, body := get(c, m, "/health", &h)
			assert.Equal(c, http.StatusOK, code, "replica %d (partitions %v): %s", i, all[i], body)
			assert.True(c, h.Ready)
		}
	}, 30*time.Second, 50*time.Millisecond)
}

// awaitReady waits until m's /health answers 200 "ok".
func awaitReady(t *testing.T, m *Main) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		h := httpapi.Health{}
		code, body := get(c, m, "/health", &h)
		assert.Equal(c, http.StatusOK, code, body)
		assert.Equal(c, "ok", h.Status, body)
		assert.Empty(c, h.Step)
	}, runWait, 20*time.Millisecond)
}

// pollReady reads m's /health every few milliseconds until the test ends
// or the function it returns is called, which returns the answers that
// said ready (200) so far, and stops the polling.
func pollReady(t *testing.T, m *Main) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var oks []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		cl := http.Client{Timeout: 5 * time.Second}
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.HTTPAddr+"/health", nil)
			if resp, err := cl.Do(req); err == nil {
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				var h httpapi.Health
				if resp.StatusCode != http.StatusServiceUnavailable || json.Unmarshal(body, &h) != nil || h.Ready {
					mu.Lock()
					oks = append(oks, fmt.Sprintf("%d %s", resp.StatusCode, body))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	stop := func() []string {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(oks)
	}
	t.Cleanup(func() { stop() })
	return stop
}
