package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// runFlags is `lockctl run`: hold a lock while a command runs.
func (c *cli) runFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	a := addAcquireFlags(fs, ownerHelp+resumeHelp, "lease `duration`, renewed every third of it while COMMAND runs (default: the worker's, 30s)",
		"how long to wait for the lock (a `duration`; default 0: fail at once if held)", graceLockDelay+sharedLockDelay)
	grace := addGraceFlag(fs)
	usageWithEnv(fs, "")
	return func(ctx context.Context, args []string) error {
		outliveClosedOutput()
		if err := errors.Join(requireFlag("lock", *a.lock), checkGrace(grace)); err != nil {
			return err
		}
		if len(args) == 0 {
			return usageError{"no COMMAND given: lockctl run --lock NAME -- COMMAND [ARGS...]"}
		}
		if !*a.shared {
			// A reader's default is none: see sharedLockDelay.
			c.defaultLockDelay(&a.lockDelay, grace)
		}
		opts, err := c.acquireOptions(a)
		if err != nil {
			return err
		}
		if err := c.findCommand(args[0]); err != nil {
			return err
		}
		wait, stopQuit := quitCancels(ctx)
		defer stopQuit()
		cl, err := c.holderClient(wait, "interrupted before the lock was granted")
		if err != nil {
			return err
		}
		defer cl.Close()
		l, err := cl.Acquire(wait, *a.lock, opts...)
		if err != nil {
			return c.refused(err)
		}
		c.printEvent(l.Granted(), func(topics.Event) string {
			return fmt.Sprintf("lockctl: holding %s as %s (token %d, expires %s, kept alive); running %s",
				topics.LockKey(l.Namespace, l.Name), safe(l.Owner), l.Token, l.ExpiresAt().Format(topics.TimeLayout), strings.Join(args, " "))
		})
		return c.runHolding(ctx, l, grace.d, a.lockDelay.d, args)
	}
}

// usageWithEnv ends run's and elect's -h with what COMMAND finds in its
// environment; more is elect's own variables, in the same form.
func usageWithEnv(fs *flag.FlagSet, more string) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		fmt.Fprint(fs.Output(), `
COMMAND runs with lockctl's environment (its credentials included) and:
  LOCKCTL_LOCK            the lock's name (run's --lock, elect's --name)
  LOCKCTL_NAMESPACE       its namespace (--namespace; empty for none)
  LOCKCTL_OWNER           the owner id holding it (--owner, or the one lockctl generated)
  LOCKCTL_FENCING_TOKEN   the lease's fencing token: pass it on to what the lock guards, to
                          refuse a holder's write with a lower token than one it has seen
`+more)
	}
}

// findCommand looks for COMMAND as its start will, before run or elect
// takes the lock: one that is not found (127) or cannot be run (126, as a
// shell's codes: not executable, a directory) fails at once, not after
// the wait for the lock and the grant. Its start may still fail (the file
// changed since, or is of a format the kernel refuses): with the same
// codes, the lock then taken and released.
func (c *cli) findCommand(name string) error {
	if _, err := exec.LookPath(name); err != nil {
		code := notRunCode(err)
		fmt.Fprintf(c.stderr, "lockctl: %v; the lock was not taken; exit code %d\n", err, code)
		return exitErr{code}
	}
	return nil
}

// notRunCode is the exit code of a command that could not be started, as
// a shell's: 127 not found, 126 found but not run.
func notRunCode(err error) int {
	if nr := (notRun{}); errors.As(err, &nr) {
		return nr.code
	}
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		return 127
	}
	return 126
}

// brokenPipe catches SIGPIPE for outliveClosedOutput. Nothing reads it:
// signal.Notify drops what does not fit.
var brokenPipe = make(chan os.Signal, 1)

