package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
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

// On a terminal lockctl leaves what the command orphans to its usual
// reaper (init, or a subreaper above lockctl): it does not take it as its
// own child, which it would not reap while the command runs, each zombie
// using a pid up for as long as it does.
func TestRunOnATerminalAdoptsNoOrphans(t *testing.T) {
	const lock = "ctl-run-tty-orphans"
	bin := buildLockctl(t)
	_, tty, _ := openPTY(t)
	dir := t.TempDir()
	orphanFile, lockctlFile, done := filepath.Join(dir, "orphan"), filepath.Join(dir, "lockctl"), filepath.Join(dir, "done")
	var stderr testlog.Buffer
	// The orphan exits once its parent, a subshell, has ended ("$4"): an
	// orphan by then.
	script := `(sh -c 'echo $$ > "$1"; while [ ! -e "$2" ]; do sleep 0.01; done' sh "$1" "$4" &)
: > "$4"; echo $PPID > "$2"; while [ ! -e "$3" ]; do sleep 0.05; done`
	// As in TestRunOnATerminalStopsTheWholeCommand: a shell leads the
	// terminal's session and outlives lockctl.
	shell := exec.Command("sh", "-c", `"$@"; echo "lockctl exited $?" >&2; exec sleep 60`, "sh", bin, "run",
		"--brokers", env.Brokers[0], "--lock", lock, "--", "sh", "-c", script, "sh", orphanFile, lockctlFile, done, filepath.Join(dir, "orphaned"))
	shell.Stdin, shell.Stderr = tty, &stderr
	shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	require.NoError(t, shell.Start())
	defer func() { _ = shell.Process.Kill(); _ = shell.Wait() }()
	orphan, lockctlPid := readPid(t, "the orphan", orphanFile), readPid(t, "the command", lockctlFile)
	eventually(t, "the orphan to exit", func() bool { return gone(orphan) })
	st, ok := stat(orphan) // gone once reaped
	assert.True(t, !ok || st.PPID != lockctlPid, "the orphan is lockctl's zombie while the command runs")

	require.NoError(t, os.WriteFile(done, nil, 0o600))
	eventually(t, "lockctl to exit", func() bool { return strings.Contains(stderr.String(), "lockctl exited") })
	assert.Contains(t, stderr.String(), "lockctl exited 0")
	assert.NotContains(t, stderr.String(), "still run")
}

// A process lockctl had as a child before the command started (a wrapper
// script started it, then exec'd lockctl) is not the command's: lockctl
// never signals it, with a terminal or without, and the helper (which
// would note a SIGTERM or SIGHUP) runs on.
func TestRunNeverSignalsAChildItHadBeforeTheCommand(t *testing.T) {
	bin := buildLockctl(t)
	for _, terminal := range []bool{true, false} {
		t.Run(fmt.Sprintf("terminal=%v", terminal), func(t *testing.T) {
			lock := fmt.Sprintf("ctl-run-prior-child-%v", terminal)
			dir := t.TempDir()
			helperFile, signalled := filepath.Join(dir, "helper"), filepath.Join(dir, "signalled")
			// sleep 120 & exec lockctl run ..., the helper noting signals.
			wrapper := `sh -c 'trap "echo signalled >> \"\$2\"" TERM HUP; echo $$ > "$1"; while :; do sleep 0.1; done' sh "$1" "$2" >/dev/null 2>&1 </dev/null &
shift 2; exec "$@"`
			var stderr testlog.Buffer
			shell := exec.Command("sh", "-c", `sh -c "$0" sh "$@"; echo "lockctl exited $?" >&2; exec sleep 60`, wrapper,
				helperFile, signalled, bin, "run", "--brokers", env.Brokers[0], "--lock", lock, "--grace", "1s", "--", "true")
			shell.Stderr = &stderr
			shell.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // a session without a terminal
			if terminal {
				// As in TestRunOnATerminalStopsTheWholeCommand: a shell
				// leads the terminal's session and outlives lockctl.
				_, tty, _ := openPTY(t)
				shell.Stdin, shell.SysProcAttr.Setctty = tty, true
			}
			require.NoError(t, shell.Start())
			defer func() { _ = shell.Process.Kill(); _ = shell.Wait() }()
			helper := readPid(t, "the helper", helperFile)
			defer syscall.Kill(helper, syscall.SIGKILL)
			eventually(t, "lockctl to exit", func() bool { return strings.Contains(stderr.String(), "lockctl exited") })
			assert.Contains(t, stderr.String(), "lockctl exited 0")
			assert.NotContains(t, stderr.String(), "still run")
			assert.NoFileExists(t, signalled, "the helper was signalled")
			assert.False(t, gone(helper), "the helper was stopped")
		})
	}
}

