package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// Clients given one Config.Client share the purge count of their commands
// topic on it (purgeState), each other topic or producer has its own, and
// an entry goes with the last Client holding it, a failed New's too.
func TestPurgeStateSharedByProducerAndTopic(t *testing.T) {
	clearCredentialsEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster := kafkatest.Cluster(t)
	shared, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer shared.Close()
	newClient := func(cfg Config) *Client {
		t.Helper()
		c, err := New(ctx, cfg)
		require.NoError(t, err)
		return c
	}
	held := func(prod *kgo.Client, topic string) *purgeState {
		purgeStates.mu.Lock()
		defer purgeStates.mu.Unlock()
		return purgeStates.of[purgeKey{prod, topic}]
	}
	commands := topics.DefaultNames().Commands

	a := newClient(Config{Client: shared, Requester: "purges-a"})
	b := newClient(Config{Client: shared, Requester: "purges-b"})
	other := newClient(Config{Client: shared, Requester: "purges-other", Topics: topics.Names{Commands: "other.commands"}})
	own := newClient(Config{Brokers: cluster.ListenAddrs(), Requester: "purges-own"})
	assert.Same(t, a.purges, b.purges)
	assert.Same(t, a.purges, held(shared, commands))
	assert.NotSame(t, a.purges, other.purges)
	assert.NotSame(t, a.purges, own.purges)

	consuming, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics("t"))
	require.NoError(t, err)
	defer consuming.Close()
	_, err = New(ctx, Config{Client: consuming, Requester: "purges-refused"})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Nil(t, held(consuming, commands), "a failed New holds none")

	require.NoError(t, a.Close())
	assert.Same(t, b.purges, held(shared, commands), "b holds it still")
	for _, c := range []*Client{b, other, own} {
		require.NoError(t, c.Close())
	}
	assert.Nil(t, held(shared, commands))
	assert.Nil(t, held(shared, "other.commands"))
	assert.Nil(t, held(own.prod, commands))
}
