package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// script is an executable sh script of body, standing in for a binary.
func script(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755))
	return path
}

func TestBrokerAddrIsFromItsListeningLine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := StartBroker(ctx, script(t, `echo starting; echo "devkafka listening on 127.0.0.1:4321"; exec sleep 60`), 1, time.Second)
	require.NoError(t, err)
	defer b.Close()
	require.Equal(t, "127.0.0.1:4321", b.Addr)
}

func TestBrokerExitingBeforeItListensIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := StartBroker(ctx, script(t, `echo "no port"; exit 3`), 1, time.Second)
	require.ErrorContains(t, err, "exited before it was ready (exit status 3)")
}

// consuming is a replica script's start: the line Ready waits for.
const consuming = `echo "lockworker is consuming" >&2; `

// readyReplica starts a replica "w0" running the script body and waits
// until it is ready; it is killed when the test ends.
func readyReplica(t *testing.T, body string) *Replica {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := NewReplica("w0", script(t, body), nil, nil)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Kill() })
	require.NoError(t, r.Ready(ctx))
	return r
}

func TestReplicaTermIsAnErrorIfTheDrainFails(t *testing.T) {
	r := readyReplica(t, `trap 'exit 1' TERM; `+consuming+`while :; do sleep 0.1; done`)
	err := r.Term(5 * time.Second)
	require.EqualError(t, err, "replica w0 after SIGTERM: exit status 1 (unclean stop)")
	require.ErrorIs(t, err, ErrUncleanStop)
	require.NoError(t, r.Err(), "an exit Term asked for is not Err's")
}

// A drain that outlasts Term's grace is killed, and that is an unclean
// stop, as a failed drain is, with the exit's error.
func TestReplicaTermKillsAfterGrace(t *testing.T) {
	r := readyReplica(t, `trap '' TERM; `+consuming+`while :; do sleep 0.1; done`)
	err := r.Term(300 * time.Millisecond)
	require.EqualError(t, err, "replica w0 did not stop within 300ms, so it was killed: signal: killed (unclean stop)")
	require.ErrorIs(t, err, ErrUncleanStop)
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
}

// A replica that exits as Term's grace ends, before the kill reaches it,
// is judged by its exit status: 0 is a clean stop, another an unclean one,
// not a kill. On SIGTERM the script exits at once (its wait, unlike a
// sleep, is cut short by the trap), but a child of its holds its output
// open past the grace, so the exit is seen only after it. The grace is
// long beside the exit: on a busy machine 300 ms were not.
func TestReplicaTermExitAtGraceIsJudgedByItsStatus(t *testing.T) {
	for _, c := range []struct {
		status string
		want   string
	}{{"0", ""}, {"1", "replica w0 after SIGTERM: exit status 1 (unclean stop)"}} {
		r := readyReplica(t, `trap 'sleep 4 >&2 & exit `+c.status+`' TERM; `+consuming+`while :; do sleep 0.1 & wait $!; done`)
		err := r.Term(2 * time.Second)
		if c.want == "" {
			require.NoError(t, err, "exit status 0")
			continue
		}
		require.EqualError(t, err, c.want)
		require.ErrorIs(t, err, ErrUncleanStop)
	}
}

func TestReplicaErrIsAnExitNobodyAskedFor(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The script exits once the test opens the FIFO for writing.
	fifo := filepath.Join(t.TempDir(), "exit")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	r := NewReplica("w0", script(t, consuming+`read x <'`+fifo+`'; exit 2`), nil, nil)
	require.NoError(t, r.Start())
	t.Cleanup(func() { _ = r.Kill() })
	require.NoError(t, r.Ready(ctx))
	require.NoError(t, r.Err(), "running")
	opened := make(chan error, 1)
	go func() { // opening blocks until the script opens it to read
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err == nil {
			err = w.Close()
		}
		opened <- err
	}()
	exited := r.Exited()
	// Not raced against exited: the script may read the FIFO and exit
	// before the opener reports the open it made.
	select {
	case err := <-opened:
		require.NoError(t, err)
	case <-ctx.Done():
		t.Fatalf("the script never read the FIFO: %v", r.Err())
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Fatal("the script did not exit after it read the FIFO")
	}
	require.ErrorContains(t, r.Err(), "exit status 2")
}

// A line over the reader's 1 MiB must not leave the process blocked on a
// full pipe: its exit is still seen, and why the output was not read.
func TestBrokerPrintingALineOver1MiBIsNotBlocked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := StartBroker(ctx, script(t, `head -c 3000000 /dev/zero | tr '\0' x; echo; echo more; exit 3`), 1, time.Second)
	require.ErrorContains(t, err, "exited before it was ready (exit status 3; its output unread after: bufio.Scanner: token too long)")
}