// outliveClosedOutput makes a write of run's or elect's to a closed stdout
// or stderr (lockctl run ... 2>&1 | head -1, a log collector gone) fail
// with EPIPE, which lockctl's messages ignore, rather than kill lockctl,
// as Go does unless SIGPIPE is caught: lockctl would die holding the lock
// (or queued for it), neither stopping its command nor releasing, the lock
// left to its lease and what the command started running on. Caught, not
// ignored: COMMAND would inherit SIG_IGN, and its own writes to a closed
// pipe would not end it. (watch and locks keep Go's default, which ends
// them as `| head` expects.)
func outliveClosedOutput() { signal.Notify(brokenPipe, syscall.SIGPIPE) }

// errQuit is the cause of a wait SIGQUIT ended: a cancellation, as by
// SIGINT.
var errQuit = fmt.Errorf("%w by SIGQUIT", context.Canceled)

// quitCancels returns ctx, cancelled also by SIGQUIT, for the connection
// and the wait of acquire, run and elect: Go's default action (a goroutine
// dump, exit 2) would leave their acquire in the worker's queue, to be
// granted later to nobody alive, where a cancelled one is withdrawn. It
// catches SIGQUIT until stop, also once the lock is held, so that there is
// no gap before runHolding catches it too (cancelling the wait then changes
// nothing), and later SIGQUITs are dropped.
func quitCancels(ctx context.Context) (wait context.Context, stop func()) {
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGQUIT)
	wait, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		select {
		case <-quit:
			cancel(errQuit)
		case <-done:
		}
	}()
	return wait, func() { signal.Stop(quit); close(done); cancel(nil) }
}

// holderClient is the c.client of acquire, run and elect: a signal while
// it connects (ctx ends by none other) stops them before the grant, exit 1
// as while they wait, not 3 as unreachable brokers, which is how the
// connection it cut short fails. interrupted says so.
func (c *cli) holderClient(ctx context.Context, interrupted string) (*client.Client, error) {
	cl, err := c.client(ctx)
	if err != nil && ctx.Err() != nil {
		return nil, errors.New(interrupted + " (while connecting)")
	}
	return cl, err
}

// addGraceFlag is run's and elect's --grace.
func addGraceFlag(fs *flag.FlagSet) *seconds {
	grace := &seconds{d: 10 * time.Second}
	fs.Var(grace, "grace", "after SIGTERM, how long COMMAND may take to exit before SIGKILL: a `duration` or seconds\n(0: SIGKILL at once; at most 24h)")
	return grace
}

// maxGrace bounds --grace: a day is longer than any COMMAND should take to
// stop, and grace plus the reply timeout (defaultLockDelay) must not
// overflow a time.Duration, which made a negative lock-delay.
const maxGrace = 24 * time.Hour

func checkGrace(grace *seconds) error {
	if grace.d < 0 {
		return usageError{fmt.Sprintf("--grace %s is negative (0 sends SIGKILL at once)", grace)}
	}
	if grace.d > maxGrace {
		return usageError{fmt.Sprintf("--grace %s is over %dh", grace, maxGrace/time.Hour)}
	}
	return nil
}

// graceLockDelay is the default of run's and elect's --lock-delay, as its
// help says it.
const graceLockDelay = "--grace plus the reply timeout\n" +
	"(a third of --timeout, at most 5s), at most 60s in all. COMMAND is stopped only once lockctl\n" +
	"hears that the lease was lost, and may take --grace to exit: an expiry, which lockctl's own\n" +
	"deadline sees first (unless lockctl or its host was paused past it: docs/design.md,\n" +
	"\"The holder's deadline\"), is covered; a revoke only when lockctl hears of it within the reply\n" +
	"timeout. A lockctl cut off from Kafka stops COMMAND only at its lease's local deadline, up to\n" +
	"--lease after the revoke: covering that takes --lock-delay >= --lease + --grace. With 0 the\n" +
	"next holder may start while COMMAND stops. A release (COMMAND exited, lockctl interrupted)\n" +
	"starts no delay"

// sharedLockDelay is what run's --lock-delay help adds for --shared. The
// worker's lock-delay holds back every new acquire of the lock, readers
// joining readers too: after one reader's lease ran out, all new readers
// would wait, though readers never conflict. Only a writer granted next
// could overlap the reader's COMMAND while it stops, which an explicit
// --lock-delay covers.
const sharedLockDelay = ".\nWith --shared the default is 0: the delay would keep all new readers out too, though\n" +
	"readers never conflict; a writer granted right after a reader's loss may then overlap\n" +
	"the reader's COMMAND while it stops"

