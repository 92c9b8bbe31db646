// Package embedded runs lockworker's development Kafka broker: franz-go's
// kfake, in process, speaking the Kafka protocol so any client (franz-go,
// librdkafka/kcat, Java) can use it. lockworker starts it when
// KAFKA_BOOTSTRAP_SERVERS is unset (docs/design.md "Embedded broker").
//
// It is for development only: one broker, no replication, no TLS, no
// authentication, and it deletes no record by itself: no retention, even
// for a topic that sets retention.ms or retention.bytes, and no compaction,
// even for a topic with cleanup.policy=compact (see Persistence), so the
// data directory only grows and a reader of a compacted topic (the lock
// state topic) reads every record it was given, not only each key's last.
// It also keeps every idempotent producer's ID for good, and does not
// check the records inside a produced batch (docs/design.md "Embedded
// broker").
//
// # Persistence
//
// Data lives in Options.Dir (kfake.DataDir). kfake writes every produced
// batch to its segment file as it arrives, and every topic change, group
// offset commit and producer ID it issues to its state files at once;
// Close additionally saves snapshots, among them the idempotent producers'
// sequence windows (seq_windows.json), which nothing else saves. So:
//
//   - A clean Close keeps everything.
//   - A killed process (SIGKILL, panic, os.Exit) keeps every acknowledged
//     record, topic and group offset too: the writes already sit in the
//     operating system's page cache, which outlives the process.
//     TestKilledProcessKeepsRecords checks this. It holds because nothing
//     rewrites a segment file: kfake's cleaner compacts a partition by
//     removing all its segment files, then writing the survivors, and a
//     process killed in between would lose the partition's records, so
//     Start turns it off (log.cleaner.backoff.ms, otherwise an hour;
//     TestNoCompactionByItself). Cluster().Compact, for tests, still
//     compacts, with that risk. A killed process does not keep what
//     the sequence windows learned since the last clean Close: the
//     restarted broker has no window for a producer on a partition it
//     first wrote to since then (kfake takes its next batch there as new,
//     whatever its sequence), and an outdated one where it wrote before
//     that Close too. So a batch stored but not yet answered when the
//     process died, which a producer that outlived it (an SDK client or
//     lockctl on this broker, a lockworker replica on cmd/devkafka)
//     retries after the restart, is stored a second time, at the
//     partition's end, or, against an outdated window, refused as out of
//     order (OUT_OF_ORDER_SEQUENCE_NUMBER). Apache Kafka rebuilds producer
//     state from its log and answers such a retry as a duplicate.
//   - A machine crash or power loss can lose the last acknowledged batches,
//     as with real Kafka's default flush policy. Options.SyncWrites fsyncs
//     every batch to close that gap, at a large cost in produce latency; a
//     development broker does not need it, so it is off by default.
//
// kfake has no guard against two clusters sharing one directory, which
// would corrupt it; Start takes an exclusive lock on the directory (flock,
// released by the kernel even when the process is killed).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/omninode/lockworker/internal/kafkalog"
)

// Defaults, the same as package config's EMBEDDED_KAFKA_ADDR and
// EMBEDDED_KAFKA_DIR.
const (
	DefaultAddr = "127.0.0.1:9092"
	DefaultDir  = ".data/kafka"
)

// cleanerOff is the longest log.cleaner.backoff.ms kfake can take: it
// makes the cleaner's interval time.Duration(ms) * time.Millisecond, and a
// longer one would overflow, to an interval that is negative (NewTicker
// panics) or short. About 292 years.
var cleanerOff = strconv.FormatInt(int64(time.Duration(math.MaxInt64)/time.Millisecond), 10)

