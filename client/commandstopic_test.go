package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
)

// A client made before the commands topic was deleted and created again
// (a broker back without its data) sends to the new topic: kgo's producer
// fails the old topic's ID (UNKNOWN_TOPIC_ID) until the topic is purged
// from it. Commands sent at once after the recreation are all answered:
// the first to fail purges the topic, which fails the others' records
// buffered for it, and each is sent again with its request_id.
func TestCommandsFollowTheCommandsTopicCreatedAgain(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: "first"})
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: uniq("recreated-commands")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	// The producer learns the topic's ID.
	held, err := c.TryAcquire(ctx, uniq("recreated-commands"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
	require.NoError(t, err)

	recreateTopic(ctx, t, e, w, e.Names.Commands)

	// Within ReplyTimeout: answered by the resend after the purge, not by
	// one a ReplyTimeout later.
	ctx, cancel := context.WithTimeout(ctx, client.DefaultReplyTimeout)
	defer cancel()
	requireAllAcquire(ctx, t, []*client.Client{c}, 4, func() error { return held.Extend(ctx, time.Minute) })
}

// Clients sharing one Config.Client purge the recreated commands topic
// from it once between them: a second purge would fail the records the
// first one's callers sent again ("topic purged while buffered"), or, were
// they written already, restart the idempotent producer's sequence numbers
// on the new topic.
func TestCommandsTopicCreatedAgainPurgedOnceFromASharedClient(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: "first"})
	prod, err := kgo.NewClient(kgo.SeedBrokers(e.Brokers...), kgo.MetadataMinAge(time.Second),
		kgo.RetryBackoffFn(func(int) time.Duration { return 100 * time.Millisecond }))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	cs := make([]*client.Client, 8)
	for i := range cs {
		c, err := client.New(ctx, client.Config{Client: prod, Requester: uniq("shared-purge")})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		cs[i] = c
	}
	// The producer learns the topic's ID.
	requireAllAcquire(ctx, t, cs[:1], 1)

	recreateTopic(ctx, t, e, w, e.Names.Commands)

	ctx, cancel := context.WithTimeout(ctx, client.DefaultReplyTimeout)
	defer cancel()
	requireAllAcquire(ctx, t, cs, 4)
}

// recreateTopic stops w, deletes topic and creates it again with as many
// partitions, empty, then starts another worker, which it returns.
func recreateTopic(ctx context.Context, t *testing.T, e *e2e.Env, w *e2e.Worker, topic string) *e2e.Worker {
	t.Helper()
	adm := kadm.NewClient(e.Producer())
	details, err := adm.ListTopics(ctx, topic)
	require.NoError(t, err)
	n := int32(len(details[topic].Partitions))
	w.Stop()
	_, err = adm.DeleteTopics(ctx, topic)
	require.NoError(t, err)
	created, err := adm.CreateTopic(ctx, n, 1, nil, topic)
	require.NoError(t, err)
	require.NoError(t, created.Err)
	return e.StartWorker(e2e.WorkerOpts{Name: "second"})
}

// requireAllAcquire has each client acquire and release `each` locks, and
// runs also, all at once, and requires that none fails.
func requireAllAcquire(ctx context.Context, t *testing.T, cs []*client.Client, each int, also ...func() error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(cs)*each+len(also))
	for _, c := range cs {
		for range each {
			wg.Go(func() {
				l, err := c.TryAcquire(ctx, uniq("recreated-commands"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
				if err == nil {
					err = l.Release(ctx)
				}
				errs <- err
			})
		}
	}
	for _, f := range also {
		wg.Go(func() { errs <- f() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
