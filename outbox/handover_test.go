package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
	"github.com/omninode/lockworker/kafkapubsub"
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
	pub := newAnswersLate(a, a, b)
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
	close(pub.release[a])
	close(pub.release[b])
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	require.Equal(t, []string{"a0"}, tableValues(t, st, p), "the failed publish's row stays, the acknowledged one is gone")
}

// TestHandOverDeletesWhatLandedBesideAnUnansweredTopic: of the
// publishes left behind as Run's context ends, the rows of a topic Kafka
// acknowledges within HandOverWait are deleted though another topic is
// still unanswered then (a Kafka partition without a leader, the reason
// publishes are left behind), also when the publisher takes the pass's
// topics in one call (kafkapubsub's), which returns only once every topic
// is answered.
func TestHandOverDeletesWhatLandedBesideAnUnansweredTopic(t *testing.T) {
	t.Parallel()
	for _, together := range []bool{false, true} {
		t.Run(fmt.Sprintf("PublishTopicsEach=%v", together), func(t *testing.T) {
			t.Parallel()
			left, _, _ := handOverBesideAnUnansweredTopic(t, together)
			require.Equal(t, []string{"b0"}, left, "a, acknowledged within HandOverWait, is deleted; b, unanswered, stays")
		})
	}
}

// TestHandOverReportsTheLagWhenKafkaAnswered: a row Kafka acknowledges
// during the hand-over is reported (OnPublished, the publish lag metric)
// with its age when Kafka answered, not when the hand-over ended its wait
// for another publish, up to HandOverWait later.
func TestHandOverReportsTheLagWhenKafkaAnswered(t *testing.T) {
	t.Parallel()
	for _, together := range []bool{false, true} {
		t.Run(fmt.Sprintf("PublishTopicsEach=%v", together), func(t *testing.T) {
			t.Parallel()
			_, published, answered := handOverBesideAnUnansweredTopic(t, together)
			require.Len(t, published, 1, "a's row reported once")
			require.Equal(t, 1, published[0].n)
			require.Less(t, published[0].oldest, answered+handOverWait/2,
				"a's lag, its age when Kafka answered being about %v", answered)
		})
	}
}

// handOverWait is handOverBesideAnUnansweredTopic's HandOverWait: a
// publish answered at once is well within it.
const handOverWait = 2 * time.Second

// handOverBesideAnUnansweredTopic publishes a row of topics a and b, ends
// Run while both are in flight, has Kafka acknowledge a as Run hands over
// and b only once Run has returned, and returns the values left in the
// table, what was reported to OnPublished, and about the age of a's row
// when Kafka answered it. together offers the publisher's
// PublishTopicsEach.
func handOverBesideAnUnansweredTopic(t *testing.T, together bool) (left []string, published []publishedRows, answered time.Duration) {
	const a, b, p = "locks.replies.svc", "locks.lock.acquired.v1", int32(7)
	st := testdb.New(t)
	late := newAnswersLate("", a, b)
	var pub message.Publisher = late
	if together {
		pub = answersLateTogether{late}
	}
	var logs testlog.Buffer
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.Logger = zerolog.New(&logs)
		cfg.HandOverWait = handOverWait
		cfg.OnPublished = func(n int, oldest time.Duration) { published = append(published, publishedRows{n, oldest}) }
	})
	inserted := time.Now()
	insert(t, st, p, rec{a, "k", "a0", "ea0"}, rec{b, "k", "b0", "eb0"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx, p) }()
	<-late.started
	<-late.started // both topics' publishes are in flight
	cancel()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "waiting for publishes Kafka has not answered") },
		10*time.Second, 5*time.Millisecond)
	close(late.release[a])
	answered = time.Since(inserted)
	select {
	case err := <-done: // after HandOverWait, b unanswered
		require.NoError(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	close(late.release[b])
	return tableValues(t, st, p), published, answered
}

// publishedRows is what OnPublished was told.
type publishedRows struct {
	n      int
	oldest time.Duration
}

// answersLate is a publisher whose publishes of a topic wait until its
// release channel is closed, then fail for the topic failing and succeed
// for the others; started gets each one's topic as it begins.
type answersLate struct {
	failing string
	started chan string
	release map[string]chan struct{}
}

func newAnswersLate(failing string, topics ...string) *answersLate {
	l := &answersLate{failing: failing, started: make(chan string, len(topics)), release: map[string]chan struct{}{}}
	for _, topic := range topics {
		l.release[topic] = make(chan struct{})
	}
	return l
}

func (l *answersLate) Publish(topic string, _ ...*message.Message) error {
	l.started <- topic
	<-l.release[topic]
	if topic == l.failing {
		return errors.New("dial tcp: connection refused")
	}
	return nil
}

func (l *answersLate) Close() error { return nil }

// answersLateTogether is answersLate taking several topics in one call,
// as kafkapubsub's publisher does: the call returns once each topic is
// answered.
type answersLateTogether struct{ *answersLate }

func (l answersLateTogether) PublishTopicsEach(done func(i int, err error), batches ...kafkapubsub.TopicMessages) {
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() { done(i, l.Publish(b.Topic, b.Messages...)) })
	}
	wg.Wait()
}

// tableValues are the values of the partition's rows in the outbox.
func tableValues(t *testing.T, st *store.Store, p int32) []string {
	t.Helper()
	rows, err := st.Pool.Query(context.Background(), `SELECT convert_from(value, 'UTF8') FROM outbox WHERE source_partition = $1 ORDER BY id`, p)
	require.NoError(t, err)
	vs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return vs
}
