package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
)

// TestHandOverDeletesWhatLandedLate: a publish in flight when Run's
// context ends (a revoke, a SIGTERM) and that Kafka acknowledges during
// the hand-over has its rows deleted before Run returns, so the
// partition's next owner does not publish them again; the rows Kafka did
// not acknowledge stay for it.
func TestHandOverDeletesWhatLandedLate(t *testing.T) {
	t.Parallel()
	for _, inOrder := range []bool{false, true} {
		t.Run(fmt.Sprintf("OrderAcrossTopics=%v", inOrder), func(t *testing.T) {
			t.Parallel()
			handOverDeletesWhatLandedLate(t, inOrder)
		})
	}
}

func handOverDeletesWhatLandedLate(t *testing.T, inOrder bool) {
	const a, b, p = "locks.replies.svc", "locks.lock.acquired.v1", int32(5)
	c := newCluster(t, kfake.SeedTopics(1, a, b))
	held, release := kafkatest.HoldFirst(c, kmsg.Produce)
	defer release()
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var logs testlog.Buffer
	mod := func(cfg *outbox.Config) {
		cfg.OrderAcrossTopics = inOrder
		cfg.Logger = zerolog.New(&logs)
	}
	insert(t, st, p, rec{a, "k", "a0", "ea0"}, rec{b, "k", "b0", "eb0"}, rec{a, "k", "a1", "ea1"}, rec{b, "k", "b1", "eb1"})

	// The first owner's publish is in flight when it is revoked, and
	// Kafka answers while it hands over.
	first := newRelay(t, st, pub, mod)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx, p) }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("no publish reached Kafka")
	}
	cancel()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "waiting for publishes Kafka has not answered") },
		10*time.Second, 5*time.Millisecond)
	release()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	acked := pub.acked()
	require.NotEmpty(t, acked, "Kafka acknowledged the publish in flight")
	left := tableValues(t, st, p)
	for _, v := range acked {
		assert.NotContains(t, left, strings.SplitN(v, "/", 2)[1], "a row Kafka acknowledged is still in the table for the next owner")
	}
	assert.Len(t, left, 4-len(acked), "the rows Kafka did not acknowledge stay")

	// The next owner publishes the rest, and nothing twice.
	next := newRelay(t, st, pub, nil)
	start(t, func(ctx context.Context) error { return next.Run(ctx, p) })
	insert(t, st, p, rec{a, "k", "a2", "ea2"})
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond)
	assert.ElementsMatch(t, []string{a + "/a0", b + "/b0", a + "/a1", b + "/b1", a + "/a2"}, pub.acked(), "every row published once")
}

// TestHandOverKeepsWhatFailedLate: of the publishes left behind as Run's
// context ends, only what Kafka acknowledged is deleted: the rows of one
// that fails stay for the partition's next owner.
func TestHandOverKeepsWhatFailedLate(t *testing.T) {
	t.Parallel()
	const a, b, p = "locks.replies.svc", "locks.lock.acquired.v1", int32(6)
	st := testdb.New(t)
	pub := &answersLate{failing: a, started: make(chan struct{}, 2), release: make(chan struct{})}
	var logs testlog.Buffer
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.Logger = zerolog.New(&logs) })
	insert(t, st, p, rec{a, "k", "a0", "ea0"}, rec{b, "k", "b0", "eb0"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, p) }()
	<-pub.started
	<-pub.started // both topics' publishes are in flight
	cancel()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "waiting for publishes Kafka has not answered") },
		10*time.Second, 5*time.Millisecond)
	close(pub.release)
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	require.Equal(t, []string{"a0"}, tableValues(t, st, p), "the failed publish's row stays, the acknowledged one is gone")
}

// answersLate is a publisher whose publishes wait until released, then
// fail for the topic failing and succeed for the others.
type answersLate struct {
	failing          string
	started, release chan struct{}
}

func (l *answersLate) Publish(topic string, _ ...*message.Message) error {
	l.started <- struct{}{}
	<-l.release
	if topic == l.failing {
		return errors.New("dial tcp: connection refused")
	}
	return nil
}

func (l *answersLate) Close() error { return nil }

// tableValues are the values of the partition's rows in the outbox.
func tableValues(t *testing.T, st *store.Store, p int32) []string {
	t.Helper()
	rows, err := st.Pool.Query(context.Background(), `SELECT convert_from(value, 'UTF8') FROM outbox WHERE source_partition = $1 ORDER BY id`, p)
	require.NoError(t, err)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return vs
}
