package client_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

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

	adm := kadm.NewClient(e.Producer())
	details, err := adm.ListTopics(ctx, e.Names.Commands)
	require.NoError(t, err)
	n := int32(len(details[e.Names.Commands].Partitions))
	w.Stop()
	_, err = adm.DeleteTopics(ctx, e.Names.Commands)
	require.NoError(t, err)
	created, err := adm.CreateTopic(ctx, n, 1, nil, e.Names.Commands)
	require.NoError(t, err)
	require.NoError(t, created.Err)
	e.StartWorker(e2e.WorkerOpts{Name: "second"})

	// Within ReplyTimeout: answered by the resend after the purge, not by
	// one a ReplyTimeout later.
	ctx, cancel := context.WithTimeout(ctx, client.DefaultReplyTimeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 4 {
		wg.Go(func() {
			l, err := c.TryAcquire(ctx, uniq("recreated-commands"), client.WithoutKeepAlive(), client.WithLease(time.Minute))
			if err == nil {
				err = l.Release(ctx)
			}
			errs <- err
		})
	}
	wg.Go(func() { errs <- held.Extend(ctx, time.Minute) })
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
