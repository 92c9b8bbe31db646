package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
)

// TestSignals: the built binary exits 0 on SIGTERM, whether it comes while
// it starts (a pod deleted while Kafka does not answer) or once it serves,
// after the drain; a second signal during the drain exits 1 at once.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs lockworker")
	}
	bins, err := chaos.Build(context.Background(), t.TempDir(), "lockworker")
	require.NoError(t, err)
	url := testdb.NewSchema(t).URL

	t.Run("while starting", func(t *testing.T) {
		// Kafka never answers: Run waits for its topics until it is stopped.
		// (A refused connection would not do: kgo gives up on it after a
		// second try, and Run fails on its own.)
		kafka, _ := externalKafka(t)
		_, release := kafkatest.HoldFirst(kafka, kmsg.CreateTopics)
		t.Cleanup(release) // before the broker closes
		p := startBinary(t, bins[0], url, kafka.ListenAddrs()[0])
		p.awaitHealth(t, http.StatusServiceUnavailable, "checking the Kafka topics")
		p.signal(t)
		require.Equal(t, 0, p.exitCode(t))
		assert.Contains(t, p.logs.String(), "lockworker stopped while starting")
		assert.NotContains(t, p.logs.String(), `"level":"error"`)
	})

	t.Run("after the drain", func(t *testing.T) {
		kafka, _ := externalKafka(t)
		p := startBinary(t, bins[0], url, kafka.ListenAddrs()[0])
		p.awaitHealth(t, http.StatusOK, "")
		p.signal(t)
		require.Equal(t, 0, p.exitCode(t))
		assert.NotContains(t, p.logs.String(), `"level":"error"`)
	})

	t.Run("second signal", func(t *testing.T) {
		kafka, _ := externalKafka(t)
		// The drain ends with leaving the group: held, it lasts until the
		// second signal.
		leaving, release := kafkatest.HoldFirst(kafka, kmsg.LeaveGroup)
		t.Cleanup(release) // before the broker closes
		p := startBinary(t, bins[0], url, kafka.ListenAddrs()[0])
		p.awaitHealth(t, http.StatusOK, "")
		p.signal(t)
		select {
		case <-leaving:
		case <-p.done:
			t.Fatalf("lockworker exited (%s) before leaving the group", p.cmd.ProcessState)
		case <-time.After(runWait):
			t.Fatalf("lockworker did not leave the group in %s", runWait)
		}
		p.signal(t)
		require.Equal(t, 1, p.exitCode(t))
		assert.Contains(t, p.logs.String(), "second signal: exiting now")
	})
}

// binary is a lockworker process started by startBinary.
type binary struct {
	cmd      *exec.Cmd
	httpAddr string
	logs     *testlog.Buffer // its stdout and stderr
	done     chan struct{}   // closed once it exited
}

// startBinary runs bin on the database at dbURL and Kafka at broker, with
// HTTP on a free port. It is killed at the test's end, which then logs its
// output if the test failed.
func startBinary(t *testing.T, bin, dbURL, broker string) *binary {
	t.Helper()
	p := &binary{httpAddr: freeAddr(t), logs: &testlog.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin)
	childproc.DieWithParent(p.cmd)
	p.cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "KAFKA_BOOTSTRAP_SERVERS="+broker, "HTTP_ADDR="+p.httpAddr)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("lockworker's output:\n%s", p.logs)
		}
	})
	return p
}

// awaitHealth waits until p's /health answers code with step (what
// httpapi.Starting says it is doing; "" once it serves).
func (p *binary) awaitHealth(t *testing.T, code int, step string) {
	t.Helper()
	m := &Main{HTTPAddr: p.httpAddr}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var h httpapi.Health
		got, body := get(c, m, "/health", &h)
		assert.Equal(c, code, got, body)
		assert.Equal(c, step, h.Step, body)
	}, runWait, 20*time.Millisecond)
}

// signal sends p a SIGTERM.
func (p *binary) signal(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))
}

// exitCode waits for p to exit, at most runWait, and returns its exit code.
func (p *binary) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(runWait):
		t.Fatalf("lockworker still runs %s after the signal", runWait)
		return 0
	}
}
