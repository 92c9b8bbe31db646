package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

func TestElectUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"elect", "--", "true"},
		{"elect", "--name", "x"},
		{"elect", "--name", "bad\x01name", "--", "true"},
		{"elect", "--name", "x", "--lease", "1ms", "--", "true"},
		{"elect", "--name", "x", "--grace", "-1s", "--", "true"},
		{"elect", "--name", "x", "--lease", "0", "--", "true"},
	} {
		var out, errOut testlog.Buffer
		code := run(context.Background(), args, &out, &errOut)
		assert.Equal(t, exitUsage, code, "lockctl %q: stderr %s", args, errOut.String())
		assert.NotEmpty(t, errOut.String(), "lockctl %q says why", args)
	}
	var out, errOut testlog.Buffer
	code := run(context.Background(), []string{"elect", "--brokers", "127.0.0.1:1", "--timeout", "2s", "--name", "x", "--", "true"}, &out, &errOut)
	assert.Equal(t, exitUnreachable, code, errOut.String())
	assert.Contains(t, errOut.String(), "unreachable")

	// A value too long for the contract is refused before lockctl connects.
	errOut = testlog.Buffer{}
	code = run(context.Background(), []string{"elect", "--brokers", "127.0.0.1:1", "--name", "x", "--value", strings.Repeat("v", 5000), "--", "true"}, &out, &errOut)
	assert.Equal(t, exitUsage, code, errOut.String())
	assert.Equal(t, "lockctl elect: --value is 5000 bytes (5013 as owner_metadata), over 4096\nrun 'lockctl elect -h' for usage\n", errOut.String())
}

// Two candidates take turns: each runs its command as leader, with its value
// and a fencing token greater than the previous leader's; elect passes the
// command's exit code on and resigns when it ends.
func TestElectRunsWhileLeader(t *testing.T) {
	const name = "ctl-elect-turns"
	log := filepath.Join(t.TempDir(), "log")
	script := `echo "start $LOCKCTL_ELECTION_VALUE $LOCKCTL_FENCING_TOKEN" >> "$1"; sleep 0.3; echo "end $LOCKCTL_ELECTION_VALUE" >> "$1"; exit $2`
	_, _, wait1 := start(context.Background(), "elect", "--name", name, "--value", "one", "--", "sh", "-c", script, "sh", log, "0")
	_, _, wait2 := start(context.Background(), "elect", "--name", name, "--value", "two", "--", "sh", "-c", script, "sh", log, "7")
	r1, r2 := wait1(), wait2()
	require.Equal(t, exitOK, r1.code, r1.stderr)
	require.Equal(t, 7, r2.code, r2.stderr)
	assert.Contains(t, r1.stderr, `value "one"`)
	b, err := os.ReadFile(log)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.Len(t, lines, 4, string(b))
	var first, second string
	var t1, t2 int64
	_, err = fmt.Sscanf(lines[0], "start %s %d", &first, &t1)
	require.NoError(t, err)
	_, err = fmt.Sscanf(lines[2], "start %s %d", &second, &t2)
	require.NoError(t, err)
	assert.Equal(t, "end "+first, lines[1], "one leader at a time")
	assert.Equal(t, "end "+second, lines[3])
	assert.ElementsMatch(t, []string{"one", "two"}, []string{first, second})
	assert.Less(t, t1, t2, "fencing tokens grow")
	r := lockctl(t, "query", "--lock", name)
	assert.Contains(t, r.stdout, name+" released", "the last leader resigned")
}

// A leader whose lease is ended behind its back stops its command and exits
// 4; a campaign interrupted before it wins exits 1 and leaves the queue.
func TestElectLostAndInterrupted(t *testing.T) {
	const name = "ctl-elect-lost"
	_, stderr, wait := start(context.Background(), "elect", "--name", name, "--owner", "leader", "--value", "v", "--lease", "1", "--", "sleep", "60")
	eventually(t, "elect to lead", func() bool { return strings.Contains(stderr.String(), "leader of "+name+" as leader") })
	r := lockctl(t, "query", "--lock", name)
	assert.Regexp(t, `metadata=\{"value": ?"v"\}`, r.stdout, "the value is the lock's owner_metadata")

	ctx, interrupt := context.WithCancel(context.Background())
	defer interrupt()
	_, stderr2, wait2 := start(ctx, "elect", "--name", name, "--owner", "follower", "--", "true")
	eventually(t, "the second candidate to queue", func() bool { return strings.Contains(stderr2.String(), "number 1 in line") })
	interrupt()
	r2 := wait2()
	assert.Equal(t, exitRefused, r2.code, r2.stderr)
	assert.Contains(t, r2.stderr, "interrupted before winning the election")

	r = lockctl(t, "release", "--lock", name, "--owner", "leader")
	require.Equal(t, exitOK, r.code, r.stderr)
	r = wait()
	assert.Equal(t, exitLeaseLost, r.code, r.stderr)
	assert.Contains(t, r.stderr, "stopped sleep (signal terminated); exit code 4")
	r = lockctl(t, "query", "--lock", name)
	assert.Contains(t, r.stdout, name+" released owner=leader", "the interrupted candidate was never granted")
}

