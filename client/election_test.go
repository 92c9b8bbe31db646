package client_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// observed collects what Observe delivers.
type observed struct {
	mu      sync.Mutex
	leaders []client.Leader
	more    chan struct{}
	done    chan struct{}
}

func observe(t *testing.T, ctx context.Context, e *client.Election) *observed {
	t.Helper()
	ch, err := e.Observe(ctx)
	require.NoError(t, err)
	o := &observed{more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for ld := range ch {
			o.mu.Lock()
			o.leaders = append(o.leaders, ld)
			o.mu.Unlock()
			select {
			case o.more <- struct{}{}:
			default:
			}
		}
	}()
	return o
}

// waitToken waits until the leader of token has been observed, and returns
// every leader observed so far.
func (o *observed) waitToken(t *testing.T, token int64) []client.Leader {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		o.mu.Lock()
		got := append([]client.Leader(nil), o.leaders...)
		o.mu.Unlock()
		for _, ld := range got {
			if ld.Token == token {
				return got
			}
		}
		select {
		case <-o.more:
		case <-deadline:
			t.Fatalf("leader of token %d not observed; got %+v", token, got)
		}
	}
}

// term is one leadership on the database's clock, which orders the
// worker's grants and ends: a holder's own clock notices both late.
type term struct {
	who        string
	token      int64
	start, end time.Time
}

// Three candidates: the leadership moves when the leader resigns, when its
// process dies (its client closes without resigning: the lease runs out),
// and is lost when its lease is ended behind its back. Judged by fencing
// tokens: each leader's token is greater than the one before, and no term
// starts before the previous one ended (a grant no earlier than the
// release or expiry before it, on the database's clock). Observe reports each leader once,
// in token order, with its value.
func TestElectionLeadershipMoves(t *testing.T) {
	ctx := ctxT(t)
	name := uniq("election-moves")
	const lease = time.Second
	a, b, c := newClient(t, "elect-a"), newClient(t, "elect-b"), newClient(t, "elect-c")
	observer := newClient(t, "elect-observer")
	watched := client.NewElection(observer, name)
	obs := observe(t, ctx, watched)

	// a resigns rather than lapses: a longer lease keeps its renewals in
	// time on a loaded box under -race (a 1 s one once missed).
	la, err := client.NewElection(a, name).Campaign(ctx, "a", client.WithLease(3*lease))
	require.NoError(t, err)
	terms := []term{{who: "a", token: la.Token, start: la.Info().AcquiredAt.Time}}
	ld, err := watched.Leader(ctx)
	require.NoError(t, err)
	assert.Equal(t, "a", ld.Value)
	assert.Equal(t, la.Token, ld.Token)
	assert.Equal(t, la.Owner, ld.Owner)
	assert.Equal(t, name, ld.Name)

	// 3 s too: a waiting candidate's session lives by keep-alives as a
	// leader does, and one of a 1 s TTL missed on a loaded box loses its
	// place in line.
	posB, _, wonB := campaignInLine(t, ctx, b, name, "b", client.WithLease(3*lease))
	posC, _, wonC := campaignInLine(t, ctx, c, name, "c", client.WithLease(3*lease))
	assert.Equal(t, []int{1, 2}, []int{posB, posC}, "candidates wait in line")
	obs.waitToken(t, la.Token)

	// The leader resigns: the next in line leads.
	released := env.For(t).Watch(env.Names.Released)
	require.NoError(t, la.Resign(ctx))
	terms[0].end = released.WaitEvent(t, "a's lock.released", func(r e2e.Received) bool {
		li := r.Event.LockInfo
		return li != nil && li.LockName == name && li.FencingToken == la.Token
	}).Event.OccurredAt.Time
	lb := leads(t, wonB)
	terms = append(terms, term{who: "b", token: lb.Token, start: lb.Info().AcquiredAt.Time})
	obs.waitToken(t, lb.Token)

	// b's process dies: nothing resigns or extends, the lease runs out.
	expired := env.For(t).Watch(env.Names.Expired)
	died := time.Now()
	require.NoError(t, b.Close())
	lc := leads(t, wonC)
	terms = append(terms, term{who: "c", token: lc.Token, start: lc.Info().AcquiredAt.Time})
	t.Logf("c leads %s after b died (lease %s)", time.Since(died).Round(time.Millisecond), 3*lease)
	// A dead leader is replaced once its lease ends: on the database's
	// clock, b's expires_at (its lock.expired tells it) comes before c's
	// acquired_at (checked with the other terms below), and c's token is
	// greater. How soon after (the contract's 1 s) is lockbench's to
	// measure: a loaded machine delays the scheduler's transaction, which
	// this test must not fail for.
	bEnd := expired.WaitEvent(t, "b's lock.expired", func(r e2e.Received) bool {
		li := r.Event.LockInfo
		return li != nil && li.LockName == name && li.FencingToken == lb.Token
	}).Event.LockInfo.ExpiresAt.Time
	terms[1].end = bEnd
	t.Logf("c granted %s after b's lease ended", terms[2].start.Sub(bEnd).Round(time.Millisecond))
	obs.waitToken(t, lc.Token)

	// c's lease is ended behind its back (an operator breaking it): c learns
	// it lost the leadership at its next keep-alive, and nobody leads.
	_, err = observer.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: name, OwnerID: lc.Owner})
	require.NoError(t, err)
	select {
	case <-lc.Lost():
	case <-time.After(3*lease + time.Second):
		t.Fatal("the leader did not learn of its loss")
	}
	assert.ErrorIs(t, lc.Context().Err(), context.Canceled)
	assert.ErrorIs(t, lc.Resign(ctx), client.ErrLeaseLost, "resigning a lost leadership returns the loss")
	_, err = watched.Leader(ctx)
	assert.ErrorIs(t, err, client.ErrNoLeader)

	for i := 1; i < len(terms); i++ {
		prev, cur := terms[i-1], terms[i]
		assert.Greater(t, cur.token, prev.token, "%s's token after %s's", cur.who, prev.who)
		assert.False(t, cur.start.Before(prev.end), "%s led from %s, before %s's term ended at %s", cur.who, cur.start, prev.who, prev.end)
	}
	got := obs.waitToken(t, lc.Token)
	var values []string
	for i, ld := range got {
		values = append(values, ld.Value)
		if i > 0 {
			assert.Greater(t, ld.Token, got[i-1].Token, "observed in token order")
		}
	}
	assert.Equal(t, []string{"a", "b", "c"}, values, "each leader observed once")
}

