package realkafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/topics"
)

// testLockctl runs the lockctl binary as a user would, with the run's
// settings in its environment: acquire, a second owner refused (exit code 1,
// LOCK_HELD), query and release, with watch --lock printing each revision of
// the lock meanwhile, and locks showing its last state.
func testLockctl(ctx context.Context, t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const lock = "ctl-deploy"
	lockctl := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, s.lockctl, append(args, "--json")...)
		cmd.Env = append(os.Environ(), s.env()...)
		childproc.DieWithParent(cmd) // not left running should the test binary die
		return cmd
	}
	// run returns lockctl's exit code and the event it printed.
	run := func(args ...string) (int, topics.Event) {
		t.Helper()
		var out, errOut bytes.Buffer
		cmd := lockctl(args...)
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else {
			require.NoError(t, err, "lockctl %s", strings.Join(args, " "))
		}
		ev, err := topics.DecodeEvent(bytes.TrimSpace(out.Bytes()))
		require.NoError(t, err, "lockctl %s printed %q (stderr %q)", strings.Join(args, " "), out.String(), errOut.String())
		return code, ev
	}

	// watch --lock follows the lock's revisions on the lock state topic
	// until interrupted: its state now (unused: revision 0), then each
	// change.
	watch := lockctl("watch", "--lock", lock)
	out, err := os.Create(filepath.Join(t.TempDir(), "watch.out")) // the child writes it, the test reads it
	require.NoError(t, err)
	defer out.Close()
	watch.Stdout, watch.Stderr = out, out
	printed := func() string {
		b, _ := os.ReadFile(out.Name())
		return string(b)
	}
	require.NoError(t, watch.Start())
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	// revisions are the lock's states watch printed, by revision.
	revisions := func() (states []topics.LockState) {
		for _, line := range strings.Split(strings.TrimSpace(printed()), "\n") {
			var st topics.LockState
			if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &st) == nil {
				states = append(states, st)
			}
		}
		return states
	}
	awaitRevisions := func(n int) []topics.LockState {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if st := revisions(); len(st) >= n {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("lockctl watch printed fewer than %d states:\n%s", n, printed())
			}
		}
	}
	awaitRevisions(1) // it reads from here on

	code, acq := run("acquire", "--lock", lock, "--owner", "ops", "--lease", "60s")
	require.Equal(t, exitOK, code)
	require.Equal(t, topics.TypeAcquired, acq.Type)
	token := acq.LockInfo.FencingToken

	code, refused := run("acquire", "--lock", lock, "--owner", "intruder")
	require.Equal(t, exitRefused, code)
	require.Equal(t, topics.CodeLockHeld, refused.ErrorCode)

	code, q := run("query", "--lock", lock)
	require.Equal(t, exitOK, code)
	require.Equal(t, topics.StatusAcquired, q.LockInfo.Status)
	require.Equal(t, "ops", q.LockInfo.OwnerID)
	require.Equal(t, token, q.LockInfo.FencingToken)

	code, rel := run("release", "--lock", lock, "--owner", "ops", "--token", strconv.FormatInt(token, 10))
	require.Equal(t, exitOK, code)
	require.Equal(t, topics.TypeReleased, rel.Type)
	code, q = run("query", "--lock", lock)
	require.Equal(t, exitOK, code)
	require.Equal(t, topics.StatusReleased, q.LockInfo.Status)

	// The grant and the release, each a revision; the refusal and the
	// queries changed nothing.
	states := awaitRevisions(3)
	require.Len(t, states, 3, "lockctl watch printed:\n%s", printed())
	require.Equal(t, []int64{0, 1, 2}, []int64{states[0].Revision, states[1].Revision, states[2].Revision})
	require.Equal(t, []string{topics.StatusAcquired, topics.StatusReleased}, []string{states[1].Status, states[2].Status})
	require.Len(t, states[1].Holders, 1)
	require.Equal(t, token, states[1].Holders[0].FencingToken)
	require.NoError(t, watch.Process.Signal(syscall.SIGINT))
	select {
	case err := <-done:
		require.NoError(t, err, "lockctl watch exits 0 on SIGINT; it printed:\n%s", printed())
	case <-time.After(30 * time.Second):
		t.Fatal("lockctl watch did not stop on SIGINT")
	}

	// locks prints the lock table, read from the state topic.
	var table bytes.Buffer
	locks := lockctl("locks")
	locks.Stdout = &table
	require.NoError(t, locks.Run())
	var row *topics.LockState
	for _, line := range strings.Split(strings.TrimSpace(table.String()), "\n") {
		if st, err := topics.DecodeLockState([]byte(line)); err == nil && st.LockName == lock {
			row = &st
		}
	}
	require.NotNil(t, row, "lockctl locks lists %s; it printed:\n%s", lock, table.String())
	require.Equal(t, int64(2), row.Revision)
	require.Equal(t, topics.StatusReleased, row.Status)
}

// lockctl's exit codes (cmd/lockctl).
const (
	exitOK      = 0
	exitRefused = 1
)
