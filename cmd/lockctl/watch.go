package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/topics"
)

// watchFlags is `lockctl watch`: follow the lifecycle topics, one line per
// event, or with --lock one lock's revisions, until interrupted.
func (c *cli) watchFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "only this lock (with --namespace, if given): its state now, then each change (a transaction's last revision), from the lock state topic")
	fromBeginning := fs.Bool("from-beginning", false, "start at the oldest retained events instead of new ones only (not with --lock)")
	// Without --lock, --namespace (a flag of every command) keeps the
	// events of that namespace's locks only.
	return func(ctx context.Context, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		if *lock != "" {
			if *fromBeginning {
				return usageError{"--from-beginning does not apply with --lock: a lock's watch starts from its state now"}
			}
			return c.watchLock(ctx, *lock)
		}
		seeds, opts, err := c.kafka()
		if err != nil {
			return err
		}
		pctx, cancel := c.withTimeout(ctx)
		defer cancel()
		sub, err := client.NewSubscriber(pctx, client.SubscriberConfig{Brokers: seeds, KafkaOpts: opts, FromEnd: !*fromBeginning,
			Logger: &warnLogger{c: c}})
		if err != nil {
			return c.timedOut(pctx, err)
		}
		defer sub.Close()
		names := c.names()
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		lifecycle := []string{names.Acquired, names.Released, names.Expired, names.Revoked}
		// Before the subscriptions, which may warn from then on.
		if !c.json {
			of := ""
			if c.namespace != "" {
				of = " for the locks of namespace " + c.namespace
			}
			fmt.Fprintf(c.stderr, "lockctl: watching %s%s (Ctrl-C to stop)\n", strings.Join(lifecycle, ", "), of)
		}
		for _, topic := range lifecycle {
			msgs, err := sub.Subscribe(ctx, topic)
			if err != nil {
				return fmt.Errorf("subscribing to %s: %w", topic, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for msg := range msgs {
					ev, err := client.DecodeMessage(msg)
					msg.Ack()
					if err != nil {
						// Said, as watch --lock and locks say theirs,
						// rather than an event missing in silence.
						r, _ := kafkapubsub.RecordFromContext(msg.Context())
						c.warnf("skipped the record of %s at partition %d, offset %d: %v", topic, r.Partition, r.Offset, err)
						continue
					}
					if !c.watched(ev) {
						continue
					}
					mu.Lock()
					c.printWatched(ev, msg)
					mu.Unlock()
				}
			}()
		}
		wg.Wait() // the subscriptions end with ctx
		return nil
	}
}

