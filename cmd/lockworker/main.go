// Command lockworker is the lock service: it consumes lock commands from Kafka,
// applies them to PostgreSQL and publishes the outcomes. Configuration comes
// from the environment (see README.md). With KAFKA_BOOTSTRAP_SERVERS unset it
// starts an embedded development broker.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// gcPercent replaces Go's default GOGC of 100. The worker's live heap is
// small (tens of MiB) and every command allocates, so at 100 the collector
// runs every few MiB and its work lands in the latency of the commands in
// flight (measurements: docs/performance.md). GOGC and GOMEMLIMIT in the
// environment still decide.
const gcPercent = 400

// memoryLimit is the soft memory limit set when GOMEMLIMIT is not: at GOGC
// 400 the heap may grow to five times what was live at the last
// collection, and a large transaction (a cleanup of many locks) holds tens
// of MiB for a moment (measurements: docs/performance.md). A live heap
// above it costs collector CPU, which the runtime caps, while it lasts.
const memoryLimit = 150 << 20

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	m := NewMain()
	if err := m.ParseEnv(os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		os.Exit(2)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		m.Logger.Info().Msg("signal received: draining (a second signal forces exit)")
		cancel()
		<-sigs
		m.Logger.Warn().Msg("second signal: exiting now")
		os.Exit(1)
	}()
	err := m.Run(ctx)
	switch {
	case err == nil:
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		// The signal came while Run was starting (waiting for Kafka, say):
		// the stop asked for, not a failure.
		m.Logger.Info().Err(err).Msg("lockworker stopped while starting")
	default:
		m.Logger.Error().Err(err).Msg("lockworker stopped")
		m.Close()
		os.Exit(1)
	}
	m.Close()
}
