package httpapi

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestPingSkipsAHungBroker: a broker that accepts connections and never
// answers, the one of the lowest node id, does not fail the Kafka check
// while the others answer; with every broker hung, the check fails at its
// deadline.
func TestPingSkipsAHungBroker(t *testing.T) {
	c := kafkatest.Cluster(t, kfake.NumBrokers(3))
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	ping := pingBrokers(cl)
	require.NoError(t, ping(context.Background()), "a client that knows no broker yet asks its seeds")
	require.NoError(t, cl.Ping(context.Background())) // discovers the brokers
	require.Len(t, cl.DiscoveredBrokers(), 3)

	hung := map[int32]bool{0: true}
	var mu sync.Mutex
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before c.Close: Cleanups run last first
	c.ControlKey(int16(kmsg.Metadata), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		mu.Lock()
		hang := hung[c.CurrentNode()]
		mu.Unlock()
		if hang {
			c.SleepControl(func() { <-release })
		}
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	require.NoError(t, ping(ctx), "brokers 1 and 2 answer")

	mu.Lock()
	hung[1], hung[2] = true, true
	mu.Unlock()
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, ping(ctx), context.DeadlineExceeded)
}

// TestHungBrokerNamesThePing: with the only broker accepting connections
// and never answering, the request that started the ping reports the
// ping's own error, not its own timeout ("waiting for the Kafka ping under
// way"), and still within the check's timeout.
func TestHungBrokerNamesThePing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(io.Discard, c) }() // reads, never answers
		}
	}()
	cl, err := kgo.NewClient(kgo.SeedBrokers(ln.Addr().String()))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	e := newEnv(t, nil, hung, func(c *Config) { c.Kafka = cl })
	for _, path := range []string{"/health/kafka", "/health"} {
		start := time.Now()
		var h struct {
			Check
			Checks map[string]Check `json:"checks"`
		}
		code, body := e.get(path, &h)
		took := time.Since(start)
		require.Equal(t, http.StatusServiceUnavailable, code, body)
		kafka := h.Check
		if path == "/health" {
			kafka = h.Checks["kafka"]
		}
		require.Equal(t, "pinging 1 Kafka brokers, none answered: context deadline exceeded", kafka.Error, "%s: %s", path, body)
		require.LessOrEqual(t, kafka.LatencyMS, millis(300*time.Millisecond), path)
		require.Less(t, took, time.Second, path)
	}
}
