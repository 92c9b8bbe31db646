package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/tcpproxy"
)

// proxyLink gives every connection a client dials a proxy of its own, so
// that the connections that have carried one kind of request (Produce,
// Fetch) can be hung alone: a NAT or firewall that dropped their state (no
// reset, no answer) while new connections work.
type proxyLink struct {
	target  string
	mu      sync.Mutex
	carried map[kmsg.Key][]*tcpproxy.Proxy
}

func (k *proxyLink) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	p, err := tcpproxy.Listen(k.target)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, p.Addr())
	if err != nil {
		p.Close()
		return nil, err
	}
	return &keySniffer{Conn: c, k: k, p: p}, nil
}

// hang hangs the connections open now that have carried a request of key.
func (k *proxyLink) hang(key kmsg.Key) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.carried[key] {
		p.Hang()
	}
}

func (k *proxyLink) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, ps := range k.carried {
		for _, p := range ps {
			p.Close()
		}
	}
}

// keySniffer notes the API key of each request written (kgo writes a
// request whole: its size, then its key).
type keySniffer struct {
	net.Conn
	k *proxyLink
	p *tcpproxy.Proxy
}

func (s *keySniffer) Write(b []byte) (int, error) {
	if len(b) >= 6 {
		s.k.mu.Lock()
		key := kmsg.Key(binary.BigEndian.Uint16(b[4:6]))
		s.k.carried[key] = append(s.k.carried[key], s.p)
		s.k.mu.Unlock()
	}
	return s.Conn.Write(b)
}

func (s *keySniffer) Close() error {
	err := s.Conn.Close()
	s.p.Close()
	return err
}

// A session of the worker's default TTL (10 s) outlives a half-open
// connection of the reply reader's fetches, or of its commands, while the
// brokers take new ones: the SDK's readers and producer give a dead
// connection up well before kgo's default read deadlines (11 s for a
// fetch, 20 s for a produce), so a keep-alive is answered in time.
func TestSessionOutlivesAHalfOpenConnection(t *testing.T) {
	for name, key := range map[string]kmsg.Key{"reply fetches": kmsg.Fetch, "commands": kmsg.Produce} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			k := &proxyLink{target: env.Brokers[0], carried: map[kmsg.Key][]*tcpproxy.Proxy{}}
			c := newClient(t, uniq("halfopen"), func(cfg *client.Config) {
				cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.Dialer(k.dial))
			})
			t.Cleanup(k.close) // after c.Close: cleanups run last-in first-out
			ctx := ctxT(t)
			s, err := c.NewSession(ctx, 10*time.Second)
			require.NoError(t, err)
			before := s.ExpiresAt()
			start := time.Now()
			k.hang(key)
			// A keep-alive sent after the hang (a third of the TTL after
			// the open) answered: the session's expiry moves.
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for !s.ExpiresAt().After(before) {
				select {
				case <-s.Lost():
					t.Fatalf("session lost %v after its %s connection went half-open, the brokers reachable all along: %v",
						time.Since(start).Round(100*time.Millisecond), name, s.Err())
				case <-tick.C:
				}
			}
			t.Logf("keep-alive answered %v after the hang", time.Since(start).Round(100*time.Millisecond))
			require.NoError(t, s.Close(ctx))
		})
	}
}

// New started while the broker refuses connections (restarting) keeps
// trying until it answers, within RequestTimeout: here the first three
// dials are refused.
func TestNewWaitsForARefusingBroker(t *testing.T) {
	closedPort := closedPort(t)
	var refusals atomic.Int32
	dial := func(ctx context.Context, network, host string) (net.Conn, error) {
		var d net.Dialer
		if refusals.Add(1) <= 3 {
			host = closedPort
		}
		return d.DialContext(ctx, network, host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Brokers: env.Brokers, Requester: uniq("refused-first"),
		KafkaOpts: []kgo.Opt{kgo.Dialer(dial)}})
	require.NoError(t, err)
	c.Close()
	require.Greater(t, refusals.Load(), int32(3), "the broker refused no dial")
}

// New cancelled by its caller while the brokers refuse says so: the
// cancel (its cause) is why it stopped, beside the last refusal.
func TestNewCancelledWhileRefusedSaysSo(t *testing.T) {
	cause := errors.New("shutting down")
	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(600*time.Millisecond, func() { cancel(cause) })
	_, err := client.New(ctx, client.Config{Brokers: []string{closedPort(t)}, ReadOnly: true, RequestTimeout: 5 * time.Second})
	require.ErrorIs(t, err, client.ErrUnreachable)
	require.ErrorIs(t, err, cause, "ctx's end, as context.Cause gives it")
}

// closedPort is an address nothing listens on: dials there are refused.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	return ln.Addr().String()
}
