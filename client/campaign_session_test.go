package client_test

import (
	"context"
	"encoding/json"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/topics"
)

// A candidate whose process dies while it waits in line (here its client
// is cut off from Kafka, so that nothing withdraws its wait, as after
// SIGKILL or the loss of its host) leaves the line with its session, within
// the session's TTL (its lease) + 1 s: it is never granted the
// leadership, and once the leader resigns the next live candidate leads at
// once, not after the dead one's lease and lock-delay. The live one's
// leadership is out of its campaign's session: its own expiry, extended.
func TestCampaignOfADeadCandidateEndsWithItsSession(t *testing.T) {
	ctx := ctxT(t)
	name := uniq("election-dead-candidate")
	const ttl = 2 * time.Second
	leader, live := newClient(t, "dead-candidate-leader"), newClient(t, "dead-candidate-live")
	proxy := tcpproxy.Start(t, env.Brokers[0])
	dying := newClient(t, uniq("dead-candidate-dying"), func(cfg *client.Config) {
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, proxy.Addr())
		}))
	})
	obs := observe(t, ctx, client.NewElection(leader, name))
	lead, err := client.NewElection(leader, name).Campaign(ctx, "leader", client.WithLease(3*time.Second))
	require.NoError(t, err)

	// Granted, the dead one would keep the next one out for its lease and
	// a lock-delay longer than the test. Its campaign ends with the test's
	// context.
	posDead, _, _ := campaignInLine(t, ctx, dying, name, "dead", client.WithLease(ttl), client.WithLockDelay(time.Minute))
	posLive, _, wonLive := campaignInLine(t, ctx, live, name, "live", client.WithLease(3*time.Second))
	require.Equal(t, []int{1, 2}, []int{posDead, posLive})

	replies := env.For(t).Watch(dying.ReplyTopic())
	proxy.Cut()
	died := time.Now()
	replies.WaitFor(t, ttl+5*time.Second, "the dead candidate's wait withdrawn with its session", func(rs []e2e.Received) bool {
		for _, r := range rs {
			if li := r.Event.LockInfo; r.Event.Type == topics.TypeWithdrawn && r.Event.Reason == topics.ReasonSessionExpired &&
				li != nil && li.LockName == name {
				return true
			}
		}
		return false
	})
	t.Logf("the dead candidate left the line %s after it died (TTL %s)", time.Since(died).Round(time.Millisecond), ttl)

	resigned := time.Now()
	require.NoError(t, lead.Resign(ctx))
	var won *client.Leadership
	select {
	case r := <-wonLive:
		require.NoError(t, r.err)
		won = r.l
	case <-time.After(10 * time.Second):
		t.Fatal("the live candidate does not lead: the dead one was granted the leadership")
	}
	t.Logf("the live candidate leads %s after the leader resigned", time.Since(resigned).Round(time.Millisecond))
	assert.Equal(t, "live", won.Value)
	assert.Empty(t, won.Info().SessionID, "renewed out of its campaign's session")
	require.NoError(t, won.Extend(ctx, 0), "a lease of its own")
	var values []string
	for _, ld := range obs.waitToken(t, won.Token) {
		values = append(values, ld.Value)
	}
	assert.Equal(t, []string{"leader", "live"}, values, "the dead candidate never led")
	require.NoError(t, won.Resign(ctx))
}

// Under REQUIRE_FENCING_TOKEN, which refuses the renewal of a lease by its
// owner's acquire, a leadership won after waiting stays in its campaign's
// session: the session keeps it alive (Extend is refused, SESSION_BOUND),
// and is closed once the leader resigns. A leadership won at once, the
// lock being free, has a lease of its own.
func TestCampaignUnderRequireFencingTokenLeadsInItsSession(t *testing.T) {
	e := fencedWorker(t)
	ctx := ctxT(t)
	a, b := newClient(t, "fenced-elect-a", brokersOf(e)), newClient(t, "fenced-elect-b", brokersOf(e))
	const name = "fenced-election"
	first, err := client.NewElection(a, name).Campaign(ctx, "a", client.WithLease(3*time.Second))
	require.NoError(t, err)
	assert.Empty(t, first.Info().SessionID, "taken at once: no session")

	pos, _, done := campaignInLine(t, ctx, b, name, "b", client.WithLease(3*time.Second))
	require.Equal(t, 1, pos)
	replies := e.For(t).Watch(b.ReplyTopic())
	require.NoError(t, first.Resign(ctx))
	r := <-done
	require.NoError(t, r.err)
	second := r.l
	assert.Equal(t, "b", second.Value)
	session := second.Info().SessionID
	require.NotEmpty(t, session, "kept in its campaign's session")
	require.ErrorIs(t, second.Extend(ctx, 0), client.ErrSessionBound)
	require.NoError(t, second.Resign(ctx))
	replies.WaitEvent(t, "the campaign's session closed", func(r e2e.Received) bool {
		return r.Event.Type == topics.TypeSessionClosed && r.Event.SessionInfo != nil && r.Event.SessionInfo.SessionID == session
	})
	ld, err := client.NewElection(a, name).Leader(ctx)
	assert.ErrorIs(t, err, client.ErrNoLeader, "%+v", ld)
}

