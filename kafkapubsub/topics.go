package kafkapubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// topicCreator creates topics at most once per topic while creation
// succeeds, so publishing to a known topic costs no admin request. A topic
// deleted since is forgotten when a publish finds it missing (forget), so
// the next publish creates it again.
type topicCreator struct {
	admin             *kadm.Client
	partitions        int32
	replicationFactor int16

	mu      sync.Mutex
	pending map[string]*creation // in flight or done; failed ones are removed
}

type creation struct {
	done chan struct{}
	err  error
}

func newTopicCreator(admin *kadm.Client, partitions int32, replicationFactor int16) *topicCreator {
	// Zero means "broker default", which CreateTopics spells -1.
	if partitions == 0 {
		partitions = -1
	}
	if replicationFactor == 0 {
		replicationFactor = -1
	}
	return &topicCreator{
		admin:             admin,
		partitions:        partitions,
		replicationFactor: replicationFactor,
		pending:           make(map[string]*creation),
	}
}

// ensure creates topic unless it exists. Concurrent callers for the same
// topic share one request. A failure is not cached, so the next call retries.
func (tc *topicCreator) ensure(ctx context.Context, topic string) error {
	tc.mu.Lock()
	c, ok := tc.pending[topic]
	if !ok {
		c = &creation{done: make(chan struct{})}
		tc.pending[topic] = c
	}
	tc.mu.Unlock()

	if ok {
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	c.err = tc.create(ctx, topic)
	if c.err != nil {
		tc.mu.Lock()
		delete(tc.pending, topic)
		tc.mu.Unlock()
	}
	close(c.done)
	return c.err
}

// forget drops a created topic, so the next ensure creates it again. One
// whose creation is in flight is kept: that creation is the one to wait for.
func (tc *topicCreator) forget(topic string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if c, ok := tc.pending[topic]; ok {
		select {
		case <-c.done:
			delete(tc.pending, topic)
		default:
		}
	}
}

// create creates topic; a refusal to create it (no CREATE permission,
// which Kafka checks before whether the topic exists) leaves it to the
// produce: a topic provisioned elsewhere is written.
func (tc *topicCreator) create(ctx context.Context, topic string) error {
	_, err := tc.admin.CreateTopic(ctx, tc.partitions, tc.replicationFactor, nil, topic)
	switch {
	case err == nil, errors.Is(err, kerr.TopicAlreadyExists),
		errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return nil
	}
	return fmt.Errorf("kafkapubsub: create topic %q: %w", topic, err)
}
