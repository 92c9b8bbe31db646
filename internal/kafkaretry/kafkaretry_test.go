package kafkaretry_test

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/internal/kafkatest"
)

// A record produced while the broker is down is sent once a metadata
// refresh succeeds (kgo marks its partition failing when the produce cannot
// dial), which comes MetadataMinAge after the last failed one. The broker
// is back as soon as a refresh failed, before the next begins: with Opts
// the record is acknowledged about MaxWait after that refresh's last
// refused dial; with kgo's default MetadataMinAge, never before 5 s.
func TestProduceResumesSoonAfterOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster := kafkatest.Cluster(t, kfake.SeedTopics(1, "t"))
	var b broker
	cl, err := kgo.NewClient(append(kafkaretry.Opts(), kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.DefaultProduceTopic("t"), kgo.ProducerLinger(0), kgo.Dialer(b.dial), kgo.WithLogger(&outageLog{b: &b}))...)
	require.NoError(t, err)
	defer cl.Close()
	require.NoError(t, cl.ProduceSync(ctx, kgo.StringRecord("before")).FirstErr())

	b.down()
	acked := make(chan error, 1)
	var ackedAt time.Time
	cl.Produce(ctx, kgo.StringRecord("during"), func(_ *kgo.Record, err error) {
		ackedAt = time.Now()
		acked <- err
	})
	select {
	case err := <-acked:
		require.NoError(t, err)
	case <-ctx.Done():
		// Or kgo no longer logs what outageLog waits for.
		t.Fatal("the record produced during the outage was not acknowledged")
	}
	refused := b.lastRefused()
	require.False(t, refused.IsZero(), "no dial was refused: the outage did not happen")
	t.Logf("acknowledged %v after the failed metadata refresh's last refused dial", ackedAt.Sub(refused))
	require.Less(t, ackedAt.Sub(refused), 5*time.Second,
		"acknowledged %v after the failed metadata refresh: kgo's default MetadataMinAge (5 s) held the record", ackedAt.Sub(refused))
}

// broker stands for the broker as the client reaches it: down, every
// connection is closed and every dial refused, as when it restarts.
type broker struct {
	mu       sync.Mutex
	refusing bool
	conns    []net.Conn
	refused  time.Time // the last dial refused
}

func (b *broker) dial(ctx context.Context, network, host string) (net.Conn, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.refusing {
		b.refused = time.Now()
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, host)
	if err == nil {
		b.conns = append(b.conns, c)
	}
	return c, err
}

func (b *broker) down() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refusing = true
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

func (b *broker) up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refusing = false
}

func (b *broker) lastRefused() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.refused
}

// outageLog is a logger that brings b back where kgo's metadata loop says
// it will refresh again because a refresh failed, once a produce failed to
// dial: the loop has not begun the next refresh, which finds b back.
type outageLog struct {
	b             *broker
	produceFailed atomic.Bool
}

func (*outageLog) Level() kgo.LogLevel { return kgo.LogLevelInfo }

func (l *outageLog) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	switch msg {
	case "produce request failed, triggering metadata update":
		l.produceFailed.Store(true)
	case "metadata update triggered":
		for i := 1; i < len(keyvals); i += 2 {
			if why, _ := keyvals[i].(string); strings.HasPrefix(why, "re-updating metadata due to err") && l.produceFailed.Load() {
				l.b.up()
			}
		}
	}
}