// Bad input and the unhappy paths of a campaign.
func TestElectionUnhappyPaths(t *testing.T) {
	ctx := ctxT(t)
	cl := newClient(t, "elect-unhappy")
	name := uniq("election-unhappy")
	e := client.NewElection(cl, name)

	t.Run("no leader yet", func(t *testing.T) {
		_, err := e.Leader(ctx)
		assert.ErrorIs(t, err, client.ErrNoLeader)
		assert.ErrorContains(t, err, "its lock is free")
	})

	t.Run("value too large", func(t *testing.T) {
		// On a broker without a worker: a campaign sent would never be
		// answered (5 s, then the test fails on the error), and the
		// broker counts what it receives.
		c, produced := unanswered(t, "elect-too-large")
		e := client.NewElection(c, name)
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := e.Campaign(ctx, strings.Repeat("x", 4096))
		assert.ErrorIs(t, err, client.ErrInvalidRequest)
		assert.ErrorContains(t, err, "the value is 4096 bytes, 4109 as owner_metadata, over the contract's limit of 4096")
		// Escaping counts: 2,100 quotes are 4,200 bytes of JSON.
		_, err = e.Campaign(ctx, strings.Repeat(`"`, 2100))
		assert.ErrorIs(t, err, client.ErrInvalidRequest)
		assert.Zero(t, produced(), "refused without a round trip")
	})

	t.Run("values within the limit", func(t *testing.T) {
		for _, value := range []string{
			strings.Repeat("<&>", 1000), // HTML escaping does not count: 3,000 bytes as they are, 18,000 escaped
			strings.Repeat("v", topics.MaxOwnerMetadataBytes-len(`{"value": ""}`)), // the largest, as jsonb writes it out
		} {
			l, err := e.Campaign(ctx, value)
			require.NoError(t, err)
			ld, err := e.Leader(ctx)
			require.NoError(t, err)
			assert.Equal(t, value, ld.Value)
			assert.JSONEq(t, string(client.CampaignMetadata(value)), string(l.Info().OwnerMetadata), "what CampaignMetadata says is sent")
			require.NoError(t, l.Resign(ctx))
			require.NoError(t, l.Resign(ctx), "resigning twice is a no-op")
			assert.ErrorIs(t, context.Cause(l.Context()), client.ErrReleased)
		}
		_, err := e.Leader(ctx)
		assert.ErrorIs(t, err, client.ErrNoLeader)
		assert.ErrorContains(t, err, "its lock is released")
	})

	t.Run("options that do not apply", func(t *testing.T) {
		for _, opt := range []client.AcquireOption{client.WithMode(client.Shared), client.WithLimit(2),
			client.WithMetadata(map[string]int{"k": 1}), client.WithoutKeepAlive(), client.WithWait(time.Second),
			client.WithMaxHold(time.Second)} {
			_, err := e.Campaign(ctx, "x", opt)
			assert.ErrorIs(t, err, client.ErrInvalidRequest)
			assert.ErrorContains(t, err, "not apply")
		}
		s, err := cl.NewSession(ctx, 10*time.Second)
		require.NoError(t, err)
		defer s.Close(ctx)
		_, err = e.Campaign(ctx, "x", client.WithSession(s))
		assert.ErrorIs(t, err, client.ErrInvalidRequest)
		assert.ErrorContains(t, err, "WithSession does not apply")
	})

	t.Run("campaign of the leading owner resumes", func(t *testing.T) {
		l, err := e.Campaign(ctx, "first", client.WithOwner("stable-owner"))
		require.NoError(t, err)
		again, err := e.Campaign(ctx, "second", client.WithOwner("stable-owner"))
		require.NoError(t, err)
		assert.Equal(t, l.Token, again.Token, "the same leadership")
		assert.Equal(t, "first", again.Value, "a renewal keeps the value it led with")
		ld, err := e.Leader(ctx)
		require.NoError(t, err)
		assert.Equal(t, "first", ld.Value, "no Proclaim: the value led with stays")
		require.NoError(t, again.Resign(ctx))
		// Both handles were the one leadership: the other is lost.
		select {
		case <-l.Lost():
		case <-time.After(5 * time.Second):
			t.Fatal("the other handle of the leadership is not lost")
		}
		assert.ErrorIs(t, l.Resign(ctx), client.ErrLeaseLost)
	})

	t.Run("a leader that campaigns again waits behind itself", func(t *testing.T) {
		first, err := e.Campaign(ctx, "v1")
		require.NoError(t, err)
		p, _, done := campaignInLine(t, ctx, cl, name, "v2")
		assert.Equal(t, 1, p, "a new candidate, in line behind its own leadership")
		require.NoError(t, first.Resign(ctx))
		l := leads(t, done)
		assert.Greater(t, l.Token, first.Token, "a new leadership")
		assert.Equal(t, "v2", l.Value)
		require.NoError(t, l.Resign(ctx))
	})

	t.Run("bad name", func(t *testing.T) {
		_, err := client.NewElection(cl, "").Campaign(ctx, "x")
		assert.ErrorIs(t, err, client.ErrInvalidRequest)
	})

	t.Run("context ends while campaigning", func(t *testing.T) {
		leader, err := e.Campaign(ctx, "leader")
		require.NoError(t, err)
		other := newClient(t, "elect-unhappy-other")
		cctx, cancel := context.WithCancel(ctx)
		p, _, done := campaignInLine(t, cctx, other, name, "quitter")
		require.Equal(t, 1, p)
		cancel()
		err = (<-done).err
		assert.ErrorIs(t, err, context.Canceled)
		assert.ErrorContains(t, err, "campaigning in election")

		// A deadline ends a campaign the same way.
		dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer dcancel()
		start := time.Now()
		_, err = client.NewElection(other, name).Campaign(dctx, "impatient")
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		// Not waiting for the leader, who holds on for the test's 30 s:
		// 10 s tells the two apart with room for a busy machine.
		assert.Less(t, time.Since(start), 10*time.Second)

		// The quitters were withdrawn: once the leader resigns, nobody leads.
		require.NoError(t, leader.Resign(ctx))
		_, err = e.Leader(ctx)
		assert.ErrorIs(t, err, client.ErrNoLeader)
	})

	t.Run("observe ends with its context and with the client", func(t *testing.T) {
		octx, cancel := context.WithCancel(ctx)
		ch, err := e.Observe(octx)
		require.NoError(t, err)
		cancel()
		for range ch { // drained until closed
		}
		closing := newClient(t, "elect-unhappy-closing")
		ch, err = client.NewElection(closing, name).Observe(ctx)
		require.NoError(t, err)
		require.NoError(t, closing.Close())
		for range ch {
		}
		_, err = client.NewElection(closing, name).Observe(ctx)
		assert.ErrorIs(t, err, client.ErrClosed)
	})
}

// A campaign WithOwner given up before any reply is withdrawn, as for a
// generated owner: it can never be granted the leadership later.
func TestCampaignWithOwnerGivenUpBeforeReplyIsWithdrawn(t *testing.T) {
	givenUpBeforeReply(t, "elect-given-up", func(c *client.Client, lock string) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := client.NewElection(c, lock).Campaign(ctx, "v", client.WithOwner("candidate"))
			return err
		}
	})
}
