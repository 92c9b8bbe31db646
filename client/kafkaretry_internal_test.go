package client

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// The SDK's producer and reply reader refresh metadata at most a second
// after a failed refresh, so a command produced during a broker's outage is
// sent about a second after it is back (kafkaretry), and wait at most a
// second between retries; and they give a half-open connection up sooner
// than kgo's defaults (halfOpenOpts). Config.KafkaOpts may set others. A
// Config.Client keeps its own options; the readers built from them take
// the SDK's where it set none.
func TestClientsKafkaDefaults(t *testing.T) {
	clearCredentialsEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster := kafkatest.Cluster(t)
	newClient := func(cfg Config) *Client {
		t.Helper()
		cfg.Brokers = cluster.ListenAddrs()
		c, err := New(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	requireRetry := func(cl *kgo.Client, minAge time.Duration) {
		t.Helper()
		assert.Equal(t, minAge, cl.OptValue(kgo.MetadataMinAge))
		backoff, ok := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
		require.True(t, ok)
		for fails := 1; fails <= 10; fails++ {
			assert.LessOrEqual(t, backoff(fails), kafkaretry.MaxWait, "after %d failures", fails)
		}
	}

	c := newClient(Config{Requester: "defaults"})
	requireRetry(c.prod, kafkaretry.MaxWait)
	requireRetry(c.cons, kafkaretry.MaxWait)
	assert.Equal(t, requestOverhead, c.prod.OptValue(kgo.RequestTimeoutOverhead))
	assert.Equal(t, produceTimeout, c.prod.OptValue(kgo.ProduceRequestTimeout))
	assert.Equal(t, requestOverhead, c.cons.OptValue(kgo.RequestTimeoutOverhead))

	c = newClient(Config{Requester: "kafkaopts", KafkaOpts: []kgo.Opt{kgo.MetadataMinAge(3 * time.Second),
		kgo.RequestTimeoutOverhead(7 * time.Second), kgo.ProduceRequestTimeout(8 * time.Second)}})
	for _, cl := range []*kgo.Client{c.prod, c.cons} {
		assert.Equal(t, 3*time.Second, cl.OptValue(kgo.MetadataMinAge), "Config.KafkaOpts win")
		assert.Equal(t, 7*time.Second, cl.OptValue(kgo.RequestTimeoutOverhead), "Config.KafkaOpts win")
	}
	assert.Equal(t, 8*time.Second, c.prod.OptValue(kgo.ProduceRequestTimeout), "Config.KafkaOpts win")

	own, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	require.NoError(t, err)
	defer own.Close()
	c = newClient(Config{Requester: "own-client", Client: own})
	assert.Equal(t, 5*time.Second, c.prod.OptValue(kgo.MetadataMinAge), "Config.Client's own options, kgo's default")
	assert.Equal(t, 10*time.Second, c.prod.OptValue(kgo.RequestTimeoutOverhead), "Config.Client's own options, kgo's default")
	requireRetry(c.cons, kafkaretry.MaxWait)
	assert.Equal(t, requestOverhead, c.cons.OptValue(kgo.RequestTimeoutOverhead))
}

// builtClients records every kgo client built with its options.
type builtClients struct {
	mu  sync.Mutex
	cls []*kgo.Client
}

func (h *builtClients) OnNewClient(cl *kgo.Client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cls = append(h.cls, cl)
}

// NewSubscriber's clients (its ping's and the subscription's) take the
// SDK's retry and metadata settings too.
func TestSubscriberRetriesWithinASecond(t *testing.T) {
	clearCredentialsEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := topics.DefaultNames()
	acquired := names.Lifecycle(topics.TypeAcquired)
	cluster := kafkatest.Cluster(t, kfake.SeedTopics(1, acquired))
	var h builtClients
	sub, err := NewSubscriber(ctx, SubscriberConfig{Brokers: cluster.ListenAddrs(), KafkaOpts: []kgo.Opt{kgo.WithHooks(&h)}})
	require.NoError(t, err)
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, acquired)
	require.NoError(t, err)
	_ = msgs
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotEmpty(t, h.cls)
	for i, cl := range h.cls {
		assert.Equal(t, kafkaretry.MaxWait, cl.OptValue(kgo.MetadataMinAge), "client %d", i)
		backoff, _ := cl.OptValue(kgo.RetryBackoffFn).(func(int) time.Duration)
		assert.LessOrEqual(t, backoff(10), kafkaretry.MaxWait+kafkaretry.MaxWait/5, "client %d: backoff after 10 failures", i)
	}
}
