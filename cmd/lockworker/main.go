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
	"time"
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

// errArguments refuses any argument: lockworker reads its configuration
// from the environment alone, and the image's entrypoint is lockworker, so
// `docker run IMAGE lockctl ...` would otherwise start a replica, joining
// the group and migrating the schema, where lockctl was meant.
var errArguments = errors.New("lockworker takes no arguments: its configuration is the environment (README, Configuration); to run lockctl from the image, docker run --entrypoint lockctl IMAGE ...")

func main() {
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "lockworker:", errArguments)
		os.Exit(2)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	m := NewMain()
	if err := m.ParseEnv(os.LookupEnv); err != nil {
		// Not logged: the logger is not set up as configured yet.
		fmt.Fprintln(os.Stderr, "lockworker:", err)
		os.Exit(exitStatus(err, false))
	}
	// A closed stdout or stderr (`lockworker 2>&1 | jq` stopped with Ctrl-C,
	// which ends the reader too) must not kill the replica mid-drain: Go
	// dies of SIGPIPE on such a write unless it is ignored, and the log
	// lines are all that is lost.
	signal.Ignore(syscall.SIGPIPE)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if code := m.serve(sigs, stopDeadline); code != 0 {
		os.Exit(code)
	}
}

// stopDeadline bounds a stop, Run's drain and Close together, from the
// first signal. Each step has a bound of its own, but they add up: with
// PostgreSQL and Kafka both hung, the batches in flight (abandoned after
// worker.DefaultDrainTimeout, 10 s), each partition's relay's last pass
// and hand-over (up to about 40 s), leaving the group (10 s), HTTP (5 s)
// and the pool's close would take about 70 s, past the grace period of
// deploy/kubernetes (60 s) and docker-compose.yml: SIGKILL would end the
// process without a word of why. Past it the process exits 1 and says at
// which step (serve), which costs no more than that SIGKILL would (the
// state and offsets are in PostgreSQL; the group rebalances after the
// session timeout). Grace periods must exceed it (deploy/deploy_test.go).
const stopDeadline = 45 * time.Second

// pairedSignal is how soon after the first a SIGTERM is taken as its copy,
// not an operator's second signal: coreutils timeout and some CI cancels
// signal both the process and its group, so one stop can bring two
// SIGTERMs.
const pairedSignal = time.Second

// serve runs m until it stops and returns the process's exit code (finish).
// The first signal on sigs stops Run, which drains; a second one (a SIGINT,
// or a SIGTERM pairedSignal or more after the first), or a stop that
// outlasts deadline, ends the wait at once with 1, Run or Close still
// running: the process exits.
func (m *Main) serve(sigs <-chan os.Signal, deadline time.Duration) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	finished := make(chan int, 1)
	go func() { finished <- m.finish(m.Run(ctx), ctx.Err() != nil) }()
	select {
	case code := <-finished:
		return code
	case <-sigs:
	}
	first := time.Now()
	m.Logger.Info().Msg("signal received: draining (a second signal forces exit)")
	cancel()
	overdue := time.NewTimer(deadline)
	defer overdue.Stop()
	for {
		select {
		case code := <-finished:
			return code
		case sig := <-sigs:
			if sig != os.Interrupt && time.Since(first) < pairedSignal {
				continue
			}
			m.Logger.Warn().Msg("second signal: exiting now")
		case <-overdue.C:
			// The step in the error too: where LOG_LEVEL drops error lines,
			// failed writes the error alone to stderr.
			step := m.stopAt()
			m.failed(fmt.Errorf("the stop did not end within %s of the signal (at: %s)", deadline, step), stopOverdueLine, "step", step)
		}
		return 1
	}
}

// stopOverdueLine is the line of a stop that outlasted its deadline.
const stopOverdueLine = "lockworker stopped: the stop outlasted its deadline, exiting 1"

