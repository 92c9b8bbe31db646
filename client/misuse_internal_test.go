package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// A Watch option that panics, the panic recovered by the caller (as
// net/http recovers a handler's), leaves no operation counted for Close to
// wait for: the options are applied before the watch registers.
func TestCloseAfterAPanicInWatchOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, _ := kafkatest.StateTopic(t, 1)
	c, err := New(ctx, Config{Brokers: cluster.ListenAddrs(), ReadOnly: true})
	require.NoError(t, err)
	func() {
		defer func() { require.Equal(t, "option", recover()) }()
		_, _ = c.Watch(ctx, "lock", func(*watchOptions) { panic("option") })
	}()
	closed := make(chan struct{})
	go func() { _ = c.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waits 10 s after a recovered panic in Watch's options")
	}
}
