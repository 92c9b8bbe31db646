package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A second Ctrl-C, the escape hatch while a stop takes its --grace, ends
// lockctl at once, leaving the lock to its lease, but SIGKILLs what the
// command started first: elsewhere than Linux nothing else stops them (on
// Linux the shim would, as lockctl dies), and a grandchild ignoring SIGTERM
// would run on beside the next holder.
func TestRunSecondInterruptKillsTheCommand(t *testing.T) {
	const lock, owner = "ctl-run-int-twice", "int-twice"
	handleSignals(t, os.Interrupt)
	stopping := filepath.Join(t.TempDir(), "stopping")
	// sleep ignores SIGTERM; sh says it got one, then waits for sleep.
	cmd, stderr, pid := startRun(t, lock, owner,
		`trap "" TERM; sleep 300 & echo $! > "$1"; trap 'echo > "$2"' TERM; wait; wait`, stopping)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	// Only then the second: two pending SIGINTs are one.
	eventually(t, "the command to be stopping", func() bool { _, err := os.Stat(stopping); return err == nil })
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	sent := time.Now()
	err := cmd.Wait()
	exited := time.Now()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, stderr.String())
	ws, ok := exit.Sys().(syscall.WaitStatus)
	require.True(t, ok)
	assert.True(t, ws.Signaled() && ws.Signal() == syscall.SIGINT, "lockctl dies of SIGINT, as before: %v; %s", ws, stderr.String())
	assert.Less(t, exited.Sub(sent), 5*time.Second, "lockctl waited for --grace 10s")
	for !gone(pid) && time.Since(exited) < time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	assert.True(t, gone(pid), "the grandchild, which ignores SIGTERM, still runs a second after lockctl's exit")
	r := lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" acquired", "left to its lease, not released")
	r = lockctl(t, "release", "--lock", lock, "--owner", owner)
	assert.Equal(t, exitOK, r.code, r.stderr)
}

// A COMMAND that is not found (127) or cannot be run (126) fails before
// the lock is taken: with --wait, not after waiting for the lock.
func TestRunFindsTheCommandBeforeTakingTheLock(t *testing.T) {
	const lock = "ctl-run-no-command"
	r := lockctl(t, "acquire", "--lock", lock, "--owner", "holder", "--lease", "60")
	require.Equal(t, exitOK, r.code, r.stderr)
	defer lockctl(t, "release", "--lock", lock, "--owner", "holder")
	dir := t.TempDir()
	notExecutable := filepath.Join(dir, "script")
	require.NoError(t, os.WriteFile(notExecutable, []byte("#!/bin/sh\n"), 0o644))
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"run", "--lock", lock, "--wait", "30s", "--", "/nonexistent/command"}, 127,
			`lockctl: exec: "/nonexistent/command": stat /nonexistent/command: no such file or directory; the lock was not taken; exit code 127`},
		{[]string{"run", "--lock", lock, "--wait", "30s", "--", "lockctl-no-such-command", "arg"}, 127,
			`lockctl: exec: "lockctl-no-such-command": executable file not found in $PATH; the lock was not taken; exit code 127`},
		{[]string{"run", "--lock", lock, "--wait", "30s", "--", notExecutable}, 126,
			`lockctl: exec: "` + notExecutable + `": permission denied; the lock was not taken; exit code 126`},
		{[]string{"run", "--lock", lock, "--wait", "30s", "--", dir}, 126,
			`lockctl: exec: "` + dir + `": is a directory; the lock was not taken; exit code 126`},
		{[]string{"elect", "--name", lock, "--", "/nonexistent/command"}, 127,
			`lockctl: exec: "/nonexistent/command": stat /nonexistent/command: no such file or directory; the lock was not taken; exit code 127`},
	} {
		began := time.Now()
		r := lockctl(t, tc.args...)
		assert.Equal(t, tc.code, r.code, "%q: %s", tc.args, r.stderr)
		assert.Equal(t, tc.says+"\n", r.stderr, "%q", tc.args)
		assert.Less(t, time.Since(began), 5*time.Second, "%q waited for the lock", tc.args)
	}
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, "owner=holder ")
	assert.Contains(t, r.stdout, "acquisitions=1 ", "nobody else took the lock, nor queued for it")
}

// An interrupted run says so, and how its command ended: one that exits 0
// when stopped leaves lockctl's 0 explained.
func TestRunSaysWhyItStoppedTheCommand(t *testing.T) {
	const lock = "ctl-run-stopped-says"
	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	stdout, _, wait := start(ctx, "run", "--lock", lock, "--", "sh", "-c", `trap 'exit 0' TERM; echo ready; while :; do sleep 0.1; done`)
	eventually(t, "the command to trap SIGTERM", func() bool { return strings.Contains(stdout.String(), "ready") })
	interrupt() // as SIGINT to lockctl
	r := wait()
	assert.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stderr, "\nlockctl: context canceled; stopped sh (exit code 0); released "+lock+"; exit code 0\n")
	r = lockctl(t, "query", "--lock", lock)
	assert.Contains(t, r.stdout, lock+" released")
}
