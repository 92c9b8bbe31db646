package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/omninode/lockworker/internal/childproc"
)

// Broker is a cmd/devkafka process.
type Broker struct {
	Addr string
	args []string
	bin  string
	cmd  *exec.Cmd
	done chan struct{}
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
	cmd := exec.Command(b.bin, b.args...)
	childproc.DieWithParent(cmd)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", b.bin, err)
	}
	b.cmd, b.done = cmd, make(chan struct{})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "devkafka listening on "); ok {
				addr <- a
			}
		}
	}()
	done := b.done
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case b.Addr = <-addr:
		return nil
	case <-done:
		return fmt.Errorf("%s exited before listening", b.bin)
	case <-ctx.Done():
		b.Close()
		return ctx.Err()
	}
}

// Kill SIGKILLs the broker; Restart starts it again with the same
// arguments (on the address it had: give StartBrokerAt a fixed one).
func (b *Broker) Kill() {
	_ = b.cmd.Process.Kill()
	<-b.done
}

// Restart starts a killed or closed broker again.
func (b *Broker) Restart(ctx context.Context) error { return b.start(ctx) }

// Pid is the broker process's id.
func (b *Broker) Pid() int { return b.cmd.Process.Pid }

// Close stops the broker.
func (b *Broker) Close() {
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// Replica is one lockworker process slot: started, killed and restarted
// with the same environment (so the same INSTANCE_ID).
type Replica struct {
	Name string
	bin  string
	env  []string
	logw io.Writer

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	ready chan struct{}
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
	return &Replica{Name: name, bin: bin, env: append(append(base, env...), "INSTANCE_ID="+name), logw: logw}
}

// Start runs the process; Ready tells when it consumes.
func (r *Replica) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return fmt.Errorf("replica %s is running", r.Name)
	}
	cmd := exec.Command(r.bin)
	cmd.Env = r.env
	childproc.DieWithParent(cmd)
	errp, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting replica %s: %w", r.Name, err)
	}
	done, ready := make(chan struct{}), make(chan struct{})
	go func() {
		sc := bufio.NewScanner(errp)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if strings.Contains(line, "lockworker is consuming") {
				once.Do(func() { close(ready) })
			}
			fmt.Fprintf(r.logw, "%s %s\n", r.Name, line)
		}
		_ = cmd.Wait()
		close(done)
	}()
	r.cmd, r.done, r.ready = cmd, done, ready
	return nil
}

// Ready waits until the replica logged that it consumes.
func (r *Replica) Ready(ctx context.Context) error {
	r.mu.Lock()
	ready, done := r.ready, r.done
	r.mu.Unlock()
	if ready == nil {
		return fmt.Errorf("replica %s is not running", r.Name)
	}
	select {
	case <-ready:
		return nil
	case <-done:
		return fmt.Errorf("replica %s exited before it was ready", r.Name)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Running reports whether the process runs.
func (r *Replica) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cmd != nil
}

// Kill sends SIGKILL (a crash) and waits for the process to be gone.
func (r *Replica) Kill() error { return r.stop(syscall.SIGKILL, 0) }

// Term sends SIGTERM (a clean stop) and waits up to grace for the process
// to exit before killing it; an exit after grace is an error.
func (r *Replica) Term(grace time.Duration) error { return r.stop(syscall.SIGTERM, grace) }

func (r *Replica) stop(sig syscall.Signal, grace time.Duration) error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd, r.ready = nil, nil
	r.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("signalling replica %s: %w", r.Name, err)
	}
	if grace == 0 {
		<-done
		return nil
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("replica " + r.Name + " did not stop within " + grace.String())
	}
}