// errRefused marks an error that is the configuration's: a setting
// refused by ParseEnv (a secret's _FILE unreadable among them), a Config
// built in code that does not validate, or a file a setting names
// (KAFKA_TLS_*, AUTH_KEYS, AUTH_REQUESTER_KEYS,
// AUTH_HMAC_KEY_FILE, DATABASE_URL's sslrootcert, sslcert, sslkey)
// unreadable or invalid, found by Run. The exit code is 2 (exitStatus).
var errRefused = errors.New("configuration refused")

// exitStatus is the process's exit code for err, what ParseEnv or Run
// returned, after a signal if signalled: 0 for a stop a signal asked for,
// 2 for a configuration refused (errRefused), 1 for another failure.
func exitStatus(err error, signalled bool) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errRefused):
		return 2
	case signalled && errors.Is(err, context.Canceled):
		return 0
	default:
		return 1
	}
}

// finish ends the process's work once Run returned err, after a signal if
// signalled: it logs how Run ended (exitCode), runs Close, and returns
// the process's exit code. A clean stop's line comes after Close, the
// last of all: Close leaves the group and stops HTTP (up to about 15 s),
// so a line before it could be followed by a warning, or by a second
// signal's exit 1. A failure is logged before Close, so that its reason
// is out even if Close never ends.
func (m *Main) finish(err error, signalled bool) int {
	code := m.exitCode(err, signalled)
	m.Close()
	if err == nil {
		// So that an operator can tell a clean stop from a process that
		// died draining.
		m.Logger.Info().Msg(drainedLine)
	}
	return code
}

// drainedLine is a clean stop's last line.
const drainedLine = "lockworker stopped: drained, exiting 0"

// exitCode logs how Run ended, with err, what it returned, after a signal
// if signalled, unless it stopped cleanly (finish logs that), and returns
// the process's exit code (exitStatus).
func (m *Main) exitCode(err error, signalled bool) int {
	code := exitStatus(err, signalled)
	switch {
	case err == nil:
	case code == 2:
		m.failed(err, "lockworker stopped: configuration refused")
	case code == 0:
		// The signal came while Run was starting (waiting for Kafka, say):
		// the stop asked for, not a failure. But a step that was retrying
		// (PostgreSQL down: store's "giving up ... (last error: ...)")
		// says why it had not started, at Warn so that it is seen.
		ev := m.Logger.Info()
		if !onlyCanceled(err) {
			ev = m.Logger.Warn()
		}
		var step string
		if s := m.step.Load(); s != nil {
			step = *s
		}
		ev.Err(err).Str("step", step).Msg("lockworker stopped while starting")
	default:
		m.failed(err, "lockworker stopped")
	}
	return code
}

// failed logs err, why the process exits non-zero, at error level with
// msg and fields (zerolog's Fields: key, value, ...); where LOG_LEVEL drops
// that level (fatal, panic, disabled) it writes err to stderr instead, as
// main does ParseEnv's: a failure always says why.
func (m *Main) failed(err error, msg string, fields ...any) {
	if ev := m.Logger.Error(); ev.Enabled() {
		ev.Fields(fields).Err(err).Msg(msg)
		return
	}
	fmt.Fprintln(m.stderr, "lockworker:", err)
}

// onlyCanceled reports whether every error err wraps, down to those that
// wrap nothing, is context.Canceled.
func onlyCanceled(err error) bool {
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !onlyCanceled(e) {
				return false
			}
		}
		return true
	case interface{ Unwrap() error }:
		if e := u.Unwrap(); e != nil {
			return onlyCanceled(e)
		}
	}
	return errors.Is(err, context.Canceled) // at a leaf: equal, or its Is says so
}

// buildRevision is the revision a build stamps with -ldflags
// "-X main.buildRevision=...": the Dockerfile's (its REVISION build
// argument), whose context leaves .git out for the toolchain to read.
var buildRevision string

// revision is the revision the binary was built from: the one stamped
// (buildRevision), else the VCS revision the Go toolchain records
// (vcs.revision), else "unknown": a build outside a checkout, or with
// -buildvcs=false, records none.
func revision() string {
	if buildRevision != "" {
		return buildRevision
	}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}