// versions are kfake's own (every key at its highest, kversion.Stable's
// features) but Produce capped at v12, which names topics: kfake panics,
// ending the process, on a Produce v13 naming two topics by IDs it does
// not know, as a client that learned the IDs before the broker lost its
// data sends (or two it knows, with an invalid acks). Clients negotiate
// v12 through ApiVersions; a v13 request is refused by closing the
// connection, as Kafka refuses an unserved version. Any cap also turns off
// kfake's model of KAFKA-15591 (a never-written partition refuses an
// unknown producer's first sequence other than 0), which no released Kafka
// has.
//
// Client telemetry (KIP-714: GetTelemetrySubscriptions, PushTelemetry) is
// not advertised either, as Apache Kafka advertises it only with a
// telemetry receiver (metrics reporter) configured. kfake subscribes every
// client to all metrics, so each kgo client (the SDK's, lockworker's own)
// would gzip and push them every 30 s and once more at Close, to a broker
// that discards them: with 1,000 SDK Clients, twice the idle heap and CPU,
// and closing them 5 times slower. A kgo client pushes only to a broker
// advertising both keys.
func versions() *kversion.Versions {
	v := kversion.Stable()
	for k := int16(0); k <= kmsg.MaxKey; k++ {
		v.SetMaxKeyVersion(k, math.MaxInt16)
	}
	v.SetMaxKeyVersion(int16(kmsg.Produce), 12)
	v.SetMaxKeyVersion(int16(kmsg.GetTelemetrySubscriptions), -1) // -1 removes the key
	v.SetMaxKeyVersion(int16(kmsg.PushTelemetry), -1)
	return v
}

// Options configures Start.
type Options struct {
	// Addr is where the broker listens and what it advertises to clients
	// (default DefaultAddr). Port 0 picks a free port; Broker.Addr tells
	// which. An unspecified host (0.0.0.0) is advertised as is, which only
	// local clients can follow.
	Addr string
	// Dir keeps topics, records and group offsets across restarts (default
	// DefaultDir, relative to the working directory). Created if missing.
	Dir string
	// Topics, by name, are created when missing. An existing topic is left
	// alone, even with another partition count (changing the count would
	// move keys between partitions) or other configs; a partition count or
	// a configured cleanup.policy that differs is logged as a warning.
	Topics map[string]Topic
	// SyncWrites fsyncs every produced batch (kfake.SyncWrites), so records
	// survive a machine crash too, not only a killed process. Slow.
	SyncWrites bool
	// MinSessionTimeout is the broker's group.min.session.timeout.ms
	// (kfake.GroupMinSessionTimeout; default 6 s, Apache Kafka's), so a
	// group session timeout real Kafka refuses is refused here too.
	MinSessionTimeout time.Duration
	// Logger receives the development-only warning and kfake's own logs
	// (its errors and warnings as such, its info as debug, its debug as
	// trace). The zero value logs nothing.
	Logger zerolog.Logger
}

// Topic is how a topic of Options.Topics is created.
type Topic struct {
	// Partitions is its partition count; no default, it must be >= 1.
	Partitions int32
	// Configs are the configs it is created with (cleanup.policy,
	// segment.bytes...); nil: the broker's defaults.
	Configs map[string]string
}

// Broker is a running embedded broker.
type Broker struct {
	cluster *kfake.Cluster
	addr    string
	dir     string
	log     zerolog.Logger

	closeOnce sync.Once
	unlock    func()
}

