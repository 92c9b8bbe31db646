// Command devkafka runs lockworker's development broker (package embedded,
// franz-go's kfake) as a process of its own, so that several lockworker
// replicas can share it and be killed without killing it: the chaos test
// (internal/chaos) and lockbench's failover scenario use it.
//
//	devkafka -addr 127.0.0.1:0 -partitions 16 -min-session-timeout 6s
//
// It prints "devkafka listening on <host:port>" on stdout once the topics
// exist and runs until SIGINT or SIGTERM. Like the embedded broker it writes
// without fsync: records survive a killed process, not a host crash.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/topics"
)

func main() {
	addr := flag.String("addr", config.DefaultEmbeddedAddr, "listen and advertised address (port 0: any free port)")
	dir := flag.String("dir", "", "data directory (default: a new temporary directory, removed at exit)")
	partitions := flag.Int("partitions", 16, "partitions of the commands topic")
	minSession := flag.Duration("min-session-timeout", config.ApacheMinSessionTimeout, "group.min.session.timeout.ms (Apache Kafka's default is 6s)")
	verbose := flag.Bool("v", false, "log the broker's warnings and errors to stderr")
	flag.Parse()
	if err := run(*addr, *dir, int32(*partitions), *minSession, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(1)
	}
}

func run(addr, dir string, partitions int32, minSession time.Duration, verbose bool) error {
	if dir == "" {
		tmp, err := os.MkdirTemp("", "devkafka-")
		if err != nil {
			return fmt.Errorf("creating a data directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	log := zerolog.Nop()
	if verbose {
		log = zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	n := topics.DefaultNames()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b, err := embedded.Start(ctx, embedded.Options{
		Addr: addr, Dir: dir, MinSessionTimeout: minSession, Logger: log,
		Topics: map[string]int32{n.Commands: partitions, n.Acquired: 1, n.Released: 1, n.Expired: 1, n.Revoked: 1, n.DeadLetter: 1, n.State: partitions},
	})
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Printf("devkafka listening on %s\n", b.Addr())
	<-ctx.Done()
	return nil
}