// run and elect interrupted while they connect (brokers that accept and
// never answer) exit 1, as interrupted before the grant, not 3.
func TestInterruptedWhileConnecting(t *testing.T) {
	for _, args := range [][]string{{"elect", "--name", "x", "--", "true"}, {"run", "--lock", "x", "--", "true"}, {"acquire", "--lock", "x"}} {
		t.Run(args[0], func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			ctx, interrupt := context.WithCancel(context.Background())
			defer interrupt()
			var out, errOut testlog.Buffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, append([]string{args[0], "--brokers", ln.Addr().String(), "--timeout", "60"}, args[1:]...), &out, &errOut)
			}()
			conn, err := ln.Accept()
			require.NoError(t, err)
			defer conn.Close()
			interrupt()
			assert.Equal(t, exitRefused, <-done, errOut.String())
			assert.Contains(t, errOut.String(), "lockctl "+args[0]+": interrupted before ")
		})
	}
}

// A leader process SIGKILLed: its command dies with it (the shim SIGKILLs
// it, shim_linux.go), and the next candidate leads once the lease has run out and its
// lock-delay (--grace plus the reply timeout by default) has passed.
func TestElectLeaderKilled(t *testing.T) {
	const name = "ctl-elect-killed"
	// --timeout 3s: a reply timeout of 1 s.
	const lease, grace, delay = time.Second, time.Second, 2 * time.Second
	bin := buildLockctl(t)
	var errOut testlog.Buffer
	pidFile := filepath.Join(t.TempDir(), "pid")
	leader := exec.Command(bin, "elect", "--brokers", env.Brokers[0], "--name", name, "--value", "doomed", "--lease", "1", "--grace", "1s",
		"--timeout", "3s", "--", "sh", "-c", `echo $$ > "$1"; exec sleep 60`, "sh", pidFile)
	leader.Stderr = &errOut
	require.NoError(t, leader.Start())
	eventually(t, "the process to lead", func() bool { return strings.Contains(errOut.String(), "leader of "+name) })
	command := readPid(t, "its command", pidFile)
	defer func() {
		if !gone(command) { // the test failed: what it left
			_ = syscall.Kill(command, syscall.SIGKILL)
		}
	}()

	_, stderr, wait := start(context.Background(), "elect", "--name", name, "--value", "heir", "--", "true")
	eventually(t, "the heir to queue", func() bool { return strings.Contains(stderr.String(), "number 1 in line") })
	killed := time.Now()
	require.NoError(t, leader.Process.Kill())
	// Not leader.Wait: it would wait for an orphan holding stderr.
	_, _ = leader.Process.Wait()
	eventually(t, "its command to die with it", func() bool { return gone(command) })
	eventually(t, "the heir to lead", func() bool { return strings.Contains(stderr.String(), `value "heir"`) })
	took := time.Since(killed)
	t.Logf("the heir leads %s after the leader was SIGKILLed (lease %s, lock-delay %s)", took.Round(time.Millisecond), lease, delay)
	// The lock-delay counts from the lease's end, which comes after the
	// kill. That the heir leads at all, within eventually's 20 s, is the
	// rest: how soon after the lease and the lock-delay (a keep-alive in
	// flight at the kill stretches the lease by up to one) is lockbench's
	// to measure, not this test's.
	assert.GreaterOrEqual(t, took, delay)
	r := wait()
	assert.Equal(t, exitOK, r.code, r.stderr)
}

