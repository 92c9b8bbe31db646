package worker

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// At the highest DEAD_LETTER_MAX_BYTES allowed (internal/config), the copy
// of a record with a key of a quarter of it and a value of the rest (a
// source record of 1 MB, which the commands topic takes) reaches the
// dead-letter topic through the relay within kgo's default record limit:
// the relay writes the key a second time, as the partition_key header, and
// the copy's bound counts it twice. Counted once, the record Kafka was
// sent was 1.125 MB, refused (MESSAGE_TOO_LARGE): the row was parked for
// good and the copy never delivered. The producer's headers named like the
// worker's and the relay's arrive under other names.
func TestDeadLetterCopyAtTheMaximumBoundFitsTheRecordLimit(t *testing.T) {
	const limit = 900_000
	names := topics.DefaultNames()
	key, value := bytes.Repeat([]byte("k"), limit/4), bytes.Repeat([]byte("v"), 1_000_000-limit/4)
	produced := []kgo.RecordHeader{{Key: topics.HeaderTruncated, Value: []byte("forged")},
		{Key: kafkapubsub.DefaultKeyMetadata, Value: []byte("forged")}}
	c, st := deadLetterOne(t, limit, &kgo.Record{Topic: names.Commands, Key: key, Value: value, Headers: produced})

	parked := relayDeadLetters(t, c, st)
	require.Empty(t, parked, "the copy parked")
	r := deadLetterCopy(t, c)
	headers := map[string]string{}
	size := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		headers[h.Key] = string(h.Value)
		size += len(h.Key) + len(h.Value) + deadLetterPerHeader
	}
	t.Logf("copy: key %d, value %d, %d headers; %d bytes in all", len(r.Key), len(r.Value), len(r.Headers), size)
	require.Equal(t, key[:limit/8], r.Key)
	require.Equal(t, string(r.Key), headers[kafkapubsub.DefaultKeyMetadata], "the key again")
	require.LessOrEqual(t, size, limit+deadLetterHeaderBytes, "the key counted twice")
	require.True(t, bytes.HasPrefix(value, r.Value))
	require.Equal(t, "key,value", headers[topics.HeaderTruncated])
	require.Equal(t, strconv.Itoa(len(value)), headers[topics.HeaderOriginalValueSize])
	require.Equal(t, "forged", headers["original_"+topics.HeaderTruncated])
	require.Equal(t, "forged", headers["original_"+kafkapubsub.DefaultKeyMetadata])
}

// The relay publishes a row's headers as watermill metadata, a map,
// written sorted by name: of headers sharing a name, as written on the
// copy (a producer's named like the worker's or the relay's renamed
// original_<name>), only one can reach the copy, and their order is lost.
// A copy that lost some says so as one cut for size does: truncated
// "headers" and the record's header count.
func TestDeadLetterCopyOfRepeatedHeaderNamesIsMarked(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers []kgo.RecordHeader
		kept    map[string]string // the producer's headers on the copy
		cut     bool
	}{
		{
			name: "a name twice",
			headers: []kgo.RecordHeader{{Key: "z-trace", Value: []byte("1")}, {Key: "x", Value: []byte("first")},
				{Key: "x", Value: []byte("second")}, {Key: "a", Value: []byte("3")}},
			kept: map[string]string{"z-trace": "1", "x": "first", "a": "3"},
			cut:  true,
		},
		{
			name: "names that meet once renamed",
			headers: []kgo.RecordHeader{{Key: topics.HeaderError, Value: []byte("e")}, {Key: "original_" + topics.HeaderError, Value: []byte("oe")},
				{Key: kafkapubsub.DefaultKeyMetadata, Value: []byte("k")}, {Key: "original_" + kafkapubsub.DefaultKeyMetadata, Value: []byte("ok")}},
			kept: map[string]string{"original_" + topics.HeaderError: "e", "original_" + kafkapubsub.DefaultKeyMetadata: "k"},
			cut:  true,
		},
		{
			name:    "no name twice",
			headers: []kgo.RecordHeader{{Key: "z-trace", Value: []byte("1")}, {Key: "a", Value: []byte("3")}},
			kept:    map[string]string{"z-trace": "1", "a": "3"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, st := deadLetterOne(t, DefaultDeadLetterMaxBytes, &kgo.Record{Topic: topics.DefaultNames().Commands,
				Key: []byte("key"), Value: []byte("not json"), Headers: tc.headers})
			require.Empty(t, relayDeadLetters(t, c, st), "the copy parked")
			r := deadLetterCopy(t, c)
			t.Logf("copy's headers: %v", r.Headers)
			got := map[string]string{}
			for _, h := range r.Headers {
				require.NotContains(t, got, h.Key, "a header twice on the copy")
				got[h.Key] = string(h.Value)
			}
			require.Equal(t, "key", string(r.Key))
			require.Equal(t, "not json", string(r.Value))
			if tc.cut {
				require.Equal(t, "headers", got[topics.HeaderTruncated])
				require.Equal(t, strconv.Itoa(len(tc.headers)), got[topics.HeaderOriginalHeaderCount])
				require.Equal(t, "3", got[topics.HeaderOriginalKeySize])
				require.Equal(t, "8", got[topics.HeaderOriginalValueSize])
			} else {
				require.NotContains(t, got, topics.HeaderTruncated)
			}
			for k, v := range tc.kept {
				require.Equal(t, v, got[k], "header %q", k)
			}
		})
	}
}