// Start starts the broker and creates the missing Options.Topics. ctx bounds
// the start only; the broker runs until Close.
func Start(ctx context.Context, o Options) (*Broker, error) {
	if o.Addr == "" {
		o.Addr = DefaultAddr
	}
	if o.Dir == "" {
		o.Dir = DefaultDir
	}
	for name, t := range o.Topics {
		if t.Partitions < 1 {
			return nil, fmt.Errorf("embedded kafka: topic %q: %d partitions", name, t.Partitions)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: data dir %q: %w", o.Dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("embedded kafka: %w", err)
	}

	log := o.Logger.With().Str("component", "embedded-kafka").Logger()
	kopts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.ClusterID("lockworker-embedded"),
		kfake.MaxVersions(versions()),
		// kfake always listens on 127.0.0.1:<port>; this honours the host
		// of Addr as well.
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, o.Addr)
		}),
		kfake.DataDir(dir),
		kfake.WithLogger(kafkalog.Broker(log)),
		kfake.BrokerConfigs(map[string]string{
			// kfake's cleaner, started once a compacted topic exists,
			// compacts by removing all of a partition's segment files,
			// then writing the survivors: a process killed in between
			// loses acknowledged records (the lock state topic is
			// compacted). It runs every log.cleaner.backoff.ms; never,
			// here.
			"log.cleaner.backoff.ms": cleanerOff,
			// The cleaner (should a client start it with a shorter
			// log.cleaner.backoff.ms) also applies retention.ms to every
			// topic, Kafka's 7 days where none is set: the lock state
			// table would lose a lock quiet for a week.
			"log.retention.ms": "-1",
		}),
	}
	if o.SyncWrites {
		kopts = append(kopts, kfake.SyncWrites())
	}
	if o.MinSessionTimeout > 0 {
		kopts = append(kopts, kfake.GroupMinSessionTimeout(o.MinSessionTimeout))
	}
	cluster, err := kfake.NewCluster(kopts...)
	if err != nil {
		unlock()
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "listen" {
			return nil, fmt.Errorf("embedded kafka: cannot listen on %s (another Kafka or lockworker running? set EMBEDDED_KAFKA_ADDR, or KAFKA_BOOTSTRAP_SERVERS to use a real Kafka): %w", o.Addr, err)
		}
		return nil, fmt.Errorf("embedded kafka: start with data dir %s: %w", dir, err)
	}
	b := &Broker{cluster: cluster, addr: cluster.ListenAddrs()[0], dir: dir, log: log, unlock: unlock}

	// Created here rather than with kfake.SeedTopics: kfake applies seed
	// topics only to an empty data dir, so a topic added to Topics later
	// would never appear after the first start.
	if err := b.createTopics(ctx, o.Topics); err != nil {
		b.Close()
		return nil, err
	}

	log.Warn().Str("addr", b.addr).Str("dir", dir).Bool("sync_writes", o.SyncWrites).
		Msg("EMBEDDED KAFKA BROKER STARTED: FOR DEVELOPMENT ONLY. One in-process broker, no replication, no TLS, no authentication, no retention, no compaction. Set KAFKA_BOOTSTRAP_SERVERS to use a real Kafka cluster.")
	return b, nil
}

func (b *Broker) createTopics(ctx context.Context, topics map[string]Topic) error {
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	sort.Strings(names)
	for _, t := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		want, configs := topics[t].Partitions, topics[t].Configs
		err := b.cluster.CreateTopic(t, want, configs)
		switch {
		case err == nil:
			b.log.Info().Str("topic", t).Int32("partitions", want).Interface("configs", configs).Msg("created topic")
		case errors.Is(err, kerr.TopicAlreadyExists):
			if have := int32(len(b.cluster.PartitionInfos(t))); have != want {
				b.log.Warn().Str("topic", t).Int32("partitions", have).Int32("configured", want).
					Msg("topic exists with another partition count; left unchanged")
			}
			// A lock state table created elsewhere without compaction
			// would lose locks to retention: worth a word.
			if want, ok := configs["cleanup.policy"]; ok {
				if have := cleanupPolicy(b.cluster.TopicInfo(t)); have != want {
					b.log.Warn().Str("topic", t).Str("cleanup.policy", have).Str("configured", want).
						Msg("topic exists with another cleanup.policy; left unchanged")
				}
			}
		default:
			return fmt.Errorf("embedded kafka: create topic %q: %w", t, err)
		}
	}
	return nil
}

// cleanupPolicy is the cleanup.policy of a topic: its own, else the
// broker's default, "delete" (Start sets no log.cleanup.policy).
func cleanupPolicy(t *kfake.TopicInfo) string {
	if t != nil {
		if v := t.Configs["cleanup.policy"]; v != nil {
			return *v
		}
	}
	return "delete"
}

// Addr is the host:port clients connect to (the real port when Options.Addr
// asked for port 0).
func (b *Broker) Addr() string { return b.addr }

// Cluster is the kfake cluster, for tests that inject faults with its
// control functions.
func (b *Broker) Cluster() *kfake.Cluster { return b.cluster }

// Dir is the absolute data directory.
func (b *Broker) Dir() string { return b.dir }

// Close stops the broker: it stops accepting connections, saves its state to
// Dir and releases the directory. Clients still connected see errors. Safe
// to call more than once.
func (b *Broker) Close() {
	b.closeOnce.Do(func() {
		b.cluster.Close() // persists; kfake logs (not returns) save errors
		b.unlock()
		b.log.Info().Str("dir", b.dir).Msg("embedded Kafka broker stopped")
	})
}
