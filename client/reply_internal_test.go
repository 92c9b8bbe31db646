package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// fakeWorker starts a broker and, in lockworker's place, answers each
// command on the commands topic with what answer makes of it (nothing when
// ok is false), so that tests can feed the client replies no worker sends.
// It returns a client of that broker.
func fakeWorker(t *testing.T, answer func(cmd topics.Command) (ev topics.Event, ok bool)) *Client {
	t.Helper()
	names := topics.DefaultNames()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, names.Commands))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(names.Commands), kgo.ProducerLinger(0))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				cmd, err := topics.Decode(r.Value, names.ReplyPrefix)
				if err != nil {
					return
				}
				if ev, ok := answer(cmd); ok {
					ev.RequestID = cmd.RequestID
					v, err := ev.Encode()
					if err == nil {
						cl.Produce(ctx, &kgo.Record{Topic: cmd.ReplyTo, Key: []byte(cmd.Key()), Value: v}, nil)
					}
				}
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	c, err := New(ctx, Config{Brokers: cluster.ListenAddrs(), Requester: "fake", ReplyTimeout: time.Second, RequestTimeout: 10 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// granted is a lock.acquired answering cmd with a lease of lease seconds.
func granted(cmd topics.Command, typ string, lease float64) topics.Event {
	now := time.Now()
	ev := topics.NewEvent(typ, cmd.Operation, cmd.RequestID, now)
	ev.LockInfo = &topics.LockInfo{Namespace: cmd.Namespace, LockName: cmd.LockName, OwnerID: cmd.OwnerID, FencingToken: 1,
		Status: topics.StatusAcquired, AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(time.Minute)),
		LeaseDuration: lease}
	return ev
}

// A reply whose session ttl or lease_duration is outside the contract's
// range (0 here, which once panicked the session's keep-alive ticker and
// made a lease's keep-alive spin) is refused: NewSession and Acquire fail,
// and an extension so answered is not confirmed, leaving the lease's
// keep-alive pace as it was.
func TestReplyOutsideTheContractsRange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := fakeWorker(t, func(cmd topics.Command) (topics.Event, bool) {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			ev := topics.NewEvent(topics.TypeSessionOpened, cmd.Operation, cmd.RequestID, time.Now())
			ev.SessionInfo = &topics.SessionInfo{SessionID: cmd.SessionID, OwnerID: cmd.OwnerID, TTL: 0,
				ExpiresAt: topics.NewTime(time.Now().Add(time.Minute))}
			return ev, true
		case topics.OpAcquire:
			if cmd.LockName == "zero" {
				return granted(cmd, topics.TypeAcquired, 0), true
			}
			return granted(cmd, topics.TypeAcquired, 60), true
		case topics.OpExtend:
			return granted(cmd, topics.TypeExtended, 0), true
		}
		return topics.Event{}, false
	})

	_, err := c.NewSession(ctx, 10*time.Second)
	require.ErrorContains(t, err, "session.opened with ttl 0, outside the contract's 1..3600 seconds")
	_, err = c.Acquire(ctx, "zero")
	require.ErrorContains(t, err, "lock.acquired with lease_duration 0, outside the contract's 0.1..86400 seconds")

	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	err = l.Extend(ctx, time.Minute)
	require.ErrorContains(t, err, "lock.extended with lease_duration 0")
	require.NoError(t, l.Err(), "an extension not confirmed leaves the lease to its deadline")
	l.mu.Lock()
	require.Equal(t, time.Minute, l.lease, "the keep-alive's pace")
	l.mu.Unlock()
}