// deadLetterCopy reads c's one dead-letter record.
func deadLetterCopy(t *testing.T, c *kfake.Cluster) *kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topics.DefaultNames().DeadLetter),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	fs := cl.PollRecords(ctx, 1)
	require.NoError(t, fs.Err())
	require.Len(t, fs.Records(), 1)
	return fs.Records()[0]
}

// relayDeadLetters runs a relay over st's outbox into c until no
// dead-letter row waits, and returns the park reasons of those parked.
func relayDeadLetters(t *testing.T, c *kfake.Cluster, st *store.Store) []string {
	t.Helper()
	names := topics.DefaultNames()
	pub, pubClient, err := outbox.NewKafkaPublisher([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, 10*time.Second, names.ReplyPrefix, false, -1)
	require.NoError(t, err)
	t.Cleanup(pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx, 0) }()
	t.Cleanup(func() { cancel(); <-done })

	// Published (the row deleted) or parked, whichever comes.
	require.Eventually(t, func() bool {
		var waiting int
		err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE topic = $1 AND parked_until IS NULL`, names.DeadLetter).Scan(&waiting)
		return err == nil && waiting == 0
	}, time.Minute, 10*time.Millisecond)
	var parked []string
	rows, err := st.Pool.Query(ctx, `SELECT park_reason FROM outbox WHERE topic = $1`, names.DeadLetter)
	require.NoError(t, err)
	for rows.Next() {
		var reason string
		require.NoError(t, rows.Scan(&reason))
		parked = append(parked, reason)
	}
	require.NoError(t, rows.Err())
	return parked
}

// A producer's ce_id header is written twice by the relay (as ce_id and as
// the message's UUID header): a copy at the largest bound with a large one
// still fits the record limit, counted so.
func TestDeadLetterCopyWithALargeCEIDFits(t *testing.T) {
	const limit = 900_000
	ceID := bytes.Repeat([]byte("i"), limit/4-len(topics.HeaderCEID)-deadLetterPerHeader)
	key, value := bytes.Repeat([]byte("k"), limit/8), bytes.Repeat([]byte("v"), 600_000)
	c, st := deadLetterOne(t, limit, &kgo.Record{Topic: topics.DefaultNames().Commands, Key: key, Value: value,
		Headers: []kgo.RecordHeader{{Key: topics.HeaderCEID, Value: ceID}}})
	require.Empty(t, relayDeadLetters(t, c, st), "the copy parked")
}

// deadLetterOne applies r, a record the worker cannot apply, at partition
// 0's offset 0 with DeadLetterMaxBytes limit, and returns the cluster and
// the store holding its one dead-letter row.
func deadLetterOne(t *testing.T, limit int, r *kgo.Record) (*kfake.Cluster, *store.Store) {
	t.Helper()
	names := topics.DefaultNames()
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, names.DeadLetter))
	w, st := newApplierOn(t, c)
	w.cfg.DeadLetterMaxBytes = limit
	apply(w, segment{p: w.newPartition(w.hard, 0), records: []*kgo.Record{r}, polledAt: time.Now()})
	require.Len(t, outboxRows(t, st, names.DeadLetter, 0), 1)
	return c, st
}
