package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// acquireSpec is the flags of acquire and run.
type acquireSpec struct {
	lock, owner, metadata *string
	lease, wait           seconds
	lockDelay, maxHold    seconds
	shared                *bool
	limit                 count
}

// ownerHelp is --owner's help of acquire: the worker takes an acquire of
// the holder's owner for a renewal, which keeps the lease's lock_delay and
// max_hold (handlers/rules: Acquire).
const ownerHelp = "owner id (default: <requester>-<random>). An owner that holds the lock already is\n" +
	"granted it again at once (a renewal, same token, keeping that lease's lock-delay and\n" +
	"max-hold whatever --lock-delay and --max-hold say now): never give one id to two live\n" +
	"processes"

// resumeHelp ends run's and elect's --owner help: a run resuming after a
// killed lockctl is granted at once, while what the killed one's COMMAND
// started may run on: elsewhere than Linux all of it; on Linux, where the
// shim SIGKILLs it, what the shim may not signal (shim_linux.go).
const resumeHelp = ". To resume after a restart, make sure what the earlier COMMAND ran is gone\n" +
	"first: a lockctl that was killed (SIGKILL, out of memory) stops nothing itself; on Linux\n" +
	"COMMAND and all it started are SIGKILLed as it dies, but for what lockctl's user may not\n" +
	"signal (a setuid binary: sudo) and what COMMAND left running when it exited by itself;\n" +
	"elsewhere they run on; and no lock-delay covers what is left"

// addAcquireFlags adds the flags of acquire and run; lockDelayDefault says
// what --lock-delay is when not given.
func addAcquireFlags(fs *flag.FlagSet, ownerHelp, leaseHelp, waitHelp, lockDelayDefault string) *acquireSpec {
	a := &acquireSpec{
		lock:     fs.String("lock", "", "lock name (required)"),
		owner:    fs.String("owner", "", ownerHelp),
		metadata: fs.String("metadata", "", "owner_metadata, a JSON object"),
		shared:   fs.Bool("shared", false, "hold the lock in shared mode (a read lock: readers together, never beside a writer)"),
	}
	fs.Var(&a.limit, "limit", "make the lock a counting semaphore of `N` holders (every holder must give the same N)")
	fs.Var(&a.lease, "lease", leaseHelp)
	fs.Var(&a.wait, "wait", waitHelp)
	addLockDelayFlag(fs, &a.lockDelay, lockDelayDefault)
	fs.Var(&a.maxHold, "max-hold", "cap on the lease's total hold time (a `duration`): no extension carries it past its grant + this (default: none)")
	return a
}

// addLockDelayFlag adds --lock-delay, whose default def describes.
func addLockDelayFlag(fs *flag.FlagSet, d *seconds, def string) {
	fs.Var(d, "lock-delay", "after the lease ends otherwise than by a release (expiry, revoke), grant the lock to nobody\n"+
		"for this long (a `duration`, 0..60s; default "+def+").\n"+
		"A renewal (--owner naming the lease's holder) keeps the lease's own lock-delay: this one\n"+
		"then does not apply")
}

// options checks the flags as the worker would and returns the acquire's
// options.
func (c *cli) acquireOptions(a *acquireSpec) ([]client.AcquireOption, error) {
	if err := errors.Join(positive("lease", a.lease), positiveCount("limit", a.limit)); err != nil {
		return nil, err
	}
	opts, err := metadataOpt(*a.metadata)
	if err != nil {
		return nil, err
	}
	mode := client.Exclusive
	if *a.shared {
		mode = client.Shared
	}
	if err := c.precheck(topics.Command{Operation: topics.OpAcquire, LockName: *a.lock, OwnerID: *a.owner,
		LeaseDuration: a.lease.d.Seconds(), WaitTimeout: a.wait.d.Seconds(), OwnerMetadata: []byte(*a.metadata),
		Mode: string(mode), Limit: a.limit.n, LockDelay: a.lockDelay.d.Seconds(), MaxHold: a.maxHold.d.Seconds()}); err != nil {
		return nil, err
	}
	opts = append(opts, client.WithLease(a.lease.d), client.WithWait(a.wait.d), client.WithMode(mode), client.WithLimit(a.limit.n),
		client.WithLockDelay(a.lockDelay.d), client.WithMaxHold(a.maxHold.d))
	if *a.owner != "" {
		opts = append(opts, client.WithOwner(*a.owner))
	}
	return opts, nil
}

