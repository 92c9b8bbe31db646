// Command lockctl is lockworker's command line for people and scripts: take,
// release, extend, inspect, revoke and clean up locks, run a command while
// holding a lock or while leader of an election, watch lock events and one
// lock's changes live, and list the locks from the lock state topic.
//
// "lockctl help" prints its commands, their flags and its exit codes (the
// usage text in lockctl.go), and "lockctl COMMAND -h" a command's flags in
// full. Kafka TLS/SASL and topic names come from the same environment
// variables lockworker reads. Durations are Go durations ("30s", "2m") or
// plain seconds ("30", "0.5"), as in the contract.
package main

import (
	"context"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

func main() {
	// The first SIGINT, SIGTERM or SIGHUP (the terminal or ssh session
	// gone) cancels ctx: `run` then stops its command and releases the
	// lock, `watch` stops. A second SIGINT (Ctrl-C again) kills lockctl at
	// once, leaving the lock to its lease, once run's or elect's command
	// and what it started have been sent SIGKILL (killRunning); further
	// SIGTERMs and SIGHUPs are let pass, for they come in pairs without
	// anyone asking twice: an ssh session that drops sends the foreground
	// job a SIGHUP from its shell and another from the kernel as the shell
	// exits. A SIGHUP or SIGINT ignored at start (SIGHUP under nohup,
	// SIGINT in a background job of a shell without job control) stays
	// ignored, for lockctl and its command alike. The Go runtime keeps an
	// inherited SIG_IGN of those two only (signal.Ignored is false for the
	// rest): a SIGTERM ignored at start is caught as any, and the command
	// starts with its default action.
	var sigs []os.Signal
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP} {
		if !signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	ctx, stop := context.Background(), func() {}
	if len(sigs) > 0 { // none would mean every signal
		ctx, stop = signal.NotifyContext(ctx, sigs...)
	}
	var again []os.Signal // caught, and dropped, after the first
	for _, sig := range sigs {
		if sig != os.Interrupt {
			again = append(again, sig)
		}
	}
	go func() {
		<-ctx.Done()
		if len(again) > 0 {
			drop := make(chan os.Signal, 1)
			signal.Notify(drop, again...)
			go func() {
				for range drop {
				}
			}()
		}
		if !slices.Contains(sigs, os.Interrupt) {
			stop()
			return
		}
		second := make(chan os.Signal, 1)
		signal.Notify(second, os.Interrupt) // before stop: no SIGINT may find its default action yet
		stop()
		<-second
		killRunning()
		// Die of SIGINT, as its default action would: a shell running
		// lockctl then stops too.
		signal.Reset(os.Interrupt)
		_ = syscall.Kill(os.Getpid(), syscall.SIGINT)
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
