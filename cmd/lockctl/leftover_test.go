package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
)

// leftBehind is a command that sends a step to the background and exits
// without waiting for it, once the step has written its pid to $1; the
// step, on SIGTERM, writes "cleaned" to $2 and exits.
const leftBehind = `sh -c 'trap "echo cleaned > \"\$2\"; exit 0" TERM; echo $$ > "$1"; while :; do sleep 0.1; done' sh "$1" "$2" >/dev/null 2>&1 </dev/null &
while [ ! -s "$1" ]; do sleep 0.01; done`

// A command that exits by itself leaving a process running: run says so,
// stops that process (SIGTERM first, given its grace) and only then
// releases the lock, passing the command's exit code on.
func TestRunStopsWhatTheCommandLeftRunning(t *testing.T) {
	const lock = "ctl-run-left-behind"
	dir := t.TempDir()
	pidFile, cleaned := filepath.Join(dir, "pid"), filepath.Join(dir, "cleaned")
	r := lockctl(t, "run", "--lock", lock, "--", "sh", "-c", leftBehind, "sh", pidFile, cleaned)
	pid := readPid(t, "the step", pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "lockctl: sh exited, but processes it started still run: stopping them (SIGTERM, then SIGKILL after --grace 10s) before releasing "+lock+"\n")
	assert.True(t, gone(pid), "the step outlives run: %s", r.stderr)
	b, err := os.ReadFile(cleaned)
	require.NoError(t, err, "the step was not given SIGTERM and its time to clean up: %s", r.stderr)
	assert.Equal(t, "cleaned\n", string(b))
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")

	r = lockctl(t, "run", "--lock", lock, "--", "sh", "-c", "true & wait")
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.NotContains(t, r.stderr, "still run", "nothing was left running")
}

// So does it on a terminal, where the command shares lockctl's process
// group and what it left running is found as lockctl's child (a
// subreaper's), not below the command, which it no longer is.
func TestRunOnATerminalStopsWhatTheCommandLeftRunning(t *testing.T) {
	const lock = "ctl-run-tty-left-behind"
	bin := buildLockctl(t)
	_, tty, _ := openPTY(t)
	dir := t.TempDir()
	pidFile, cleaned := filepath.Join(dir, "pid"), filepath.Join(dir, "cleaned")
	var stderr testlog.Buffer
	// As in TestRunOnATerminalStopsTheWholeCommand: a shell leads the
	// terminal's session and outlives lockctl.
	shell := exec.Command("sh", "-c", `"$@"; echo "lockctl exited $?" >&2; exec sleep 60`, "sh", bin, "run",
		"--brokers", env.Brokers[0], "--lock", lock, "--", "sh", "-c", leftBehind, "sh", pidFile, cleaned)
	shell.Stdin, shell.Stderr = tty, &stderr
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	require.NoError(t, shell.Start())
	defer func() { _ = shell.Process.Kill(); _ = shell.Wait() }()
	pid := readPid(t, "the step", pidFile)
	defer syscall.Kill(pid, syscall.SIGKILL) // should it survive
	eventually(t, "lockctl to exit", func() bool { return strings.Contains(stderr.String(), "lockctl exited") })
	assert.Contains(t, stderr.String(), "lockctl exited 0")
	assert.Contains(t, stderr.String(), "lockctl: sh exited, but processes it started still run: stopping them")
	assert.True(t, gone(pid), "the step outlives run: %s", stderr.String())
	b, err := os.ReadFile(cleaned)
	require.NoError(t, err, "the step was not given SIGTERM and its time to clean up: %s", stderr.String())
	assert.Equal(t, "cleaned\n", string(b))
}

// A process group whose members are zombies alone (exited, their parent
// not having reaped them yet) has nothing left to stop, though kill(-pgid,
// 0) still finds it.
func TestGroupLiveIgnoresZombies(t *testing.T) {
	if _, ok := groupLive(os.Getpid()); !ok {
		t.Skip("no /proc of this pid namespace")
	}
	for _, tc := range []struct {
		script string
		live   bool
	}{{"exit 0", false}, {"exec sleep 60", true}} {
		cmd := exec.Command("sh", "-c", tc.script)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		require.NoError(t, cmd.Start())
		if !tc.live {
			require.True(t, waitExited(cmd.Process.Pid)) // a zombie until Wait
		}
		require.NoError(t, syscall.Kill(-cmd.Process.Pid, 0), "the group is there")
		live, ok := groupLive(cmd.Process.Pid)
		assert.True(t, ok)
		assert.Equal(t, tc.live, live, "sh -c %q", tc.script)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}