func (c *cli) acquireFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	a := addAcquireFlags(fs, ownerHelp, "lease `duration` (default: the worker's, 30s)",
		"how long to wait in the queue (a `duration`) while another owner holds it (default 0: fail at once)", "0: none")
	return func(ctx context.Context, args []string) error {
		if err := errors.Join(requireFlag("lock", *a.lock), noArgs(args)); err != nil {
			return err
		}
		opts, err := c.acquireOptions(a)
		if err != nil {
			return err
		}
		// lockctl exits right away: nothing would keep the lease alive.
		opts = append(opts, client.WithoutKeepAlive())
		ctx, stopQuit := quitCancels(ctx)
		defer stopQuit()
		cl, err := c.holderClient(ctx, "interrupted before the lock was granted")
		if err != nil {
			return err
		}
		defer cl.Close()
		l, err := cl.Acquire(ctx, *a.lock, opts...)
		if err != nil {
			return c.refused(err)
		}
		c.printEvent(l.Granted(), func(ev topics.Event) string {
			// The flags that say where the lock is and who asks, as given:
			// the release must reach the same lock, through the same
			// brokers, as the same requester.
			var given strings.Builder
			c.fs.Visit(func(f *flag.Flag) {
				switch f.Name {
				case "brokers", "namespace", "requester":
					fmt.Fprintf(&given, "--%s %s ", f.Name, shellQuote(f.Value.String()))
				}
			})
			return fmt.Sprintf("acquired %s\nrelease with: lockctl release %s--lock %s --owner %s --token %d",
				describe(ev), given.String(), shellQuote(*a.lock), shellQuote(l.Owner), l.Token)
		})
		return nil
	}
}

func (c *cli) releaseFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "lock name (required)")
	owner := fs.String("owner", "", "owner id holding the lock (required)")
	token := fs.Int64("token", 0, "fencing token guard: refuse unless it is the holder's (default: no guard)")
	return func(ctx context.Context, args []string) error {
		if err := errors.Join(requireFlag("lock", *lock), requireFlag("owner", *owner), noArgs(args)); err != nil {
			return err
		}
		cmd := topics.Command{Operation: topics.OpRelease, LockName: *lock, OwnerID: *owner}
		if *token != 0 {
			cmd.FencingToken = token
		}
		return c.do(ctx, cmd, func(ev topics.Event) string {
			if ev.Type == topics.TypeWithdrawn {
				return "withdrew " + safe(*owner) + " from the queue of " + topics.LockKey(c.namespace, *lock)
			}
			return "released " + describe(ev)
		})
	}
}

func (c *cli) extendFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "lock name (required)")
	owner := fs.String("owner", "", "owner id holding the lock (required)")
	token := fs.Int64("token", 0, "fencing token guard (default: no guard)")
	var by seconds
	fs.Var(&by, "by", "`duration` added to the current expiry (default: the lock's lease duration)")
	return func(ctx context.Context, args []string) error {
		if err := errors.Join(requireFlag("lock", *lock), requireFlag("owner", *owner), positive("by", by), noArgs(args)); err != nil {
			return err
		}
		cmd := topics.Command{Operation: topics.OpExtend, LockName: *lock, OwnerID: *owner, ExtensionDuration: by.d.Seconds()}
		if *token != 0 {
			cmd.FencingToken = token
		}
		return c.do(ctx, cmd, func(ev topics.Event) string { return "extended " + describe(ev) })
	}
}