// watchLock prints the lock's revisions as client.Watch delivers them, and
// warns on stderr when reading the lock state topic keeps failing after the
// setup (once a failure lasted client.OnFetchError's grace, once for as
// long as it lasts; the watch retries), in the lifecycle watch's format,
// and says when it reads again.
func (c *cli) watchLock(ctx context.Context, lock string) error {
	cl, err := c.reader(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	// The watch's reading goroutine warns; held until the header is out.
	c.stderrMu.Lock()
	warn := client.OnFetchError(func(err error) {
		if err != nil {
			c.warnf("%v", err)
		} else {
			c.linef("reading %s again", c.names().State)
		}
	})
	revs, err := cl.Watch(ctx, lock, warn) // its setup is bounded by the client's request timeout
	if err != nil {
		c.stderrMu.Unlock()
		return err
	}
	if !c.json {
		fmt.Fprintf(c.stderr, "lockctl: watching %s on %s (Ctrl-C to stop)\n", topics.LockKey(c.namespace, lock), c.names().State)
	}
	c.stderrMu.Unlock()
	for lr := range revs {
		c.printRevision(lr)
	}
	return nil
}

// printRevision prints one lock state: a line, or its record as JSON.
func (c *cli) printRevision(lr client.LockRevision) {
	if c.json {
		var b []byte
		switch {
		case lr.Deleted:
			b, _ = json.Marshal(lockLine(lr, "deleted", true))
		case lr.Unreadable != nil:
			b, _ = json.Marshal(lockLine(lr, "unreadable", lr.Unreadable.Error()))
		case lr.Record.ChangedAt.IsZero():
			// A lock with no state (revision 0): nothing changed it, and
			// the zero time would read as year 1. The embedded record's
			// changed_at is shadowed, the other fields keep their order.
			b, _ = json.Marshal(struct {
				topics.LockState
				ChangedAt *topics.Time `json:"changed_at,omitempty"`
			}{LockState: lr.Record})
		default:
			b, _ = json.Marshal(lr.Record)
		}
		fmt.Fprintln(c.stdout, string(b))
		return
	}
	key := topics.LockKey(lr.Namespace, lr.Name)
	if lr.Deleted {
		fmt.Fprintf(c.stdout, "%s deleted by cleanup\n", key)
		return
	}
	if lr.Unreadable != nil {
		fmt.Fprintf(c.stdout, "%s unknown: its newest record cannot be read: %s\n", key, safe(lr.Unreadable.Error()))
		return
	}
	var b strings.Builder
	if !lr.ChangedAt.IsZero() {
		fmt.Fprintf(&b, "%s ", lr.ChangedAt.Format(topics.TimeLayout))
	}
	fmt.Fprintf(&b, "%s rev=%d %s", key, lr.Revision, lr.Status)
	if lr.Operation != "" {
		fmt.Fprintf(&b, " by=%s", lr.Operation)
	}
	if lr.Limit > 1 {
		fmt.Fprintf(&b, " limit=%d", lr.Limit)
	}
	for _, h := range lr.Holders {
		fmt.Fprintf(&b, " holder=%s/%s/token=%d/expires=%s", safe(h.Owner), h.Mode, h.Token, h.ExpiresAt.Format(topics.TimeLayout))
	}
	if lr.Waiters > 0 {
		fmt.Fprintf(&b, " waiters=%d", lr.Waiters)
	}
	if !lr.DelayUntil.IsZero() {
		fmt.Fprintf(&b, " delay_until=%s", lr.DelayUntil.Format(topics.TimeLayout))
	}
	fmt.Fprintln(c.stdout, b.String())
}

// lockLine is the JSON of a lock without a record to print: its name, its
// namespace when not empty (as a record has it), and what became of it.
func lockLine(lr client.LockRevision, field string, value any) map[string]any {
	m := map[string]any{"lock_name": lr.Name, field: value}
	if lr.Namespace != "" {
		m["namespace"] = lr.Namespace
	}
	return m
}

// locksFlags is `lockctl locks`: the table of locks, read from the lock
// state topic.
func (c *cli) locksFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	all := fs.Bool("all", false, "every namespace (default: --namespace's locks only)")
	return func(ctx context.Context, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		cl, err := c.reader(ctx)
		if err != nil {
			return err
		}
		defer cl.Close()
		lctx, cancel := c.withTimeout(ctx)
		defer cancel()
		table, err := cl.Locks(lctx)
		err = c.timedOut(lctx, err)
		var unreadable *client.UnreadableStateError
		switch {
		case err == nil, errors.As(err, &unreadable):
		case errors.As(err, new(timeoutPassed)) && !errors.Is(err, client.ErrUnreachable):
			// The brokers answer, but the topic took longer than
			// --timeout to read: exit 1, not 3 (unreachable).
			return fmt.Errorf("%w (a longer one reads a longer topic)", err)
		default:
			return err
		}
		for _, lr := range table {
			if *all || lr.Namespace == c.namespace {
				c.printRevision(lr)
			}
		}
		if unreadable != nil {
			// The table of the rest, and a warning of the locks left out
			// rather than shown stale: those that may be of the namespace
			// shown (a key with "/" whose record names no lock may be of
			// the default namespace too).
			var keys []string
			var first error
			for _, l := range unreadable.Locks {
				if *all || l.InNamespace(c.namespace) {
					if first == nil {
						first = l.Err
					}
					if k := safe(l.Key); !slices.Contains(keys, k) { // a key is any bytes
						keys = append(keys, k)
					}
				}
			}
			if len(keys) > 0 {
				c.warnf("%d lock key(s) left out (%s): their newest record of %s is unreadable (first: %v)",
					len(keys), strings.Join(keys, ", "), unreadable.Topic, safe(first.Error()))
			}
		}
		return nil
	}
}

// watched reports whether watch prints a lifecycle event: with --namespace,
// only the events of that namespace's locks.
func (c *cli) watched(ev topics.Event) bool {
	return c.namespace == "" || ev.LockInfo != nil && ev.LockInfo.Namespace == c.namespace
}

// warnLogger is the lifecycle subscriber's logger: it writes its errors
// (a fetch refused, as TOPIC_AUTHORIZATION_FAILED, which the subscriber
// logs once until it changes) to stderr as warnings (c.warnf), where
// watch would otherwise wait in silence; stdout keeps the events alone.
// The rest (debug, info) is not written.
type warnLogger struct {
	c      *cli
	fields watermill.LogFields
}

func (l *warnLogger) Error(msg string, err error, fields watermill.LogFields) {
	var b strings.Builder
	b.WriteString(msg)
	all := l.fields.Add(fields)
	keys := slices.Sorted(maps.Keys(all))
	sep := " ("
	for _, k := range keys {
		if v := fmt.Sprint(all[k]); v != "" {
			fmt.Fprintf(&b, "%s%s=%s", sep, k, v)
			sep = " "
		}
	}
	if sep == " " {
		b.WriteString(")")
	}
	if err != nil {
		fmt.Fprintf(&b, ": %v", err)
	}
	l.c.warnf("%s", b.String())
}

func (l *warnLogger) Info(string, watermill.LogFields)  {}
func (l *warnLogger) Debug(string, watermill.LogFields) {}
func (l *warnLogger) Trace(string, watermill.LogFields) {}

func (l *warnLogger) With(fields watermill.LogFields) watermill.LoggerAdapter {
	w := *l
	w.fields = l.fields.Add(fields)
	return &w
}

func (c *cli) printWatched(ev topics.Event, msg *message.Message) {
	if c.json {
		fmt.Fprintln(c.stdout, string(msg.Payload))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-13s", ev.OccurredAt.Format(topics.TimeLayout), ev.Type)
	if li := ev.LockInfo; li != nil {
		fmt.Fprintf(&b, " %s owner=%s token=%d", topics.LockKey(li.Namespace, li.LockName), safe(li.OwnerID), li.FencingToken)
		if ev.Type == topics.TypeAcquired && li.ExpiresAt != nil {
			fmt.Fprintf(&b, " expires=%s", li.ExpiresAt.Format(topics.TimeLayout))
		}
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", ev.Reason)
	}
	fmt.Fprintln(c.stdout, b.String())
}
