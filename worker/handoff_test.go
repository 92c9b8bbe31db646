package worker

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
)

// TestHandoffMarks: a transaction writing for a partition no relay of this
// process runs leaves a mark, and a transaction that finds another
// replica's mark on its partition has the relay read the table, so the
// other replica's rows go out before its own (which the relay would
// otherwise publish from memory at once, and the other's only at the next
// poll: an hour here). Last, an attempt whose COMMIT went unanswered has
// the relay read the table.
func TestHandoffMarks(t *testing.T) {
	const topic, mine, theirs = "locks.lock.acquired.v1", int32(1), int32(2)
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, topic))
	st := testdb.New(t)
	kopts := []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}
	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 10*time.Second, "")
	require.NoError(t, err)
	t.Cleanup(pubClient.Close)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour})
	require.NoError(t, err)
	w, err := New(Config{KafkaOpts: kopts, Store: st, Relay: relay})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = relay.Run(ctx, mine) }()
	t.Cleanup(func() { cancel(); <-done })

	cons, err := kgo.NewClient(append(kopts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
	require.NoError(t, err)
	t.Cleanup(cons.Close)
	var got []string
	published := func(n int) []string {
		t.Helper()
		pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
		defer pcancel()
		for len(got) < n && pctx.Err() == nil {
			for _, r := range cons.PollFetches(pctx).Records() {
				got = append(got, string(r.Value))
			}
		}
		require.Len(t, got, n)
		return got
	}
	write := func(partition int32, value string) {
		t.Helper()
		require.NoError(t, w.writeTx(ctx, func(tx pgx.Tx) (*handlers.Batch, error) {
			b := handlers.NewBatch(tx, w.env(partition))
			b.Publish(topic, []byte("k"), []byte(value), []topics.Header{{Key: "h", Value: []byte("v")}})
			return b, nil
		}))
	}
	marks := func(p int32) int {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox_marks WHERE source_partition = $1`, p).Scan(&n))
		return n
	}

	write(mine, "first")
	assert.Equal(t, []string{"first"}, published(1))
	assert.Zero(t, marks(mine), "a partition run here gets no mark")

	write(theirs, "for-the-owner")
	assert.Equal(t, 1, marks(theirs), "a partition run elsewhere gets a mark")

	// Another replica's row for our partition, with its mark.
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES ($1, $2, 'k', 'foreign', '')`, mine, topic)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox_marks (source_partition) VALUES ($1)`, mine)
	require.NoError(t, err)
	write(mine, "after")
	assert.Equal(t, []string{"first", "foreign", "after"}, published(3))
	assert.Zero(t, marks(mine), "the read took the mark")

	// Two attempts of one transaction: the first's COMMIT took effect
	// without an answer, and the retry, finding its records applied, had
	// nothing to write and reserved nothing. The first attempt's slot must
	// have the relay read the table, not take the retry's (empty) rows.
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES ($1, $2, 'k', 'committed-unanswered', '')`, mine, topic)
	require.NoError(t, err)
	b := &pgx.Batch{}
	first := w.reserve([]outbox.Row{{Partition: mine}}, b)
	settle([]*handoff{first}, nil, nil, func() []outbox.Row { return nil })
	assert.Equal(t, []string{"first", "foreign", "after", "committed-unanswered"}, published(4))
}
