package client

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// Close while Client.Subscriber pings a broker that does not answer (its
// Metadata answer held) returns at once, not when the caller's long
// deadline passes, and Subscriber fails with ErrClosed, not as if the
// brokers were unreachable.
func TestCloseDuringSubscriberPing(t *testing.T) {
	clearCredentialsEnv(t)
	cluster := kafkatest.Cluster(t)
	// Read-only: after New, the Subscriber's ping is the only Metadata
	// request.
	c, err := New(context.Background(), Config{Brokers: cluster.ListenAddrs(), Requester: "subscriber-close", ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	held, release := kafkatest.HoldFirst(cluster, kmsg.Metadata)
	t.Cleanup(release)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 1)
	go func() {
		_, err := c.Subscriber(ctx)
		errs <- err
	}()
	select {
	case <-held:
	case err := <-errs:
		t.Fatalf("Subscriber returned before its ping was held: %v", err)
	case <-ctx.Done():
		t.Fatal("the ping is not held")
	}
	closed := make(chan struct{})
	go func() { c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		release() // so that the test ends
		t.Fatal("Close waits for the Subscriber's ping")
	}
	err = <-errs
	require.ErrorIs(t, err, ErrClosed)
	require.False(t, errors.Is(err, ErrUnreachable), "%v", err)
}

// withContextErr names the context's cause (the client's ErrClosed, a
// caller's own), once, on one line.
func TestWithContextErr(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(ErrClosed)
	err := withContextErr(ctx, errors.New("dial tcp: refused"))
	require.ErrorIs(t, err, ErrClosed)
	require.Equal(t, "dial tcp: refused (client closed)", err.Error())
	require.Equal(t, ErrClosed, withContextErr(ctx, nil))

	ctx, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	<-ctx.Done()
	err = withContextErr(ctx, fmt.Errorf("ping: %w", context.DeadlineExceeded))
	require.Equal(t, "ping: context deadline exceeded", err.Error(), "named once")
	require.Equal(t, context.DeadlineExceeded, withContextErr(ctx, nil))
}

// Client.Subscriber hands its options the client's brokers and Kafka
// options clipped: one appending to them copies, and writes nothing into
// the client's slices, which concurrent calls share.
func TestSubscriberOptionsDoNotWriteTheClients(t *testing.T) {
	clearCredentialsEnv(t)
	cluster := kafkatest.Cluster(t)
	c, err := New(context.Background(), Config{Brokers: cluster.ListenAddrs(), Requester: "subscriber-opts", ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	n := len(c.baseOpts)
	c.baseOpts = append(make([]kgo.Opt, 0, n+1), c.baseOpts...) // room to write into
	brokers := append(make([]string, 0, len(c.cfg.Brokers)+1), c.cfg.Brokers...)
	c.cfg.Brokers = brokers
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sub, err := c.Subscriber(ctx, func(cfg *SubscriberConfig) {
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.ClientID("subscriber-opts"))
		cfg.Brokers = append(cfg.Brokers, cluster.ListenAddrs()[0])
	})
	require.NoError(t, err)
	require.NoError(t, sub.Close())
	require.Nil(t, c.baseOpts[:n+1][n], "the option wrote into the client's Kafka options")
	require.Empty(t, brokers[:len(brokers)+1][len(brokers)], "the option wrote into the client's brokers")
}