// defaultLockDelay sets run's and elect's --lock-delay, when not given, to
// --grace plus the reply timeout, at most the contract's 60 s. COMMAND is
// stopped only once the lease is lost, and may run for up to grace after
// that, so the worker must grant nobody else meanwhile. A lease that ran
// out is lost by lockctl's local deadline, which errs early (unless lockctl
// or its host was paused past it: docs/design.md, "The holder's deadline"):
// grace covers it. A revoke's delay counts from the revoke's database time, and lockctl
// stops COMMAND only when lock.revoked reaches it (the relay, then its
// reply consumer): the reply timeout is lockctl's own bound on an answer's
// way back, the margin for that. (lockctl's release after COMMAND exited
// starts no delay.)
func (c *cli) defaultLockDelay(d *seconds, grace *seconds) {
	if d.set {
		return
	}
	want := grace.d + c.replyTimeout()
	d.d = min(want, time.Duration(topics.MaxLockDelaySeconds)*time.Second)
	if want > d.d {
		fmt.Fprintf(c.stderr, "lockctl: --lock-delay is %s, the contract's longest, for --grace %s (+ %s for a revoke to reach lockctl): should the lease be lost, COMMAND may run beside the next holder for up to %s\n",
			d.d, grace, c.replyTimeout().Round(time.Millisecond), (want - d.d).Round(time.Millisecond))
	}
}

// runHolding runs args while l is held (see runCommand), then releases it.
// It returns the command's exit code, or exitLeaseLost when the lease was
// found lost before the release. lockDelay is the lock-delay l was asked
// with (a renewal keeps its earlier lease's, which lockctl does not know).
// env is added to the command's environment.
func (c *cli) runHolding(ctx context.Context, l *client.Lease, grace, lockDelay time.Duration, args []string, env ...string) error {
	// Without a controlling terminal (cron, systemd, CI) the command gets a
	// process group of its own (runCommand).
	var group *commandGroup
	if !hasControllingTerminal() {
		group = &commandGroup{}
	}
	// SIGQUIT does not end lockctl while it holds the lock (Go's default
	// would dump goroutines and exit 2, leaving the lock to its lease while
	// the command runs on): lockctl stays until the command has exited and
	// the lock is released. On a terminal Ctrl-\ reaches the command's job,
	// lockctl included; without one lockctl passes it on to the command's
	// group, as the terminal would. (A command starts with SIGQUIT's
	// default action whatever lockctl catches.)
	quit := make(chan os.Signal, 1)
	signal.Notify(quit, syscall.SIGQUIT)
	done, handled := make(chan struct{}), make(chan struct{})
	defer func() { signal.Stop(quit); close(done); <-handled }()
	go func() {
		defer close(handled)
		for {
			select {
			case <-quit:
				passed := ""
				if group != nil && group.quit() {
					passed = "passed on to " + args[0] + "'s process group; "
				}
				fmt.Fprintf(c.stderr, "lockctl: SIGQUIT: %sthe lock is released once %s has exited\n", passed, args[0])
			case <-done:
				return
			}
		}
	}()
	res := c.runCommand(ctx, l, grace, args, env, group)

	if res.notStarted() {
		// Stopped (a signal, the lease lost) between the grant and the
		// start: the command never ran, as when the lock was not taken.
		fmt.Fprintf(c.stderr, "lockctl: %v; %s not started; exit code %d\n", stopCause(ctx, l), args[0], exitRefused)
		c.release(ctx, l, lockDelay)
		return exitErr{exitRefused}
	}
	if lost := l.Err(); errors.Is(lost, client.ErrLeaseLost) && res.started {
		// The loss decides the exit code, not the command: also one heard
		// only after the command exited by itself. A loss the worker told
		// of (a revoke) may have come while the command ran, as a refused
		// release shows; the client's errors do not tell it from its own
		// deadline passing after the exit; nor can res.stopped order them,
		// for exec calls Cancel also on a loss between the exit and the
		// reap. Nothing to release: Release sends nothing for a lost lease.
		fmt.Fprintf(c.stderr, "lockctl: %v; %s; exit code %d\n", lost, res.describe(args[0]), exitLeaseLost)
		return exitErr{exitLeaseLost}
	}
	// Release even if lockctl was interrupted: the lock must not
	// outlive the command.
	released := c.release(ctx, l, lockDelay)
	if released != nil && errors.Is(l.Err(), client.ErrLeaseLost) && res.started {
		// Refused (the worker had ended the lease: a revoke lockctl did
		// not hear of, cut off from Kafka), or lost as the release began:
		// maybe while the command ran, beside the next holder.
		fmt.Fprintf(c.stderr, "lockctl: the lease was found lost at the release, after %s; the worker may have ended it while the command ran; exit code %d\n",
			res.describe(args[0]), exitLeaseLost)
		return exitErr{exitLeaseLost}
	}
	switch {
	case res.stopped:
		// Interrupted: said as a lost lease is, for a command that exits 0
		// when stopped would leave lockctl's 0 unexplained. (A release not
		// confirmed was said by release.)
		said := ""
		if released == nil {
			said = "; released " + topics.LockKey(l.Namespace, l.Name)
		}
		fmt.Fprintf(c.stderr, "lockctl: %v; %s%s; exit code %d\n", stopCause(ctx, l), res.describe(args[0]), said, res.code)
	case res.err != nil:
		fmt.Fprintf(c.stderr, "lockctl: %v\n", res.err)
	}
	return exitErr{res.code}
}

