package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/config"
)

// proc is a started child process whose output one goroutine reads line by
// line to its end before it waits for the process: os/exec's Wait closes
// the pipe, so it must not run while the pipe is still read.
type proc struct {
	cmd       *exec.Cmd
	ready     chan struct{} // closed at the first line that says the process is ready
	readyLine string        // that line; set before ready closes
	done      chan struct{} // closed once the process exited
	err       error         // Wait's; set before done closes
	outErr    error         // why the output was not read line by line to its end; set before done closes
}

// startProc starts cmd and passes each line of the output pipe opens
// (cmd.StdoutPipe or cmd.StderrPipe) to line, which says whether it is
// the line that means the process is ready. A line too long to read (over
// 1 MiB) ends that: the rest of the output is read and discarded, so that
// the process is not blocked on a full pipe, and line gets a last line
// that says so (for a log; status says it too).
func startProc(cmd *exec.Cmd, pipe func() (io.ReadCloser, error), line func(string) bool) (*proc, error) {
	out, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("piping the output of %s: %w", cmd.Path, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &proc{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		readied := false
		for sc.Scan() {
			if l := sc.Text(); line(l) && !readied {
				p.readyLine, readied = l, true
				close(p.ready)
			}
		}
		if err := sc.Err(); err != nil {
			p.outErr = err
			line(fmt.Sprintf("chaos: output discarded from here on, reading it: %v", err))
			_, _ = io.Copy(io.Discard, out)
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// status is how the exited process exited, with why its output was not
// read to its end if it was not.
func (p *proc) status() string {
	if p.outErr != nil {
		return fmt.Sprintf("%s; its output unread after: %v", p.cmd.ProcessState, p.outErr)
	}
	return p.cmd.ProcessState.String()
}

// waitReady waits for the ready line; what names the process in errors.
func (p *proc) waitReady(ctx context.Context, what string) error {
	select {
	case <-p.ready:
		return nil
	case <-p.done:
		select { // ready closes before done: a line and an exit at once pick either case
		case <-p.ready:
			return nil
		default:
		}
		return fmt.Errorf("%s exited before it was ready (%s)", what, p.status())
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ErrExitedUnasked is a process's exit that no stop asked for (a panic, a
// fatal error): Replica.Err's, and Kill's and Term's of a process already
// gone.
var ErrExitedUnasked = errors.New("exited unasked")

func (p *proc) exitedUnasked(what string) error {
	return fmt.Errorf("%s %w (%s)", what, ErrExitedUnasked, p.status())
}

// ErrUncleanStop is a stop that did not end in a clean exit: an exit
// status other than 0 after a signal other than SIGKILL (a failed drain),
// or a process killed because it did not exit within the grace.
var ErrUncleanStop = errors.New("unclean stop")

// stop sends sig and waits for the process to exit: for ever if grace is
// 0 (and sig is not SIGKILL), else up to grace, then it kills it and
// waits; after a SIGKILL it waits up to killWait and then gives up with an
// error that wraps neither sentinel. An exit status other
// than 0 after a signal other than SIGKILL (a failed drain) is an error,
// as is a kill after grace (both ErrUncleanStop, with Wait's error), and so
// is a process that had exited already (ErrExitedUnasked); what names the
// process in errors. A process that exits just as grace ends, before the
// kill reaches it, is judged by its exit status as one that exited within
// grace: exit status 0 is a clean stop. Which came first is a matter of
// microseconds, and the kill did not cut its drain short.
func (p *proc) stop(what string, sig syscall.Signal, grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitedUnasked(what)
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("signalling %s: %w", what, err)
		}
		<-p.done // it exited since the look above: not for the signal
		return p.exitedUnasked(what)
	}
	if grace > 0 {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.done:
		case <-t.C:
			_ = p.cmd.Process.Kill()
			if err := p.waitKilled(what); err != nil {
				return err
			}
			if killed(p.cmd.ProcessState) {
				return fmt.Errorf("%s did not stop within %s, so it was killed: %w (%w)", what, grace, p.err, ErrUncleanStop)
			}
			// It exited as grace ended, before the kill: its status says how.
		}
	}
	if sig == syscall.SIGKILL {
		if err := p.waitKilled(what); err != nil {
			return err
		}
		if !killed(p.cmd.ProcessState) {
			// It had exited but was not yet reaped: the signal found it
			// still there, and did nothing.
			return p.exitedUnasked(what)
		}
		return nil // its exit status says no more than that it was killed
	}
	<-p.done
	if p.err != nil {
		return fmt.Errorf("%s after %s: %w (%w)", what, unix.SignalName(sig), p.err, ErrUncleanStop)
	}
	return nil
}

// killWait is how long stop waits for a process to be seen gone after it
// sent SIGKILL.
var killWait = 30 * time.Second

// waitKilled waits up to killWait for the process stop sent SIGKILL to be
// seen gone: its exit is seen once its output pipe closes, which a child
// of its holding the pipe, or the process stuck in the kernel (D state),
// would put off for ever.
func (p *proc) waitKilled(what string) error {
	t := time.NewTimer(killWait)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s was sent SIGKILL and not seen gone within %s: its output is still open (a child of its holds it, or it is stuck in the kernel)",
			what, killWait)
	}
}

// killed says whether the exited process died of SIGKILL.
func killed(ps *os.ProcessState) bool {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Broker is a cmd/devkafka process.
type Broker struct {
	Addr string
	args []string
	bin  string
	p    *proc
}

// StartBroker runs the devkafka binary on a free port with the commands
// topic of the given partitions and waits until it listens.
func StartBroker(ctx context.Context, bin string, partitions int, minSession time.Duration) (*Broker, error) {
	return StartBrokerAt(ctx, bin, "127.0.0.1:0", "", partitions, minSession)
}

// StartBrokerAt is StartBroker on addr with its data in dir ("": a
// temporary directory of its own), so that Restart finds what it wrote.
func StartBrokerAt(ctx context.Context, bin, addr, dir string, partitions int, minSession time.Duration) (*Broker, error) {
	b := &Broker{bin: bin, args: []string{"-addr", addr, "-partitions", fmt.Sprint(partitions),
		"-min-session-timeout", minSession.String()}}
	if dir != "" {
		b.args = append(b.args, "-dir", dir)
	}
	return b, b.start(ctx)
}

func (b *Broker) start(ctx context.Context) error {
	const listening = "devkafka listening on "
	cmd := exec.Command(b.bin, b.args...)
	childproc.DieWithParent(cmd)
	cmd.Stderr = os.Stderr
	p, err := startProc(cmd, cmd.StdoutPipe, func(line string) bool { return strings.HasPrefix(line, listening) })
	if err != nil {
		return err
	}
	b.p = p
	if err := p.waitReady(ctx, b.bin); err != nil {
		b.Close()
		return err
	}
	b.Addr = strings.TrimPrefix(p.readyLine, listening)
	return nil
}

// Kill SIGKILLs the broker; Restart starts it again with the same
// arguments (on the address it had: give StartBrokerAt a fixed one).
func (b *Broker) Kill() { _ = b.p.stop(b.bin, syscall.SIGKILL, 0) }

// Restart starts a killed or closed broker again.
func (b *Broker) Restart(ctx context.Context) error { return b.start(ctx) }

// Pid is the broker process's id.
func (b *Broker) Pid() int { return b.p.cmd.Process.Pid }

// Close stops the broker: SIGTERM, and SIGKILL after 10 s.
func (b *Broker) Close() { _ = b.p.stop(b.bin, syscall.SIGTERM, 10*time.Second) }

// Replica is one lockworker process slot: started, killed and restarted
// with the same environment (so the same INSTANCE_ID).
type Replica struct {
	Name string
	bin  string
	env  []string
	logw io.Writer

	mu sync.Mutex
	p  *proc // nil when not started or stopped

	watchMu sync.Mutex
	watches []logWatch // Logged's, not yet seen
}

// logWatch is a Logged wait: ch closes at a line containing substr.
type logWatch struct {
	substr string
	ch     chan struct{}
}

// NewReplica prepares a replica; env is added to the process's environment
// (INSTANCE_ID=name is set). Its logs go to logw (nil: discarded).
// LOG_LEVEL is info unless env sets it, whatever the caller's environment
// says: Ready waits for an Info line.
func NewReplica(name, bin string, env []string, logw io.Writer) *Replica {
	if logw == nil {
		logw = io.Discard
	}
	base := append(os.Environ(), "LOG_LEVEL=info") // exec uses the last of duplicate keys
	return &Replica{Name: name, bin: bin, env: config.ChildEnv(base, slices.Concat(env, []string{"INSTANCE_ID=" + name})...), logw: logw}
}

// Start runs the process; Ready tells when it consumes.
func (r *Replica) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p != nil {
		return fmt.Errorf("replica %s is running", r.Name)
	}
	cmd := exec.Command(r.bin)
	cmd.Env = r.env
	childproc.DieWithParent(cmd)
	p, err := startProc(cmd, cmd.StderrPipe, func(line string) bool {
		fmt.Fprintf(r.logw, "%s %s\n", r.Name, line)
		r.logged(line)
		return strings.Contains(line, "lockworker is consuming")
	})
	if err != nil {
		return fmt.Errorf("replica %s: %w", r.Name, err)
	}
	r.p = p
	return nil
}

// Logged returns a channel closed at the first line the replica logs from
// now on (this process or a later one) that contains substr: a test waits
// for what the replica says it did, not for a while. Call it before what
// makes the replica log the line.
func (r *Replica) Logged(substr string) <-chan struct{} {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	ch := make(chan struct{})
	r.watches = append(r.watches, logWatch{substr: substr, ch: ch})
	return ch
}

// logged closes the channels of the watches line matches, and forgets them.
func (r *Replica) logged(line string) {
	r.watchMu.Lock()
	defer r.watchMu.Unlock()
	r.watches = slices.DeleteFunc(r.watches, func(w logWatch) bool {
		if strings.Contains(line, w.substr) {
			close(w.ch)
			return true
		}
		return false
	})
}

// Ready waits until the replica logged that it consumes.
func (r *Replica) Ready(ctx context.Context) error {
	p, err := r.running()
	if err != nil {
		return err
	}
	return p.waitReady(ctx, "replica "+r.Name)
}

// running is the replica's process, or an error when it has none.
func (r *Replica) running() (*proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		return nil, fmt.Errorf("replica %s is not running", r.Name)
	}
	return r.p, nil
}

