package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/omninode/lockworker/client"
)

// ElectionConfig shapes an Election load. Zero fields take the defaults in
// brackets.
type ElectionConfig struct {
	Brokers []string
	// Name of the election [chaos-leader-<random>].
	Name string
	// Candidates campaign at once [3], each as its own client (process).
	Candidates int
	// Lease of a leadership [1 s]; a leader holds office a random time up
	// to Term [600 ms], writing to the fenced resource every Write [50 ms].
	Lease, Term, Write time.Duration
	// One term in DieEvery [3] ends with its candidate dying: its client
	// closes without resigning, and a new one campaigns in its place.
	DieEvery int
}

func (c *ElectionConfig) defaults() {
	if c.Name == "" {
		c.Name = fmt.Sprintf("chaos-leader-%08x", rand.Uint32())
	}
	if c.Candidates <= 0 {
		c.Candidates = 3
	}
	if c.DieEvery <= 0 {
		c.DieEvery = 3
	}
	for p, v := range map[*time.Duration]time.Duration{&c.Lease: time.Second, &c.Term: 600 * time.Millisecond, &c.Write: 50 * time.Millisecond} {
		if *p <= 0 {
			*p = v
		}
	}
}

// Term is one leadership as its candidate saw it: from Campaign's return to
// its resignation, its death, or the moment it learned the lead was lost.
type Term struct {
	Candidate  string
	Token      int64
	Start, End time.Time
	// How it ended: "resigned", "died" or "lost".
	How string
}

// Write is one write to the fenced resource: by a leader, with its token.
type Write struct {
	Candidate string
	Token     int64
}

// Election runs candidates in one election, each holding office for a
// while and resigning or dying, and records their terms and their writes to
// a resource guarded by fencing tokens.
type Election struct {
	cfg    ElectionConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	terms  []Term
	writes []Write // in the order the resource took them
	errs   []error // campaigns that failed (and were retried)
}

// StartElection starts the candidates.
func StartElection(cfg ElectionConfig) *Election {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	e := &Election{cfg: cfg, cancel: cancel}
	for i := range cfg.Candidates {
		e.wg.Go(func() { e.candidate(ctx, fmt.Sprintf("c%d", i)) })
	}
	return e
}

// candidate campaigns, holds office, resigns or dies, and campaigns again,
// until ctx ends.
func (e *Election) candidate(ctx context.Context, name string) {
	var c *client.Client
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for terms := 1; ctx.Err() == nil; {
		if c == nil {
			var err error
			c, err = client.New(ctx, client.Config{Brokers: e.cfg.Brokers, Requester: "chaos-" + name, ReplyTimeout: time.Second})
			if err != nil {
				e.fail(fmt.Errorf("%s: %w", name, err))
				sleep(ctx, time.Second)
				continue
			}
		}
		l, err := client.NewElection(c, e.cfg.Name).Campaign(ctx, name, client.WithLease(e.cfg.Lease))
		if err != nil {
			if ctx.Err() == nil {
				e.fail(fmt.Errorf("%s: %w", name, err))
			}
			continue
		}
		t := Term{Candidate: name, Token: l.Token, Start: time.Now()}
		die := terms%e.cfg.DieEvery == 0
		terms++
		t.How = e.hold(ctx, l, rand.N(e.cfg.Term)+e.cfg.Write)
		switch {
		case t.How == "lost":
			t.End = time.Now()
		case die:
			// The process dies: nothing resigns or extends any more. Its
			// term lasts, by its own reckoning, until it would have learned
			// of the loss.
			c.Close()
			c = nil
			<-l.Lost()
			t.End, t.How = time.Now(), "died"
		default:
			t.End, t.How = time.Now(), "resigned"
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			// A resignation that reaches the worker after the lease ran out
			// (while the lock's partition moved) is refused: the term had
			// ended anyway.
			err := l.Resign(rctx)
			if err != nil && !errors.Is(err, client.ErrLeaseLost) && !errors.Is(err, client.ErrNotOwner) && !errors.Is(err, client.ErrNotHeld) {
				e.fail(fmt.Errorf("%s resigning: %w", name, err))
			}
			cancel()
		}
		e.mu.Lock()
		e.terms = append(e.terms, t)
		e.mu.Unlock()
	}
}

// hold writes to the fenced resource every Write for d while leader. It
// returns "lost" if the leadership was lost meanwhile, else "".
func (e *Election) hold(ctx context.Context, l *client.Leadership, d time.Duration) string {
	end := time.After(d)
	tick := time.NewTicker(e.cfg.Write)
	defer tick.Stop()
	for {
		select {
		case <-l.Lost():
			return "lost"
		case <-ctx.Done():
			return ""
		case <-end:
			return ""
		case <-tick.C:
			// Only while the leadership is still in force by the leader's
			// own reckoning, as a careful leader would.
			if l.Context().Err() != nil {
				return "lost"
			}
			e.mu.Lock()
			e.writes = append(e.writes, Write{Candidate: l.Value, Token: l.Token})
			e.mu.Unlock()
		}
	}
}

func (e *Election) fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

// Stop ends the campaigns and terms and waits for the candidates; calling
// it again does nothing more.
func (e *Election) Stop() {
	e.cancel()
	e.wg.Wait()
}

// Terms returns the terms so far, and the writes and campaign errors.
func (e *Election) Terms() ([]Term, []Write, []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.terms), slices.Clone(e.writes), slices.Clone(e.errs)
}

// CheckTerms returns an error for every time two candidates led at once, by
// their own reckoning or by the fenced resource: a term that started
// before the previous one ended, tokens that do not rise from term to term,
// or a write with a token below one the resource took before.
func CheckTerms(terms []Term, writes []Write) error {
	var errs []error
	fail := func(format string, args ...any) {
		if len(errs) < maxViolations {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	ts := slices.Clone(terms)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Start.Before(ts[j].Start) })
	for i := 1; i < len(ts); i++ {
		prev, cur := ts[i-1], ts[i]
		if cur.Token <= prev.Token {
			fail("term of %s (token %d, from %s) after the term of %s (token %d): tokens must rise from leader to leader",
				cur.Candidate, cur.Token, stamp(cur.Start), prev.Candidate, prev.Token)
		}
		if cur.Start.Before(prev.End) {
			fail("two leaders at once: %s (token %d) from %s while %s (token %d) led until %s (%s)",
				cur.Candidate, cur.Token, stamp(cur.Start), prev.Candidate, prev.Token, stamp(prev.End), prev.How)
		}
	}
	var newest int64
	for _, w := range writes {
		if w.Token < newest {
			fail("fenced write by %s with token %d after token %d's: a deposed leader acted", w.Candidate, w.Token, newest)
		}
		newest = max(newest, w.Token)
	}
	return errors.Join(errs...)
}
