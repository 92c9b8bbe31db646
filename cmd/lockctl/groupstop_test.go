package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
)

// Without a controlling terminal a stop reaches what the command started
// outside its process group too (a setsid'd step, which the shim keeps
// below it): its SIGTERM, and once --grace has passed the SIGKILL, whether
// the command itself ended at the SIGTERM (the step then an orphan) or
// outlived it (the shim alive at the SIGKILL, which reaches also what the
// step handed off to as the SIGTERM came and exited). The exit code stays
// the command's.
func TestRunStopReachesWhatLeftTheGroup(t *testing.T) {
	bin := buildLockctl(t)
	dir := t.TempDir()
	// $1: where it writes its pid; a step's $2: where the helper it
	// starts writes its, $3: the helper (stay).
	stay, handoff := filepath.Join(dir, "stay"), filepath.Join(dir, "handoff")
	require.NoError(t, os.WriteFile(stay, []byte(`trap "" TERM; echo $$ > "$1"; exec sleep 1000`), 0o644))
	require.NoError(t, os.WriteFile(handoff, []byte(`trap 'setsid sh "$3" "$2" & exit 0' TERM; echo $$ > "$1"; while :; do sleep 0.1; done`), 0o644))
	for _, tc := range []struct {
		name, lock string
		trap       string // the command's own (caught: its step's is the step's)
		step       string
		code       int
	}{
		{"command ends at SIGTERM", "ctl-run-stop-setsid-ends", "", stay, 128 + int(syscall.SIGTERM)},
		{"command outlives SIGTERM", "ctl-run-stop-setsid-outlives", "trap : TERM", stay, 128 + int(syscall.SIGKILL)},
		{"step hands off at SIGTERM", "ctl-run-stop-setsid-handoff", "trap : TERM", handoff, 128 + int(syscall.SIGKILL)},
		// The command gone at once, the shim still holds the helper.
		{"command ends, step hands off", "ctl-run-stop-setsid-ends-handoff", "", handoff, 128 + int(syscall.SIGTERM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := t.TempDir()
			stepFile, helperFile := filepath.Join(files, "step"), filepath.Join(files, "helper")
			script := tc.trap + `
setsid sh "$3" "$1" "$2" "$4" >/dev/null 2>&1 </dev/null &
while :; do sleep 0.1; done`
			var stderr testlog.Buffer
			run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", tc.lock, "--lease", "60", "--grace", "1s", "--",
				"sh", "-c", script, "sh", stepFile, helperFile, tc.step, stay)
			run.Stderr = &stderr
			run.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
			require.NoError(t, run.Start())
			defer func() { _ = run.Process.Kill() }()
			// Written after its setsid and its trap.
			pids := []int{readPid(t, "the setsid'd step", stepFile)}
			defer func() {
				for _, pid := range pids {
					if !gone(pid) { // the test failed: what it left
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
			}()
			st, ok := stat(pids[0])
			require.True(t, ok, "the step is gone")
			require.Equal(t, pids[0], st.Session, "the step has a session of its own")

			require.NoError(t, run.Process.Signal(syscall.SIGTERM))
			err := run.Wait()
			if tc.step == handoff {
				pids = append(pids, readPid(t, "the step's helper", helperFile))
			}
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit, stderr.String())
			assert.Equal(t, tc.code, exit.ExitCode(), stderr.String())
			for _, pid := range pids {
				assert.True(t, gone(pid), "pid %d outlives lockctl's stop: %s", pid, stderr.String())
			}
			r := lockctl(t, "query", "--lock", tc.lock)
			assert.Contains(t, r.stdout, tc.lock+" released")
		})
	}
}

// A member of the command's process group gets a stop's SIGTERM once, by
// the group's: not again one by one, which would run its trap twice.
func TestRunStopSignalsAGroupMemberOnce(t *testing.T) {
	bin := buildLockctl(t)
	count := filepath.Join(t.TempDir(), "count")
	var stderr testlog.Buffer
	run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", "ctl-run-stop-once", "--lease", "60", "--grace", "1s", "--",
		"sh", "-c", `trap 'echo T >> "$1"' TERM; echo ready > "$1.ready"; while :; do sleep 0.1 & wait $!; done`, "sh", count)
	run.Stderr = &stderr
	run.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	require.NoError(t, run.Start())
	defer func() { _ = run.Process.Kill() }()
	eventually(t, "the command's trap to be set", func() bool {
		_, err := os.Stat(count + ".ready")
		return err == nil
	})
	require.NoError(t, run.Process.Signal(syscall.SIGTERM))
	err := run.Wait()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, stderr.String())
	assert.Equal(t, 128+int(syscall.SIGKILL), exit.ExitCode(), stderr.String())
	b, err := os.ReadFile(count)
	require.NoError(t, err)
	assert.Equal(t, "T\n", string(b), "the trap's runs")
}

// A lockctl SIGKILLed while a stop waits out --grace, the command gone
// already, takes what the command started with it: the shim, which holds
// it, tells lockctl's death from its release (the release is a byte; its
// death only closes the pipe, which the shim may see while lockctl is
// still its parent).
func TestRunKilledDuringAStopLeavesNothingRunning(t *testing.T) {
	bin := buildLockctl(t)
	dir := t.TempDir()
	stay := filepath.Join(dir, "stay")
	require.NoError(t, os.WriteFile(stay, []byte(`trap "" TERM; echo $$ > "$1"; exec sleep 1000`), 0o644))
	commandFile, stepFile := filepath.Join(dir, "command"), filepath.Join(dir, "step")
	var stderr testlog.Buffer
	run := exec.Command(bin, "run", "--brokers", env.Brokers[0], "--lock", "ctl-run-killed-in-stop", "--lease", "60", "--grace", "60s", "--",
		"sh", "-c", `echo $$ > "$1"; setsid sh "$3" "$2" >/dev/null 2>&1 </dev/null &
while :; do sleep 0.1; done`, "sh", commandFile, stepFile, stay)
	run.Stderr = &stderr
	run.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no controlling terminal
	require.NoError(t, run.Start())
	defer func() { _ = run.Process.Kill() }()
	command, step := readPid(t, "the command", commandFile), readPid(t, "the setsid'd step", stepFile)
	defer func() {
		if !gone(step) { // the test failed: what it left
			_ = syscall.Kill(step, syscall.SIGKILL)
		}
	}()
	require.NoError(t, run.Process.Signal(syscall.SIGTERM))
	// The command ends at the SIGTERM; the step, which ignores it, is left
	// for the SIGKILL at --grace's end, a minute on.
	eventually(t, "the command to end at the SIGTERM", func() bool { return gone(command) })
	require.False(t, gone(step), "the step ignores SIGTERM")
	require.NoError(t, run.Process.Kill())
	_, _ = run.Process.Wait()
	eventually(t, "the step to be killed with lockctl", func() bool { return gone(step) })
}