func (c *cli) revokeFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "lock name (required)")
	owner := fs.String("owner", "", "revoke only this owner's lease, as events show it (default: every lease of the lock)")
	reason := fs.String("reason", "", "why, told to each holder (required)")
	return func(ctx context.Context, args []string) error {
		if err := errors.Join(requireFlag("lock", *lock), requireFlag("reason", *reason), noArgs(args)); err != nil {
			return err
		}
		cmd := topics.Command{Operation: topics.OpRevoke, LockName: *lock, OwnerID: *owner, Reason: *reason}
		return c.do(ctx, cmd, func(ev topics.Event) string {
			return fmt.Sprintf("revoked %d lease(s) of %s: last %s", ev.RevokedCount, topics.LockKey(c.namespace, *lock), describe(ev))
		})
	}
}

func (c *cli) queryFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "lock name (required)")
	return func(ctx context.Context, args []string) error {
		if err := errors.Join(requireFlag("lock", *lock), noArgs(args)); err != nil {
			return err
		}
		return c.do(ctx, topics.Command{Operation: topics.OpQuery, LockName: *lock},
			func(ev topics.Event) string { return describe(ev) })
	}
}

func (c *cli) cleanupFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", topics.CleanupAll, `lock name, or "*" for every lock`)
	var maxAge seconds
	fs.Var(&maxAge, "max-age", "delete released/expired/revoked rows idle longer than this `duration` (default: the worker's, 1h)")
	return func(ctx context.Context, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		cmd := topics.Command{Operation: topics.OpCleanup, LockName: *lock}
		if maxAge.set {
			s := maxAge.d.Seconds()
			cmd.MaxAgeSeconds = &s
		}
		return c.do(ctx, cmd, func(ev topics.Event) string {
			n := 0
			if ev.CleanedCount != nil {
				n = *ev.CleanedCount
			}
			line := "cleaned 0 locks"
			if n > 0 {
				line = fmt.Sprintf("cleaned %d locks: %s", n, strings.Join(ev.CleanedLockNames, " "))
			}
			switch {
			case ev.More && n == 0:
				// Only locks other transactions hold: a repeat at once
				// would meet them again.
				line += " (more remain, on locks other transactions hold: try again later)"
			case ev.More:
				// The worker's bound a command: the rest is for the next.
				line += " (more remain: run it again)"
			}
			return line
		})
	}
}

// do sends one command and prints its reply.
func (c *cli) do(ctx context.Context, cmd topics.Command, line func(topics.Event) string) error {
	if err := c.precheck(cmd); err != nil {
		return err
	}
	cl, err := c.client(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	ev, err := cl.Do(ctx, cmd)
	if err != nil {
		return c.refused(err)
	}
	c.printEvent(ev, line)
	return nil
}

// shellQuote quotes s for a copy-pasteable command line when needed. One
// not printable is written as $'...' (bash, zsh, ksh), whose escapes
// strconv.Quote's are for ASCII: single quotes would keep the control
// characters, which would reach the terminal (safe), and a quoted "\x1b"
// would be pasted as four characters. A character beyond ASCII that is not
// printable is written as its UTF-8 bytes, \xNN each: the shell reads
// strconv.Quote's \uNNNN as that character only in a UTF-8 locale (not in
// cron's or a minimal image's C locale).
func shellQuote(s string) string {
	if !printable(s) {
		var b strings.Builder
		b.WriteString("$'")
		for i := 0; i < len(s); {
			r, n := utf8.DecodeRuneInString(s[i:])
			switch {
			case r == '\'':
				b.WriteString(`\'`)
			case r >= utf8.RuneSelf && !unicode.IsPrint(r):
				for _, c := range []byte(s[i : i+n]) {
					fmt.Fprintf(&b, `\x%02x`, c)
				}
			default:
				q := strconv.Quote(s[i : i+n])
				b.WriteString(q[1 : len(q)-1])
			}
			i += n
		}
		return b.String() + "'"
	}
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
