package client

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/topics"
)

// handedOver counts the records given to kgo to produce (buffered or not).
type handedOver struct {
	n    atomic.Int32
	seen chan struct{} // gets a value for each
}

func (h *handedOver) OnProduceRecordBuffered(*kgo.Record) {
	h.n.Add(1)
	select {
	case h.seen <- struct{}{}:
	default:
	}
}

// fullBuffer is a client whose producer buffers one record (kgo's
// MaxBufferedRecords, 50,000 by default), with a broker that holds every
// produce request until release is called (a broker stalled, or a
// partition whose leader is gone), and a command already in that buffer:
// the next command finds it full. The command's call is given up already.
// The worker answers queries once it has them.
func fullBuffer(t *testing.T, requestTimeout time.Duration) (c *Client, hook *handedOver, release func()) {
	t.Helper()
	hook = &handedOver{seen: make(chan struct{}, 16)}
	c, cluster := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) {
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.MaxBufferedRecords(1), kgo.WithHooks(hook))
		cfg.RequestTimeout = requestTimeout
	}}, func(_ context.Context, cmd topics.Command) []topics.Event { return one(statusEvent(cmd)) })
	held, stop := make(chan struct{}, 1), make(chan struct{})
	cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		select {
		case held <- struct{}{}:
		default:
		}
		cluster.SleepControl(func() {
			select {
			case <-stop:
			case <-t.Context().Done():
			}
		})
		return nil, nil, false
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Query(ctx, "first")
		done <- err
	}()
	<-held // its record is buffered, and on its way
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.Equal(t, int32(1), hook.n.Load())
	<-hook.seen
	var once sync.Once
	return c, hook, func() { once.Do(func() { close(stop) }) }
}

// A command that finds kgo's producer buffer full waits for room as long as
// its caller's context allows, not the command's RequestTimeout.
func TestSendFullBufferHonoursDeadline(t *testing.T) {
	c, _, _ := fullBuffer(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Query(ctx, "second")
	took := time.Since(start)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, took, 2*time.Second, "a 300 ms deadline")
}

// Close does not wait for a command that finds kgo's producer buffer full:
// the command fails ErrClosed at once.
func TestSendFullBufferClose(t *testing.T) {
	c, hook, _ := fullBuffer(t, 20*time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := c.Query(context.Background(), "second")
		done <- err
	}()
	<-hook.seen // handed to kgo, which has no room for it
	start := time.Now()
	require.NoError(t, c.Close())
	require.Less(t, time.Since(start), 2*time.Second)
	require.ErrorIs(t, <-done, ErrClosed)
}

// A command that finds kgo's producer buffer full goes out once there is
// room, and is answered.
func TestSendFullBufferWaitsForRoom(t *testing.T) {
	c, hook, release := fullBuffer(t, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Query(ctx, "second")
		done <- err
	}()
	<-hook.seen // handed to kgo, which has no room for it
	release()
	require.NoError(t, <-done)
	require.GreaterOrEqual(t, hook.n.Load(), int32(3), "the second command handed to kgo again")
}

// A command none of whose copies kgo's full buffer took by RequestTimeout
// (the caller's context without an earlier deadline) fails ErrUnreachable,
// saying so.
func TestSendFullBufferUnreachable(t *testing.T) {
	c, _, _ := fullBuffer(t, 2*time.Second)
	_, err := c.Query(context.Background(), "second")
	require.ErrorIs(t, err, ErrUnreachable)
	require.ErrorIs(t, err, kgo.ErrMaxBuffered)
}