// What a stop's SIGKILL did not end (here a process lockctl may not
// signal: the test's, root's, which joined the command's process group) is
// named on stderr before the release.
func TestRunSaysWhatOutlivedSIGKILL(t *testing.T) {
	if os.Geteuid() != 0 || hasControllingTerminal() {
		t.Skip("needs root, to run lockctl as another user, and no controlling terminal")
	}
	const lock = "ctl-run-kill-survivor"
	bin := buildLockctl(t)
	dir := t.TempDir()
	// lockctl runs as nobody: its binary and dir are to be reachable.
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	require.NoError(t, os.Chmod(filepath.Dir(bin), 0o755))
	require.NoError(t, os.Chmod(dir, 0o777))
	pidFile, proceed := filepath.Join(dir, "pid"), filepath.Join(dir, "proceed")
	var stderr testlog.Buffer
	run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", lock, "--grace", "0", "--",
		"sh", "-c", `echo $$ > "$1"; while [ ! -e "$2" ]; do sleep 0.01; done`, "sh", pidFile, proceed)
	run.Stderr = &stderr
	run.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	require.NoError(t, run.Start())
	defer func() { _ = run.Process.Kill(); _ = run.Wait() }()
	command := readPid(t, "the command", pidFile)
	survivor := exec.Command("sleep", "60")
	survivor.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: command}
	require.NoError(t, survivor.Start())
	defer func() { _ = survivor.Process.Kill(); _ = survivor.Wait() }()

	require.NoError(t, os.WriteFile(proceed, nil, 0o644))
	err := run.Wait()
	require.NoError(t, err, "lockctl's exit code is the command's: %s", stderr.String())
	assert.Contains(t, stderr.String(), "lockctl: sh exited, but processes it started still run: stopping them (SIGKILL) before releasing "+lock+"\n")
	assert.Contains(t, stderr.String(), "lockctl: still there 1s after SIGKILL: pid "+strconv.Itoa(survivor.Process.Pid)+
		" (a process lockctl may not signal, or one in an uninterruptible sleep); it may run on beside the next holder of "+lock+"\n")
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}

// The warning names at most ten pids, and the process group where /proc
// could name none.
func TestSurvivedKillNamesWhatIsLeft(t *testing.T) {
	l := &client.Lease{Namespace: "ns", Name: "job"}
	for _, tc := range []struct {
		pids []int
		what string
	}{
		{[]int{7}, "pid 7"},
		{[]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, "pids 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more"},
		{nil, "members of process group 42"},
	} {
		var stderr testlog.Buffer
		(&cli{stderr: &stderr}).survivedKill(tc.pids, 42, l)
		assert.Equal(t, "lockctl: still there 1s after SIGKILL: "+tc.what+
			" (a process lockctl may not signal, or one in an uninterruptible sleep); it may run on beside the next holder of ns/job\n", stderr.String())
	}
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
		if tc.live {
			assert.Equal(t, []int{cmd.Process.Pid}, live, "sh -c %q", tc.script)
		} else {
			assert.Empty(t, live, "sh -c %q", tc.script)
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
}