// Err is an error if the process exited without Kill or Term asking it to
// (a panic, a fatal error): nobody else would notice until a stop found it
// gone. Kill and Term return the same error for a process already gone.
// It is ErrExitedUnasked with the exit status.
func (r *Replica) Err() error {
	// The look is made under the lock: a stop forgets the process under it
	// before it signals, so the exit a stop asks for is never Err's.
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		return nil
	}
	select {
	case <-r.p.done:
		return r.p.exitedUnasked("replica " + r.Name)
	default:
		return nil
	}
}

// Signal sends sig without waiting for the exit: for a test of how the
// process answers a signal, or two (Term sends the last and waits, or
// Exited tells when it is gone). Err, Kill and Term take the exit that
// follows for an unasked one.
func (r *Replica) Signal(sig syscall.Signal) error {
	p, err := r.running()
	if err != nil {
		return err
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling replica %s: %w", r.Name, err)
	}
	return nil
}

// Exited is closed once the process exited; it is nil, which never
// closes, when no process runs (not started, or stopped by Kill or Term).
func (r *Replica) Exited() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.p == nil {
		return nil
	}
	return r.p.done
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone. A
// process that had exited already is Err's error (ErrExitedUnasked), also
// one that exited just before the signal, which its exit status tells
// (only a SIGKILL from elsewhere, such as the OOM killer, looks like
// Kill's).
func (r *Replica) Kill() error { return r.stop(syscall.SIGKILL, 0) }

// Term sends SIGTERM (a clean stop) and waits up to grace for the process
// to exit before killing it; a kill after grace or an exit with a status
// other than 0 (a failed drain) is ErrUncleanStop, and a process that had
// exited already is Err's error (ErrExitedUnasked).
func (r *Replica) Term(grace time.Duration) error { return r.stop(syscall.SIGTERM, grace) }

// Interrupt is Term with SIGINT (Ctrl-C).
func (r *Replica) Interrupt(grace time.Duration) error { return r.stop(syscall.SIGINT, grace) }

func (r *Replica) stop(sig syscall.Signal, grace time.Duration) error {
	r.mu.Lock()
	p := r.p
	r.p = nil
	r.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.stop("replica "+r.Name, sig, grace)
}
