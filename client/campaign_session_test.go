package client_test

import (
	"context"
	"net"
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

	campaign := func(cl *client.Client, value string, opts ...client.AcquireOption) (<-chan *client.Leadership, int) {
		queued := make(chan int, 1)
		won := make(chan *client.Leadership, 1)
		go func() {
			// The dead one's campaign ends with the test's context.
			l, _ := client.NewElection(cl, name).Campaign(ctx, value,
				append(opts, client.OnQueued(func(p int) { queued <- p }))...)
			won <- l
		}()
		select {
		case p := <-queued:
			return won, p
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not queued", value)
			return nil, 0
		}
	}
	// Granted, the dead one would keep the next one out for its lease and
	// a lock-delay longer than the test.
	_, posDead := campaign(dying, "dead", client.WithLease(ttl), client.WithLockDelay(time.Minute))
	wonLive, posLive := campaign(live, "live", client.WithLease(3*time.Second))
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
	case won = <-wonLive:
	case <-time.After(10 * time.Second):
		t.Fatal("the live candidate does not lead: the dead one was granted the leadership")
	}
	require.NotNil(t, won)
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
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "fenced", RequireFencingToken: true})
	ctx := ctxT(t)
	fenced := func(requester string) *client.Client {
		c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: requester})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a, b := fenced("fenced-elect-a"), fenced("fenced-elect-b")
	const name = "fenced-election"
	first, err := client.NewElection(a, name).Campaign(ctx, "a", client.WithLease(3*time.Second))
	require.NoError(t, err)
	assert.Empty(t, first.Info().SessionID, "taken at once: no session")

	queued := make(chan int, 1)
	type result struct {
		l   *client.Leadership
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := client.NewElection(b, name).Campaign(ctx, "b", client.WithLease(3*time.Second),
			client.OnQueued(func(p int) { queued <- p }))
		done <- result{l, err}
	}()
	require.Equal(t, 1, <-queued)
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
