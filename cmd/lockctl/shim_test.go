package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
)

// A lockctl that is SIGKILLed (kill -9, the OOM killer) leaves nothing of
// its command running beside the next holder: not the command, nor its
// child, nor a child that setsid'd, nor a daemon that a double fork
// orphaned while lockctl ran.
func TestRunKilledLeavesNothingRunning(t *testing.T) {
	const lock, owner = "ctl-run-killed", "killed"
	bin := buildLockctl(t)
	dir := t.TempDir()
	var files []string
	for _, name := range []string{"command", "child", "setsid", "daemon"} {
		files = append(files, filepath.Join(dir, name))
	}
	script := `echo $$ > "$1"
sleep 1000 & echo $! > "$2"
setsid sleep 1000 & echo $! > "$3"
(setsid sleep 1000 & echo $! > "$4")
wait`
	var stderr testlog.Buffer
	run := exec.Command(bin, append([]string{"run", "--brokers", env.Brokers[0], "--lock", lock, "--owner", owner, "--lease", "60", "--",
		"sh", "-c", script, "sh"}, files...)...)
	run.Stderr = &stderr
	run.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	require.NoError(t, run.Start())
	defer func() { _ = run.Process.Kill() }()
	pids := map[string]int{}
	for _, f := range files {
		pids[filepath.Base(f)] = readPid(t, filepath.Base(f), f)
	}
	defer func() {
		for _, pid := range pids {
			if !gone(pid) { // the test failed: what it left
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}()
	command, ok := stat(pids["command"])
	require.True(t, ok, "the command is gone")
	// Its pid is written as the fork starts; setsid runs after.
	for _, name := range []string{"setsid", "daemon"} {
		eventually(t, "the "+name+" sleep to have a session of its own", func() bool {
			st, ok := stat(pids[name])
			require.True(t, ok, "the %s sleep is gone", name)
			return st.Session != command.Session
		})
	}

	require.NoError(t, run.Process.Kill())
	// Not run.Wait: it would wait for an orphan holding stderr.
	_, _ = run.Process.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var left []string
		for name, pid := range pids {
			if !gone(pid) {
				left = append(left, name+" "+strconv.Itoa(pid))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still running 10s after lockctl was SIGKILLed: %v; lockctl's stderr:\n%s", left, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r := lockctl(t, "release", "--lock", lock, "--owner", owner)
	assert.Equal(t, exitOK, r.code, "the lock, left to its lease: %s", r.stderr)
}

// A command that fails to start once the lock is taken (of a format the
// kernel refuses; or changed since it was looked up) exits 126, as a shell
// says it, and the lock is released: the shim passes its start's error on.
func TestRunCommandThatFailsToStart(t *testing.T) {
	const lock = "ctl-run-exec-format"
	bad := filepath.Join(t.TempDir(), "bad")
	require.NoError(t, os.WriteFile(bad, []byte{0, 1, 2, 3}, 0o755))
	r := lockctl(t, "run", "--lock", lock, "--", bad)
	assert.Equal(t, 126, r.code, r.stderr)
	assert.Contains(t, r.stderr, "\nlockctl: fork/exec "+bad+": exec format error\n")
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// The descriptors lockctl's caller passes on past stderr (a make
// jobserver's, a 3>file) reach the command as they would without the shim,
// whose own pipes come after them.
func TestRunPassesDescriptorsOn(t *testing.T) {
	bin := buildLockctl(t)
	dir := t.TempDir()
	var files []*os.File
	for _, name := range []string{"three", "four"} {
		f, err := os.Create(filepath.Join(dir, name))
		require.NoError(t, err)
		defer f.Close()
		files = append(files, f)
	}
	var stderr testlog.Buffer
	run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", "ctl-run-fds", "--",
		"sh", "-c", `echo three >&3 && echo four >&4`)
	run.Stderr = &stderr
	run.ExtraFiles = files // fds 3 and 4
	require.NoError(t, run.Run(), stderr.String())
	for _, name := range []string{"three", "four"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, name+"\n", string(b))
	}
}

// A shim killed from outside (kill -9, the OOM killer) takes its command
// with it, and lockctl says so rather than take it for the command's own
// SIGKILL without a word.
func TestRunSaysTheShimWasKilled(t *testing.T) {
	bin := buildLockctl(t)
	shimPid := filepath.Join(t.TempDir(), "shim")
	var stderr testlog.Buffer
	run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", "ctl-run-shim-killed", "--",
		"sh", "-c", `echo $PPID > "$1"; exec sleep 1000`, "sh", shimPid)
	run.Stderr = &stderr
	run.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	require.NoError(t, run.Start())
	defer func() { _ = run.Process.Kill() }()
	require.NoError(t, syscall.Kill(readPid(t, "shim", shimPid), syscall.SIGKILL))
	err := run.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, stderr.String())
	assert.Equal(t, 137, exit.ExitCode(), stderr.String())
	assert.Contains(t, stderr.String(), "lockctl: lockctl's shim was killed before sh's end was reported")
}