// stopCause is why lockctl stopped its command: the lease lost, else the
// signal that ended ctx.
func stopCause(ctx context.Context, l *client.Lease) error {
	if lost := l.Err(); errors.Is(lost, client.ErrLeaseLost) {
		return lost
	}
	return context.Cause(ctx)
}

// release releases l, whatever ctx (the lock must not outlive the
// command), within --timeout; its error is said on stderr and returned.
// One that got no answer (Kafka or the workers gone as the command ended)
// leaves the exit code as it is, the command's, which scripts rely on;
// stderr says what it may mean instead: the worker may not have applied
// it, and as the lease is no longer kept alive, the lock then ends by
// expiry, followed by lockDelay.
func (c *cli) release(ctx context.Context, l *client.Lease, lockDelay time.Duration) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout.d)
	defer cancel()
	err := l.Release(rctx)
	switch {
	case err == nil:
	case errors.Is(l.Err(), client.ErrLeaseLost): // refused, or lost before: nothing held
		fmt.Fprintf(c.stderr, "lockctl: %v\n", err)
	default:
		until := "until its lease runs out"
		if at := l.ExpiresAt(); !at.IsZero() {
			until += " at " + at.Format(topics.TimeLayout)
		}
		if lockDelay > 0 {
			until += fmt.Sprintf(", then for --lock-delay %s more", lockDelay.Round(time.Millisecond))
		}
		fmt.Fprintf(c.stderr, "lockctl: the release of %s was not confirmed (%v): unless the worker applied it, the lock stays held %s\n",
			topics.LockKey(l.Namespace, l.Name), err, until)
	}
	return err
}

// commandGroup is the command's process group (its own, without a
// controlling terminal), where lockctl passes SIGQUIT on. SIGQUIT goes to
// it only until the command is reaped: its id, the command's pid, may then
// be another's once the group is empty. (A stop's signals go on while the
// group has members, which keep its id from new processes: runCommand.)
type commandGroup struct {
	mu      sync.Mutex
	started bool        // the command has started, or failed to
	leader  *os.Process // the command, from its start until it has exited
	pending bool        // a SIGQUIT came before the command started
}

// quit passes SIGQUIT on to the group, at once or as soon as the command
// has started; false when the command has exited (or failed to start).
func (g *commandGroup) quit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.started {
		g.pending = true
		return true
	}
	// Elsewhere than Linux (waitExited) the leader is let go only after
	// Wait: Signal(0) tells a command Wait has reaped, short of a reap
	// between it and the kill.
	if g.leader == nil || errors.Is(g.leader.Signal(syscall.Signal(0)), os.ErrProcessDone) {
		return false
	}
	return syscall.Kill(-g.leader.Pid, syscall.SIGQUIT) == nil
}