// A campaign whose grant in its session is revoked (an operator's lockctl
// revoke) before its renewal out of the session is applied has a late
// grant, ended by the worker: the renewal, a new acquire then, is refused
// LOCK_HELD, by the revoked lease's lock-delay or by the next candidate,
// granted by the revoke. The campaign goes on, waiting in line again, and
// leads once that lock-delay has passed, or once the next candidate
// resigns, with a token of its own.
func TestCampaignWhoseGrantIsRevokedBeforeItsRenewalCampaignsAgain(t *testing.T) {
	t.Run("in-the-lock-delay", func(t *testing.T) {
		l := leadsAfterItsGrantRevokedBeforeItsRenewal(t, env)
		assert.Empty(t, l.Info().SessionID, "renewed out of its campaign's session")
	})
	t.Run("behind-the-next-candidate", func(t *testing.T) {
		ctx := ctxT(t)
		name := uniq("election-revoked-grant")
		admin := newClient(t, uniq("revoked-grant-admin"))
		revoke, revoked := revokeBeforeTheRenewal(admin, name)
		a, b, c := newClient(t, uniq("revoked-grant-a")), newClient(t, uniq("revoked-grant-b"), revoke), newClient(t, uniq("revoked-grant-c"))
		replies := env.For(t).Watch(b.ReplyTopic())
		lead, err := client.NewElection(a, name).Campaign(ctx, "a", client.WithLease(3*time.Second))
		require.NoError(t, err)
		posB, queuedB, doneB := campaignInLine(t, ctx, b, name, "b", client.WithLease(3*time.Second))
		posC, _, doneC := campaignInLine(t, ctx, c, name, "c", client.WithLease(3*time.Second))
		require.Equal(t, []int{1, 2}, []int{posB, posC})

		require.NoError(t, lead.Resign(ctx))
		revokedToken := waitRevoked(t, revoked, replies, name).LockInfo.FencingToken
		var next *client.Leadership
		select {
		case r := <-doneC:
			require.NoError(t, r.err)
			next = r.l
		case <-time.After(10 * time.Second):
			t.Fatal("the revoke granted the next candidate nothing")
		}
		assert.Greater(t, next.Token, revokedToken)
		select {
		case p := <-queuedB:
			assert.Equal(t, 1, p, "in line again, behind the next candidate")
		case r := <-doneB:
			t.Fatalf("the campaign ended while the next candidate leads: %v", r.err)
		case <-time.After(10 * time.Second):
			t.Fatal("the campaign is not in line again")
		}
		require.NoError(t, next.Resign(ctx))
		l := leads(t, doneB)
		assert.Equal(t, "b", l.Value)
		assert.Greater(t, l.Token, next.Token)
		require.NoError(t, l.Resign(ctx))
	})
}

// Under REQUIRE_FENCING_TOKEN, a campaign's grant revoked before its
// renewal is applied is as much a late grant: the renewal, a new acquire
// by then, is refused LOCK_HELD in the lease's lock-delay, not
// INVALID_REQUEST, and the campaign goes on; it then leads in its new
// session (that renewal refused INVALID_REQUEST).
func TestCampaignUnderRequireFencingTokenWhoseGrantIsRevokedCampaignsAgain(t *testing.T) {
	l := leadsAfterItsGrantRevokedBeforeItsRenewal(t, fencedWorker(t))
	assert.NotEmpty(t, l.Info().SessionID, "kept in its campaign's session")
}

