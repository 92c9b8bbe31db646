package worker_test

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

type idleRelay struct{}

// idleWorker makes a worker on c with cfg, c's brokers before its Kafka
// options, an idle relay and (unless cfg has one) a store of its own filled
// in, closed when the test ends; it is not run.
func idleWorker(t *testing.T, c *kfake.Cluster, cfg worker.Config) *worker.Worker {
	t.Helper()
	cfg.KafkaOpts = append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, cfg.KafkaOpts...)
	cfg.Relay = idleRelay{}
	if cfg.Store == nil {
		cfg.Store = testdb.New(t)
	}
	w, err := worker.New(cfg)
	require.NoError(t, err)
	t.Cleanup(w.Close)
	return w
}

func (idleRelay) RunHeld(ctx context.Context, _ int32, _ func(context.Context) error) error {
	<-ctx.Done()
	return nil
}
func (idleRelay) Reserve(int32) *outbox.Slot { return nil }

// maintainers counts the goroutines in a worker's periodic maintenance.
func maintainers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "worker.(*Worker).maintain(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

// Run that stops on its own, with its context still live (the broker
// refused the session timeout), stops the periodic cleanup and pruning
// before it returns: they would otherwise go on after Close, against a
// pool the caller closes.
func TestRunStopsMaintenanceWhenItReturns(t *testing.T) {
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(16, names.Commands),
		kfake.GroupMinSessionTimeout(10*time.Second))
	st := testdb.New(t)
	w := idleWorker(t, c, worker.Config{Names: names, Store: st, SessionTimeout: time.Second})

	before := maintainers()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.ErrorIs(t, w.Run(ctx), worker.ErrSessionTimeout)
	require.NoError(t, ctx.Err(), "Run stopped on its own")
	require.Equal(t, before, maintainers(), "the maintenance Run started has returned with it")
}

// Kafka refusing the replica its consumer group stops Run with
// ErrNotAuthorized: retrying cannot help, and a replica that cannot consume
// must not look healthy.
func TestRunStopsWhenTheGroupIsRefused(t *testing.T) {
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(16, names.Commands))
	c.ControlKey(int16(kmsg.JoinGroup), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := kr.(*kmsg.JoinGroupRequest).ResponseKind().(*kmsg.JoinGroupResponse)
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil, true
	})
	w := idleWorker(t, c, worker.Config{Names: names})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := w.Run(ctx)
	require.ErrorIs(t, err, worker.ErrNotAuthorized)
	require.ErrorIs(t, err, kerr.GroupAuthorizationFailed)
	require.NoError(t, ctx.Err(), "Run stopped on its own")
}

// A replica joins its consumer group in Run, not in New: one still starting
// (topics checked, first states published, HTTP served) would otherwise be
// given partitions it leaves idle until it runs.
func TestGroupJoinedInRun(t *testing.T) {
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(16, names.Commands))
	joins := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.JoinGroup}, Observe: true, Count: -1})
	w := idleWorker(t, c, worker.Config{Names: names})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Its requests follow the client's first metadata, which a client
	// consuming the topic joins with.
	require.NoError(t, w.EnsureTopics(ctx))
	require.Never(t, func() bool { return joins.Hits() > 0 }, time.Second, 10*time.Millisecond, "joined before Run")

	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	require.NoError(t, joins.Wait(ctx, 1), "Run joins the group")
	require.Eventually(t, func() bool { return len(w.Partitions()) == 16 }, 30*time.Second, 10*time.Millisecond, "Run consumes its partitions")
	stop()
	require.NoError(t, <-ran)
}