// start records the command once started (nil: it failed to start) and
// passes on a SIGQUIT that came before.
func (g *commandGroup) start(p *os.Process) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started, g.leader = true, p
	if p != nil && g.pending {
		_ = syscall.Kill(-p.Pid, syscall.SIGQUIT)
	}
}

// exited lets the command go: it has exited, not yet reaped.
func (g *commandGroup) exited() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.leader = nil
}

// ran is how a command run by runCommand ended.
type ran struct {
	started  bool  // it started (else: not found, not executable, or notStarted)
	code     int   // the exit code to pass on (128+N: signal N ended it)
	signaled bool  // a signal ended it
	stopped  bool  // lockctl stopped it (the lease lost, a signal to lockctl)
	err      error // it could not start; or what it left held its output past the grace period
}

// notStarted says lockctl stopped the command before it started.
func (r ran) notStarted() bool { return r.stopped && !r.started }

// describe says how command ended, for stderr.
func (r ran) describe(command string) string {
	how := "exit code " + strconv.Itoa(r.code)
	switch {
	case r.err != nil:
		how = r.err.Error()
	case r.signaled:
		how = "signal " + syscall.Signal(r.code-128).String()
	}
	if r.stopped {
		return "stopped " + command + " (" + how + ")"
	}
	return command + " exited (" + how + ")"
}

// graceTick is how often a stop looks whether what the command started
// has exited, during the grace period after the command itself has.
const graceTick = 50 * time.Millisecond

// killWait is how long a stop waits for SIGKILL to end what it was sent
// to before it says what is left.
const killWait = time.Second

// running is the command runCommand runs, for killRunning.
var running struct {
	sync.Mutex
	kill func() // a stop's SIGKILL step; nil while no command runs
}

// killRunning sends the command runCommand runs, and what it started,
// SIGKILL at once, as a stop does once --grace has passed; nothing when
// no command runs. It is main's on a second SIGINT, lockctl's escape hatch
// when a stop seems stuck, right before lockctl dies: elsewhere than
// Linux, where no shim kills them as lockctl dies (runCommand), the
// command and what it started would run on beside the next holder.
func killRunning() {
	running.Lock()
	defer running.Unlock()
	if running.kill != nil {
		running.kill()
	}
}