// A process that printed its ready line and exited at once before
// waitReady looked is ready: select must not pick the exit at random.
func TestWaitReadyAfterReadyAndExitIsReady(t *testing.T) {
	p := &proc{cmd: &exec.Cmd{}, ready: make(chan struct{}), done: make(chan struct{})}
	close(p.ready)
	close(p.done)
	for range 100 {
		require.NoError(t, p.waitReady(context.Background(), "bin"))
	}
}

// Kill and Term of a replica that exited on its own say so, with its exit
// status, as Err does.
func TestReplicaStopAfterItExitedIsItsExit(t *testing.T) {
	for _, stop := range []func(r *Replica) error{(*Replica).Kill, func(r *Replica) error { return r.Term(5 * time.Second) }} {
		r := readyReplica(t, consuming+`exit 2`)
		<-r.Exited()
		err := stop(r)
		require.ErrorIs(t, err, ErrExitedUnasked)
		require.EqualError(t, err, "replica w0 exited unasked (exit status 2)")
	}
}

// A replica that exited but is not yet reaped (a child of its holds its
// output open) takes Kill's signal without effect: Kill says it exited
// unasked, with its exit status, not that it killed it.
func TestReplicaKillAfterAnExitNotYetSeenIsItsExit(t *testing.T) {
	r := readyReplica(t, consuming+`sleep 2 >&2 & exit 2`)
	stat := fmt.Sprintf("/proc/%d/stat", r.p.cmd.Process.Pid)
	require.Eventually(t, func() bool { // a zombie: exited, not reaped
		b, err := os.ReadFile(stat)
		return err == nil && strings.Contains(string(b), ") Z ")
	}, 10*time.Second, 10*time.Millisecond)
	select {
	case <-r.Exited():
		t.Fatal("reaped already: the child did not hold the output")
	default:
	}
	err := r.Kill()
	require.ErrorIs(t, err, ErrExitedUnasked)
	require.EqualError(t, err, "replica w0 exited unasked (exit status 2)")
}

// A process whose exit is not seen after SIGKILL (a child of its holds its
// output open) does not block Kill or Term for ever: they give up after
// killWait with an error of their own.
func TestReplicaStopGivesUpOnAKilledProcessNotSeenGone(t *testing.T) {
	defer func(w time.Duration) { killWait = w }(killWait)
	killWait = 300 * time.Millisecond
	for _, c := range []struct {
		stop func(r *Replica) error
		want string
	}{
		{(*Replica).Kill, "replica w0 was sent SIGKILL and not seen gone within 300ms"},
		{func(r *Replica) error { return r.Term(100 * time.Millisecond) }, "replica w0 was sent SIGKILL and not seen gone within 300ms"},
	} {
		r := readyReplica(t, `trap '' TERM; sleep 3 >&2 & `+consuming+`while :; do sleep 0.1; done`)
		done := make(chan error, 1)
		go func() { done <- c.stop(r) }()
		select {
		case err := <-done:
			require.ErrorContains(t, err, c.want)
			require.NotErrorIs(t, err, ErrUncleanStop)
			require.NotErrorIs(t, err, ErrExitedUnasked)
		case <-time.After(2 * time.Second):
			t.Fatal("the stop waited on")
		}
	}
}

// A signal Signal sends is answered while nothing waits: the exit that
// follows is seen on Exited, and a Term after it finds the process gone.
func TestReplicaSignalDoesNotWait(t *testing.T) {
	r := readyReplica(t, `trap 'exit 3' USR1; `+consuming+`while :; do sleep 0.1; done`)
	require.NoError(t, r.Signal(syscall.SIGUSR1))
	select {
	case <-r.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("the script did not exit on SIGUSR1")
	}
	require.EqualError(t, r.Term(5*time.Second), "replica w0 exited unasked (exit status 3)")
	require.Nil(t, r.Exited(), "stopped")
	require.ErrorContains(t, r.Signal(syscall.SIGUSR1), "not running")
}

// Logged is closed at a line logged after it that holds its text, by the
// process running or a later one; a line before it does not count.
func TestReplicaLogged(t *testing.T) {
	r := readyReplica(t, `trap 'echo "resumed: it stalled" >&2' USR1; echo "it stalled before" >&2; `+consuming+`while :; do sleep 0.1; done`)
	stalled, other := r.Logged("it stalled"), r.Logged("never said")
	require.False(t, closed(stalled), "a line logged before Logged")
	require.NoError(t, r.Signal(syscall.SIGUSR1))
	select {
	case <-stalled:
	case <-time.After(30 * time.Second):
		t.Fatal("the line logged after Logged was not seen")
	}
	require.False(t, closed(other))

	again := r.Logged("it stalled")
	require.NoError(t, r.Kill())
	require.NoError(t, r.Start())
	select {
	case <-again:
	case <-time.After(30 * time.Second):
		t.Fatal("the line logged by the process started later was not seen")
	}
}
