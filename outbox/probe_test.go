package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/outbox"
)

// awayTopic is a recorder whose publishes of one topic fail at once for
// Kafka being away, then, from the second, wait until released (a
// partition without a leader, which kgo holds up to its delivery timeout).
type awayTopic struct {
	*recorder
	topic    string
	mu       sync.Mutex
	tries    int
	waiting  chan struct{} // closed when a publish of topic waits
	released chan struct{}
}

// away says how a publish of the away topic goes: a failure, or nil once
// released.
func (a *awayTopic) away() error {
	a.mu.Lock()
	a.tries++
	try := a.tries
	a.mu.Unlock()
	switch try {
	case 1:
		return errors.New("dial tcp: connection refused")
	case 2:
		close(a.waiting)
	}
	<-a.released
	return nil
}

func (a *awayTopic) Publish(topic string, msgs ...*message.Message) error {
	if topic == a.topic {
		if err := a.away(); err != nil {
			return err
		}
	}
	return a.recorder.Publish(topic, msgs...)
}

func (a *awayTopic) PublishTopicsEach(done func(i int, err error), batches ...kafkapubsub.TopicMessages) {
	i := slices.IndexFunc(batches, func(b kafkapubsub.TopicMessages) bool { return b.Topic == a.topic })
	if i < 0 {
		a.recorder.PublishTopicsEach(done, batches...)
		return
	}
	if err := a.away(); err != nil {
		done(i, err)
		a.recorder.PublishTopicsEach(func(k int, err error) {
			if k >= i {
				k++ // the index in batches, the away topic's left out
			}
			done(k, err)
		}, slices.Delete(slices.Clone(batches), i, i+1)...)
		return
	}
	a.recorder.PublishTopicsEach(done, batches...)
}

// TestAwayTopicIsProbedAlone: a topic Kafka was away for is tried again in
// a probe the passes do not wait for, so that while that publish hangs the
// other topics' rows, read or handed over, still go; once it returns, the
// topic's rows go in order, none lost.
func TestAwayTopicIsProbedAlone(t *testing.T) {
	t.Parallel()
	const ok, away, p = "locks.replies.ok", "locks.replies.away", int32(2)
	c := newCluster(t, kfake.SeedTopics(1, ok, away))
	st := testdb.New(t)
	pub := &awayTopic{recorder: newPublisher(t, c.ListenAddrs(), false), topic: away,
		waiting: make(chan struct{}), released: make(chan struct{})}
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.PublishTimeout = time.Minute
		cfg.HandOverWait = -1 // the hanging publish is released at the end
	})
	insert(t, st, p, rec{away, "k", "a0", ""}, rec{ok, "k", "o0", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	select {
	case <-pub.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the away topic was not tried again")
	}

	// Its publish hangs: the other topic's rows still go, read from the
	// table and handed over.
	insert(t, st, p, rec{ok, "k", "o1", ""}, rec{away, "k", "a1", ""})
	relay.Wake(p)
	s := relay.Reserve(p)
	require.NotNil(t, s)
	s.Fill(write(t, st, p, rec{ok, "k", "o2", ""}, rec{away, "k", "a2", ""}))
	require.Eventually(t, func() bool { return len(pub.acked()) == 3 }, 10*time.Second, 5*time.Millisecond,
		"the other topic's rows while the away topic's publish hangs: %v", pub.acked())
	for i, a := range pub.acked() {
		require.Equal(t, fmt.Sprint(ok, "/o", i), a)
	}

	close(pub.released)
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond, "every row published")
	var got []string
	for _, a := range pub.acked() {
		if v, found := strings.CutPrefix(a, away+"/"); found {
			got = append(got, v)
		}
	}
	require.Equal(t, []string{"a0", "a1", "a2"}, firstSeen(got), "the away topic's rows in order")
}