// runCommand runs args until it exits, or until the lease is lost or ctx
// ends (a signal to lockctl): then it sends the command and what it started
// SIGTERM and, once grace has passed since, SIGKILL to whatever of them is
// left (at once when grace is 0), also when the command itself exited
// first: its process group (group not nil), and what runs below it in
// /proc. What a command that exited by itself left in its process group
// (group not nil) is stopped so too, and said on stderr, before it returns:
// the lock is released only after. env is added to the command's
// environment. group is nil when lockctl has a controlling terminal
// (hasControllingTerminal); otherwise the command gets a process group of
// its own, which group follows.
func (c *cli) runCommand(ctx context.Context, l *client.Lease, grace time.Duration, args []string, env []string, group *commandGroup) ran {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.Context(), cancel)
	defer stop()
	cmd := exec.CommandContext(runCtx, args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.stdout, c.stderr
	// The command can pass the fencing token on to what the lock guards.
	cmd.Env = append(os.Environ(),
		"LOCKCTL_LOCK="+l.Name,
		"LOCKCTL_NAMESPACE="+l.Namespace,
		"LOCKCTL_OWNER="+l.Owner,
		"LOCKCTL_FENCING_TOKEN="+strconv.FormatInt(l.Token, 10),
	)
	cmd.Env = append(cmd.Env, env...)
	// Stopping the command stops everything it started (a shell script's
	// children too). Without a controlling terminal (cron, systemd, CI) the
	// command gets a process group of its own, signalled whole; what left
	// it (setsid, setpgid) is signalled one by one, as found in /proc below
	// the command, or below its shim, which keeps what the command's
	// processes orphan below it while it lives. With a terminal the
	// command stays in lockctl's group, the shell's job, so that job
	// control works as for any command (it reads the terminal, Ctrl-Z
	// stops both): there the command and all that runs below it are
	// signalled one by one. The SIGTERM goes to what is found when the
	// stop begins; the SIGKILL to what is found then, as grace ends, and
	// in between once the command has exited (below what was found
	// before too, whose parent may have exited since). The stop runs its
	// course before the command is reaped and the shim let go (finishStop
	// below).
	// A lockctl that is killed (SIGKILL, the OOM killer) stops nothing
	// itself: on Linux the command runs under the shim (shim_linux.go),
	// which then SIGKILLs all the command started, orphans included, so
	// that none runs on beside the next holder. Elsewhere the command is
	// lockctl's own child, and runs on. cmd.Start runs on no locked OS
	// thread, whose exit would send the shim's parent-death signal early
	// (childproc).
	sh := viaShim(cmd, group != nil)
	// The command, once started: below the shim, or cmd.Process. started
	// is closed once it is set, or the start failed.
	var command *os.Process
	started := make(chan struct{})
	var tree struct {
		sync.Mutex
		root  *process         // the command (the shim, under one), once seen in /proc
		known map[process]bool // what was found below it so far
		// reaped: the command's pid, and its process group's id, may be
		// another's now.
		reaped bool
	}
	// rootOf takes the command's /proc entry while its pid is surely its
	// own: Signal(0) succeeds only until Wait has reaped it.
	rootOf := func() {
		if tree.root != nil {
			return
		}
		if st, ok := stat(cmd.Process.Pid); ok && !errors.Is(cmd.Process.Signal(syscall.Signal(0)), os.ErrProcessDone) {
			tree.root = &process{cmd.Process.Pid, st.Start}
		}
	}
	// look finds what is below the command now, and below what was found
	// before (once a process is gone, its children have another parent),
	// adding it to tree.known; tree is locked.
	look := func() []process {
		rootOf()
		var roots []process
		if tree.root != nil {
			roots = append(roots, *tree.root)
		}
		for p := range tree.known {
			roots = append(roots, p)
		}
		found := below(roots)
		for _, p := range found {
			tree.known[p] = true
		}
		return found
	}
	stopAll := func(sig syscall.Signal) error {
		<-started // as Cancel may come while the shim starts the command
		if command == nil {
			return nil
		}
		tree.Lock()
		defer tree.Unlock()
		look()
		var err error
		pgid := 0
		switch {
		case group != nil:
			// The group, then what left it (a setsid'd step), found below
			// the shim, a subreaper, which keeps it there while it lives.
			// Once the command is reaped an empty group's id may be
			// another's.
			pgid = command.Pid
			if !tree.reaped || syscall.Kill(-pgid, 0) != syscall.ESRCH {
				err = syscall.Kill(-pgid, sig)
			}
		case sh == nil:
			// By its pidfd, which Wait's reap cannot turn into another's
			// pid.
			err = cmd.Process.Signal(sig)
		}
		// The shim is spared: it catches the others and lives on, and
		// killed, it would let go of what the command orphaned. The
		// command and what it started get it from tree.known.
		for p := range tree.known {
			if tree.root == nil || p != *tree.root {
				p.signal(sig, pgid)
			}
		}
		return err
	}
	// leftOnce says whether anything the command started is still there,
	// once the command has exited, and which pids (none where /proc cannot
	// tell); once the command is reaped, orphans of it that lockctl
	// inherited (as a container's init) are reaped first, for no signal
	// ends a zombie (before, that could reap the command).
	leftOnce := func() (pids []int, some bool) {
		tree.Lock()
		if tree.reaped {
			reapOrphans()
		}
		for _, p := range look() {
			if tree.root == nil || p != *tree.root { // the shim, which waits for its release
				pids = append(pids, p.pid)
			}
		}
		tree.Unlock()
		// EPERM: members lockctl may not signal (a setuid one), still
		// there.
		if group == nil || syscall.Kill(-command.Pid, 0) == syscall.ESRCH {
			return pids, len(pids) > 0
		}
		// Zombies alone (their new parent has not reaped them yet) run
		// nothing.
		live, ok := groupLive(command.Pid)
		for _, pid := range live {
			if !slices.Contains(pids, pid) {
				pids = append(pids, pid)
			}
		}
		return pids, len(pids) > 0 || !ok
	}
	// left is leftOnce, read again when it found nothing: a process forked
	// after /proc was listed, by one that exited before its stat was read
	// (a step's SIGTERM trap handing off to a helper), is in neither; the
	// second reading lists it, below the shim by then.
	left := func() ([]int, bool) {
		if pids, some := leftOnce(); some {
			return pids, some
		}
		return leftOnce()
	}
	// waitGone waits until nothing is left or deadline has passed, and
	// returns what is left (left).
	waitGone := func(deadline time.Time) ([]int, bool) {
		for {
			pids, some := left()
			if !some || !time.Now().Before(deadline) {
				return pids, some
			}
			time.Sleep(min(graceTick, time.Until(deadline)))
		}
	}
	var stopBegan atomic.Pointer[time.Time] // nil: no stop yet
	kill := syscall.SIGTERM
	if grace == 0 {
		kill = syscall.SIGKILL
	}
	// The SIGKILL once grace has passed is lockctl's own (stopAll, which
	// under the shim reaches what runs below it while it lives), and the
	// stop ends within grace + killWait (finishStop), before the shim is
	// released. Wait's kill of cmd.Process (the shim, else the command),
	// counted from the stop too, comes after that: it only ends a wait for
	// a command that outlived it all (setuid, or in an uninterruptible
	// sleep). It is also how long Wait reads pipes that a process which
	// left the command may hold past grace (0 would read them until EOF).
	cmd.WaitDelay = grace + 2*killWait
	var graceEnd atomic.Pointer[time.Timer]
	defer func() {
		if t := graceEnd.Load(); t != nil {
			t.Stop()
		}
	}()
	cmd.Cancel = func() error {
		now := time.Now()
		stopBegan.CompareAndSwap(nil, &now)
		if kill != syscall.SIGKILL {
			graceEnd.Store(time.AfterFunc(grace, func() { _ = stopAll(syscall.SIGKILL) }))
		}
		return stopAll(kill)
	}
	tree.known = map[process]bool{}
	stopped := false // lockctl stopped the command before it exited
	if l.Context().Err() != nil {
		// Lost already: the AfterFunc's cancel runs in a goroutine of its
		// own, maybe after Start's one look at runCtx.
		cancel()
	}
	// Locked from before the start: a killRunning meanwhile waits for the
	// command's pid.
	running.Lock()
	command, err := sh.start(cmd)
	close(started)
	if command != nil {
		running.kill = func() { _ = stopAll(syscall.SIGKILL) }
		defer func() {
			running.Lock()
			running.kill = nil
			running.Unlock()
		}()
	}
	running.Unlock()
	if group != nil {
		group.start(command)
	}
	if command == nil && cmd.Process != nil {
		_ = cmd.Wait() // the shim, which could not start the command
	}
	// finishStop gives what the command started the rest of the grace
	// period too (a shell the SIGTERM ended at once leaves its children to
	// stop), counted from the stop, or from now when the command had
	// exited before it, and then SIGKILLs what is left.
	finishStop := func() {
		if now := time.Now(); stopBegan.CompareAndSwap(nil, &now) {
			_ = stopAll(kill)
		}
		// The deadlines are monotonic: a clock step changes nothing.
		if _, some := waitGone(stopBegan.Load().Add(grace)); some {
			_ = stopAll(syscall.SIGKILL)
			// What SIGKILL did not end at once, lockctl may not signal
			// (a setuid process: EPERM), or it is in an uninterruptible
			// sleep (an NFS write) that may finish after the release.
			if pids, some := waitGone(time.Now().Add(killWait)); some {
				c.survivedKill(pids, command.Pid, l)
			}
		}
	}
	if command != nil {
		tree.Lock()
		rootOf()
		tree.Unlock()
		exited := sh.exited(command)
		if exited && group != nil {
			group.exited()
		}
		// A stop runs its course before the command is reaped: until then
		// its pid and its group's id stay its own, and the shim holds
		// what the command's processes orphan (a helper a setsid'd step's
		// SIGTERM trap starts) below it, where the stop finds it.
		stoppedExited := exited && runCtx.Err() != nil
		if stoppedExited {
			finishStop()
		}
		sh.release()
		err = cmd.Wait()
		tree.Lock()
		tree.reaped = true
		tree.Unlock()
		stopped = stopBegan.Load() != nil
		if group != nil {
			group.exited()
		}
		// Exited by itself, the command may have left processes running (a
		// step sent to the background and not waited for): they would run
		// on beside the next holder. Only its own process group tells them:
		// on a terminal, what it left has lost its tie to it (another
		// process, init, is its parent now), and lockctl's group, the
		// shell's job, may hold others' (a pipeline's other commands, what
		// lockctl's parent started before it exec'd lockctl).
		leftBehind := false
		if runCtx.Err() == nil && group != nil {
			_, leftBehind = left()
		}
		if leftBehind {
			how := "SIGTERM, then SIGKILL after --grace " + grace.String()
			if kill == syscall.SIGKILL {
				how = "SIGKILL"
			}
			fmt.Fprintf(c.stderr, "lockctl: %s exited, but processes it started still run: stopping them (%s) before releasing %s\n",
				args[0], how, topics.LockKey(l.Namespace, l.Name))
		}
		if (runCtx.Err() != nil && !stoppedExited) || leftBehind {
			finishStop()
		}
	}
	if command == nil {
		if runCtx.Err() != nil {
			return ran{stopped: true, err: err} // notStarted
		}
		// It never started (not found, not executable): as a shell says.
		return ran{code: notRunCode(err), err: err}
	}
	ws := sh.statusOf(cmd.ProcessState)
	if sh.unreported() && !stopped {
		// Killed from outside (kill -9, the OOM killer): the command died
		// with it, what it had moved out of its reach did not.
		what := "what " + args[0] + " started outside its process group may run on"
		if group == nil { // on a terminal nothing a command leaves is stopped
			what = "what " + args[0] + " started may run on"
		}
		fmt.Fprintf(c.stderr, "lockctl: lockctl's shim was killed before %s's end was reported, which is taken for a SIGKILL; %s\n",
			args[0], what)
	}
	r := ran{started: true, code: ws.ExitStatus(), stopped: stopped}
	if ws.Signaled() {
		r.code, r.signaled = 128+int(ws.Signal()), true
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		r.err = err
	}
	return r
}