// leadsAfterItsGrantRevokedBeforeItsRenewal campaigns, on e's workers,
// with a lock-delay, behind a leader that resigns, has its grant revoked
// before its renewal, and returns its Leadership, which it won once the
// revoked lease's lock-delay had passed, in line again. The Leadership is
// resigned at the test's end.
func leadsAfterItsGrantRevokedBeforeItsRenewal(t *testing.T, e *e2e.Env) *client.Leadership {
	ctx := ctxT(t)
	const lockDelay = 2 * time.Second
	name := uniq("election-revoked-grant")
	admin := newClient(t, uniq("revoked-grant-admin"), brokersOf(e))
	revoke, revoked := revokeBeforeTheRenewal(admin, name)
	a, b := newClient(t, uniq("revoked-grant-a"), brokersOf(e)), newClient(t, uniq("revoked-grant-b"), brokersOf(e), revoke)
	replies := e.For(t).Watch(b.ReplyTopic())
	lead, err := client.NewElection(a, name).Campaign(ctx, "a", client.WithLease(3*time.Second))
	require.NoError(t, err)
	pos, queued, done := campaignInLine(t, ctx, b, name, "b", client.WithLease(3*time.Second), client.WithLockDelay(lockDelay))
	require.Equal(t, 1, pos)

	require.NoError(t, lead.Resign(ctx))
	end := waitRevoked(t, revoked, replies, name)
	select {
	case p := <-queued:
		assert.Equal(t, 1, p, "in line again, in the lock-delay")
	case r := <-done:
		t.Fatalf("the campaign ended in the revoked lease's lock-delay: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the campaign is not in line again")
	}
	l := leads(t, done)
	t.Cleanup(func() { _ = l.Resign(context.Background()) })
	assert.Equal(t, "b", l.Value)
	assert.Greater(t, l.Token, end.LockInfo.FencingToken)
	require.NotNil(t, l.Info().AcquiredAt)
	assert.False(t, l.Info().AcquiredAt.Before(end.OccurredAt.Add(lockDelay)), "granted once the lock-delay had passed (the worker's clock)")
	ld, err := client.NewElection(a, name).Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, l.Token, ld.Token, "the worker's leader")
	return l
}

// fencedWorker is an environment of its own whose worker has
// REQUIRE_FENCING_TOKEN.
func fencedWorker(t *testing.T) *e2e.Env {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "fenced", RequireFencingToken: true})
	return e
}

// brokersOf points a client at e's brokers.
func brokersOf(e *e2e.Env) func(*client.Config) {
	return func(cfg *client.Config) { cfg.Brokers = e.Brokers }
}

type campaignResult struct {
	l   *client.Leadership
	err error
}

// campaignInLine starts cl's campaign for value in election name, and
// returns once the campaign waits in line, with its position; its later
// positions (each time it is in line again) and its result come on the
// channels.
func campaignInLine(t *testing.T, ctx context.Context, cl *client.Client, name, value string,
	opts ...client.AcquireOption) (int, <-chan int, <-chan campaignResult) {
	t.Helper()
	queued := make(chan int, 8)
	done := make(chan campaignResult, 1)
	go func() {
		l, err := client.NewElection(cl, name).Campaign(ctx, value, append(opts, client.OnQueued(func(p int) {
			select {
			case queued <- p:
			default: // more than a test waits for: the campaign must not block
			}
		}))...)
		done <- campaignResult{l, err}
	}()
	select {
	case p := <-queued:
		return p, queued, done
	case r := <-done:
		t.Fatalf("%s not queued: %v", value, r.err)
	case <-time.After(10 * time.Second):
		t.Fatalf("%s not queued", value)
	}
	return 0, nil, nil
}

// leads is the Leadership a campaign returns, without an error.
func leads(t *testing.T, done <-chan campaignResult) *client.Leadership {
	t.Helper()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		return r.l
	case <-time.After(15 * time.Second):
		t.Fatal("the campaign does not lead")
		return nil
	}
}

// onCommand is a hook of a client's producer: it runs on every command the
// client sends, before the command is buffered, so that it may hold the
// command back while another client's command is applied.
type onCommand func(topics.Command)

func (h onCommand) OnProduceRecordBuffered(r *kgo.Record) {
	var cmd topics.Command
	if json.Unmarshal(r.Value, &cmd) == nil {
		h(cmd)
	}
}

// revokeBeforeTheRenewal is an option of a client whose campaign in
// election name is granted in its session: admin revokes the lock before
// the renewal out of the session (the first acquire without session_id
// after one with it) is sent, so the lock's partition applies the revoke
// first. The revoke's error comes on the channel.
func revokeBeforeTheRenewal(admin *client.Client, name string) (func(*client.Config), <-chan error) {
	var inLine atomic.Bool
	var once sync.Once
	revoked := make(chan error, 1)
	hook := onCommand(func(cmd topics.Command) {
		if cmd.Operation != topics.OpAcquire || cmd.LockName != name {
			return
		}
		if cmd.SessionID != "" {
			inLine.Store(true)
			return
		}
		if inLine.Load() {
			once.Do(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := admin.Revoke(ctx, name, "", "revoked before the renewal")
				revoked <- err
			})
		}
	})
	return func(cfg *client.Config) { cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.WithHooks(hook)) }, revoked
}

// waitRevoked waits for the revoke of revokeBeforeTheRenewal and for its
// lock.revoked on the campaign's reply topic, and returns that event.
func waitRevoked(t *testing.T, revoked <-chan error, replies *e2e.Watcher, name string) topics.Event {
	t.Helper()
	select {
	case err := <-revoked:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("no renewal sent")
	}
	ev := replies.WaitEvent(t, "the grant's lock.revoked", func(r e2e.Received) bool {
		return r.Event.Type == topics.TypeRevoked && r.Event.LockInfo != nil && r.Event.LockInfo.LockName == name
	})
	return ev.Event
}
