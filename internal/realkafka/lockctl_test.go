package realkafka

import (
	"bytes"
	"context"
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

	"github.com/omninode/lockworker/topics"
)

// testLockctl runs the lockctl binary as a user would, with the run's
// settings in its environment: acquire, a second owner refused (exit code 1,
// LOCK_HELD), query, release, and watch from the beginning seeing the grant
// and the release.
func testLockctl(ctx context.Context, t *testing.T, s *suite) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	const lock = "ctl-deploy"
	lockctl := func(args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, s.lockctl, append(args, "--json")...)
		cmd.Env = append(os.Environ(), s.env()...)
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

	// watch prints the lock's lifecycle events until interrupted.
	watch := lockctl("watch", "--lock", lock, "--from-beginning")
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
	seen := func() (types []string) {
		for _, line := range strings.Split(strings.TrimSpace(printed()), "\n") {
			if ev, err := topics.DecodeEvent([]byte(line)); err == nil && ev.LockInfo != nil && ev.LockInfo.FencingToken == token {
				types = append(types, ev.Type)
			}
		}
		return types
	}
	for deadline := time.Now().Add(30 * time.Second); len(seen()) < 2; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("lockctl watch did not print the grant and the release of token %d; it printed:\n%s", token, printed())
		}
	}
	require.ElementsMatch(t, []string{topics.TypeAcquired, topics.TypeReleased}, seen())
	require.NoError(t, watch.Process.Signal(syscall.SIGINT))
	select {
	case err := <-done:
		require.NoError(t, err, "lockctl watch exits 0 on SIGINT; it printed:\n%s", printed())
	case <-time.After(30 * time.Second):
		t.Fatal("lockctl watch did not stop on SIGINT")
	}
}

// lockctl's exit codes (cmd/lockctl).
const (
	exitOK      = 0
	exitRefused = 1
)