// survivedKill says on stderr that pids (at most the first 10 of them; none:
// what /proc could not name in process group pgid) outlived a stop's
// SIGKILL, and may run on beside l's next holder.
func (c *cli) survivedKill(pids []int, pgid int, l *client.Lease) {
	const most = 10
	what := "members of process group " + strconv.Itoa(pgid)
	if len(pids) > 0 {
		what = "pid"
		if len(pids) > 1 {
			what += "s"
		}
		for i, pid := range pids[:min(len(pids), most)] {
			if i > 0 {
				what += ","
			}
			what += " " + strconv.Itoa(pid)
		}
		if len(pids) > most {
			what += fmt.Sprintf(" and %d more", len(pids)-most)
		}
	}
	fmt.Fprintf(c.stderr, "lockctl: still there %s after SIGKILL: %s (a process lockctl may not signal, or one in an uninterruptible sleep); it may run on beside the next holder of %s\n",
		killWait, what, topics.LockKey(l.Namespace, l.Name))
}

// hasControllingTerminal reports whether lockctl runs in a session with a
// terminal (typed at a prompt, even with stdin redirected), whose job
// control the command is then left to.
func hasControllingTerminal() bool {
	// Non-blocking: a serial line without carrier would hold the open.
	f, err := os.OpenFile("/dev/tty", os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}