// run and elect stop COMMAND only once they hear the lease is lost, and
// COMMAND may take up to --grace to exit: by default the lease's lock-delay
// is --grace plus the reply timeout (the time lock.revoked may take to reach
// lockctl), so that after a revoke (or an expiry) nobody is granted the lock
// while COMMAND may still run. --lock-delay 0 opts out; a default over the
// contract's 60 s bound gets 60 s, and lockctl says so. A reader (run
// --shared) takes none unless given one.
func TestLockDelayCoversGrace(t *testing.T) {
	for _, tc := range []struct{ cmd, flag, ready string }{
		{"run", "--lock", "holding "},
		{"elect", "--name", "leader of "},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			// lose runs COMMAND under lock with flags, revokes its lease and
			// returns lockctl's stderr and the next acquire's result.
			lose := func(lock string, flags ...string) (string, result) {
				t.Helper()
				lock = fmt.Sprintf("%s-%s-%d", lock, tc.cmd, time.Now().UnixNano()) // not an earlier run's, in its lock-delay
				args := append(append([]string{tc.cmd, tc.flag, lock}, flags...), "--", "sleep", "60")
				_, stderr, wait := start(context.Background(), args...)
				eventually(t, tc.cmd+" to hold the lock", func() bool { return strings.Contains(stderr.String(), tc.ready) })
				r := lockctl(t, "revoke", "--lock", lock, "--reason", "test")
				require.Equal(t, exitOK, r.code, r.stderr)
				r = wait()
				require.Equal(t, exitLeaseLost, r.code, r.stderr)
				return r.stderr, lockctl(t, "acquire", "--lock", lock, "--owner", "next", "--json")
			}
			retryAfter := func(r result) float64 {
				t.Helper()
				require.Equal(t, exitRefused, r.code, "the lock-delay holds the lock: %s", r.stderr)
				require.Contains(t, r.stderr, "lock-delay")
				var ev topics.Event
				require.NoError(t, json.Unmarshal([]byte(r.stdout), &ev), r.stdout)
				require.NotNil(t, ev.RetryAfterSeconds)
				return *ev.RetryAfterSeconds
			}

			// --timeout 15s: a reply timeout of 5 s, the delay 3 s + 5 s.
			_, r := lose("ctl-delay-grace", "--grace", "3s", "--timeout", "15s")
			left := retryAfter(r)
			assert.Greater(t, left, 3.0, "the lock-delay is more than --grace")
			assert.LessOrEqual(t, left, 8.0, "the lock-delay is --grace + the reply timeout")

			_, r = lose("ctl-delay-none", "--grace", "3s", "--lock-delay", "0")
			assert.Equal(t, exitOK, r.code, "--lock-delay 0: granted at once: %s", r.stderr)

			if tc.cmd == "run" {
				// A reader takes no lock-delay unless given one.
				_, r = lose("ctl-delay-shared", "--shared", "--grace", "3s")
				assert.Equal(t, exitOK, r.code, "--shared: granted at once: %s", r.stderr)
				_, r = lose("ctl-delay-shared-given", "--shared", "--grace", "3s", "--lock-delay", "5s")
				assert.InDelta(t, 5, retryAfter(r), 2, "--shared --lock-delay 5s")
			}

			stderr, r := lose("ctl-delay-capped", "--grace", "90s")
			assert.Greater(t, retryAfter(r), 50.0, "the contract's longest lock-delay")
			assert.Contains(t, stderr, "--lock-delay is 1m0s, the contract's longest, for --grace 90s")
		})
	}
}

// The default --lock-delay of run and elect: --grace plus the reply timeout
// (a third of --timeout, at most 5 s), at most 60 s, with a warning then;
// a --lock-delay given is kept.
func TestDefaultLockDelay(t *testing.T) {
	for _, tc := range []struct {
		timeout, grace time.Duration
		given          *time.Duration
		want           time.Duration
		warns          bool
	}{
		{timeout: 9 * time.Second, grace: 10 * time.Second, want: 13 * time.Second},
		{timeout: time.Minute, grace: 10 * time.Second, want: 15 * time.Second},
		{timeout: 3 * time.Second, grace: 0, want: time.Second},
		{timeout: 0, grace: time.Second, want: 6 * time.Second}, // the client's default reply timeout
		{timeout: 9 * time.Second, grace: 58 * time.Second, want: time.Minute, warns: true},
		{timeout: 9 * time.Second, grace: 10 * time.Second, given: new(time.Duration), want: 0},
	} {
		var errOut strings.Builder
		c := &cli{stderr: &errOut, timeout: seconds{d: tc.timeout}}
		var d seconds
		if tc.given != nil {
			d = seconds{d: *tc.given, set: true}
		}
		c.defaultLockDelay(&d, &seconds{d: tc.grace})
		assert.Equal(t, tc.want, d.d, "--timeout %s --grace %s", tc.timeout, tc.grace)
		if tc.warns {
			assert.Contains(t, errOut.String(), "--lock-delay is 1m0s, the contract's longest, for --grace 58s (+ 3s for a revoke to reach lockctl)")
			assert.Contains(t, errOut.String(), "for up to 1s")
		} else {
			assert.Empty(t, errOut.String())
		}
	}
}
