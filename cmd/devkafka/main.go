// Command devkafka runs lockworker's development broker (package embedded,
// franz-go's kfake) as a process of its own, so that several lockworker
// replicas can share it and be killed without killing it: the chaos test
// (internal/chaos) and lockbench's failover scenario use it.
//
//	devkafka -addr 127.0.0.1:0 -partitions 16 -min-session-timeout 6s
//
// It creates the topics a worker would (worker.Topics: the lock state topic
// compacted), under the names lockworker reads from the environment
// (KAFKA_TOPIC_*), with -partitions (default COMMANDS_PARTITIONS, 16) for
// the commands and lock state topics, so that replicas started on it with
// another COMMANDS_PARTITIONS still share its count. It prints "devkafka
// listening on <host:port>" on stdout once the topics exist and runs until
// SIGINT or SIGTERM.
//
// It keeps its data in -dir. Without -dir it uses a new temporary directory
// at every start, removed when it stops on a signal and left behind when it
// is killed, so nothing survives its restart. It prints the directory on
// stderr at start ("devkafka: data directory ..."). With -dir, records
// survive a killed process, but not a host crash (like the embedded broker
// it writes without fsync). Like it, it never compacts (kfake's compaction
// rewrites a partition's files in place, which a kill would cut short) nor
// deletes by age, so -dir only grows and the lock state topic keeps every
// record, not only each lock's last. A killed devkafka does not keep the
// idempotent producers' sequence windows, which kfake saves only when it
// stops cleanly: a batch it stored but had not answered, which a replica
// retries once devkafka is back on the same -dir, is stored a second time
// (package embedded, "Persistence"). It holds two files open for each
// partition written to (a topic created with its default count has 10;
// the reply topics lockworker and its SDK create have one): past
// the process's open-file limit (ulimit -n) every further write fails
// UNKNOWN_SERVER_ERROR, so raise it for runs with thousands of requesters.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

func main() {
	// Flags first, so that -h answers whatever the environment holds.
	addr := flag.String("addr", config.DefaultEmbeddedAddr, "listen and advertised address (port 0: any free port)")
	dir := flag.String("dir", "", "data directory (default: a new temporary directory at every start, removed at exit: nothing survives a restart)")
	partitions := flag.Int64("partitions", 0, fmt.Sprintf("partitions of the commands and lock state topics, 1 to %d (default: COMMANDS_PARTITIONS)", config.MaxCommandsPartitions))
	minSession := flag.Duration("min-session-timeout", config.ApacheMinSessionTimeout, fmt.Sprintf("group.min.session.timeout.ms, %s to %s (Apache Kafka's default is 6s)", config.EmbeddedMinSessionTimeoutLow, config.EmbeddedMinSessionTimeoutHigh))
	verbose := flag.Bool("v", false, "log the broker's warnings and errors to stderr")
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "partitions" })
	tc, err := topicsFromEnv(os.Getenv)
	var n int32
	if err == nil {
		n, err = partitionCount(*partitions, given, tc.CommandsPartitions)
	}
	if err == nil {
		err = checkMinSession(*minSession)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(2)
	}
	if err := run(*addr, *dir, tc.Names(), n, *minSession, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "devkafka:", err)
		os.Exit(1)
	}
}

// partitionCount is -partitions if it was given, else commands
// (COMMANDS_PARTITIONS). It is bounded as COMMANDS_PARTITIONS is: a count
// beyond is refused rather than truncated, or allocated by the broker
// until it runs out of memory.
func partitionCount(flagValue int64, given bool, commands int32) (int32, error) {
	if !given {
		return commands, nil
	}
	if flagValue < 1 || flagValue > config.MaxCommandsPartitions {
		return 0, fmt.Errorf("-partitions %d: must be from 1 to %d", flagValue, config.MaxCommandsPartitions)
	}
	return int32(flagValue), nil
}

// checkMinSession refuses a -min-session-timeout out of
// EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT's range: the broker would take a
// value of 0 or less as its default, 6 s, unsaid, and one above its
// maximum session timeout refuses every group's join.
func checkMinSession(d time.Duration) error {
	if d < config.EmbeddedMinSessionTimeoutLow || d > config.EmbeddedMinSessionTimeoutHigh {
		return fmt.Errorf("-min-session-timeout %s: must be from %s to %s", d, config.EmbeddedMinSessionTimeoutLow, config.EmbeddedMinSessionTimeoutHigh)
	}
	return nil
}

// topicsFromEnv reads the topic settings as lockworker does
// (KAFKA_TOPIC_*, COMMANDS_PARTITIONS, REPLY_TOPIC_PREFIX), and no other
// setting: one only lockworker uses cannot stop devkafka. Nor can
// KAFKA_TOPIC_REPLICATION_FACTOR, lockworker's for the topics it creates
// on a real cluster: devkafka is one broker, its topics one replica each.
func topicsFromEnv(getenv func(string) string) (config.TopicsConfig, error) {
	cfg, err := config.FromEnv(func(k string) string {
		if (k != "KAFKA_TOPIC_REPLICATION_FACTOR" && strings.HasPrefix(k, "KAFKA_TOPIC_")) || k == "COMMANDS_PARTITIONS" || k == "REPLY_TOPIC_PREFIX" {
			return getenv(k)
		}
		return ""
	})
	return cfg.Topics, err
}

// brokerOptions are the embedded broker's options with the topics a worker
// of these names and commands partitions needs.
func brokerOptions(addr, dir string, names topics.Names, partitions int32, minSession time.Duration, log zerolog.Logger) embedded.Options {
	o := embedded.Options{Addr: addr, Dir: dir, MinSessionTimeout: minSession, Logger: log,
		Topics: map[string]embedded.Topic{}}
	for _, t := range worker.Topics(names, partitions) {
		o.Topics[t.Name] = embedded.Topic{Partitions: t.Partitions, Configs: t.Configs}
	}
	return o
}

func run(addr, dir string, names topics.Names, partitions int32, minSession time.Duration, verbose bool) error {
	kept := "kept"
	if dir == "" {
		tmp, err := os.MkdirTemp("", "devkafka-")
		if err != nil {
			return fmt.Errorf("creating a data directory: %w", err)
		}
		defer os.RemoveAll(tmp)
		dir = tmp
		kept = "temporary: removed at a stop on SIGINT or SIGTERM, left behind if devkafka is killed, never read again"
	}
	fmt.Fprintf(os.Stderr, "devkafka: data directory %s (%s)\n", dir, kept)
	log := zerolog.Nop()
	if verbose {
		log = zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b, err := embedded.Start(ctx, brokerOptions(addr, dir, names, partitions, minSession, log))
	if err != nil {
		return err
	}
	defer b.Close()
	fmt.Printf("devkafka listening on %s\n", b.Addr())
	<-ctx.Done()
	return nil
}
