package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// signalsChild, set in its environment, makes the test binary the process
// of TestSecondSignalEndsTheProcess.
const signalsChild = "LOCKBENCH_TEST_SIGNALS_CHILD"

// TestMain lets the test binary serve as a floor: lockbench starts itself
// (os.Executable) for --worker-bin floor:MODE, and in a test that is this
// binary. It also serves as the process whose signals
// TestSecondSignalEndsTheProcess sends.
func TestMain(m *testing.M) {
	if os.Getenv(signalsChild) != "" {
		ctx, cancel := signalContext()
		defer cancel()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("cancelled")
		time.Sleep(time.Minute) // the unwinding a second signal cuts short
		return
	}
	if len(os.Args) == 3 && os.Args[1] == "--serve-floor" {
		ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := serveFloor(ctx, os.Args[2])
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestFloorSmoke measures lockworker's floors against each other as builds:
// each answers every command as the closed loop expects.
func TestFloorSmoke(t *testing.T) {
	t.Parallel()
	rep, cfg := runFlags(t, "--scenario", "builds", "--baseline-bin", "floor:kafka", "--worker-bin", "floor:outbox", "--broker-memory", "--quick",
		"--clients", "4", "--duration", "1s", "--warmup", "300ms")
	requireBuildsRound(t, rep, cfg, "candidate floor:outbox against baseline floor:kafka")
}

func TestFloorModes(t *testing.T) {
	_, err := parseFlags([]string{"--scenario", "peer", "--worker-bin", "floor:fast"}, &bytes.Buffer{})
	require.ErrorContains(t, err, "kafka, commit, outbox")
	_, err = parseFlags([]string{"--scenario", "builds", "--worker-bin", "/bin/true", "--baseline-bin", "floor:none"}, &bytes.Buffer{})
	require.ErrorContains(t, err, `"floor:none"`)
}

// TestFloorPeerNamesTheFloor runs the peer scenario against a floor: the
// header says the target is the floor, not lockworker, and no goal is
// judged.
func TestFloorPeerNamesTheFloor(t *testing.T) {
	t.Parallel()
	rep, cfg := runFlags(t, "--scenario", "peer", "--worker-bin", "floor:kafka", "--broker-memory", "--quick",
		"--clients", "4", "--duration", "1s", "--warmup", "300ms")
	require.NotNil(t, rep.Peer)
	require.Equal(t, "floor:kafka", rep.Peer.Target)
	var table bytes.Buffer
	rep.print(&table, cfg)
	require.Contains(t, table.String(), "mode: child process: floor:kafka (not lockworker)  broker: kfake in lockbench's process, in memory ")
	require.NotEmpty(t, rep.Goals)
	for _, g := range rep.Goals {
		require.Nil(t, g.Met, g.What)
		require.True(t, strings.HasPrefix(g.What, "floor:kafka: "), g.What)
	}
}
