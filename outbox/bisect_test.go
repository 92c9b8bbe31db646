package outbox_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
)

// TestRefusedBatchBisected: when the broker refuses a whole produce batch
// for good, the relay finds the refused rows by publishing the failed rows
// in halves, in fewer round trips than one a row: for a topic whose
// max.message.bytes is below the batch (every batch of more than a few
// rows refused), and for one or two rows too large among many. Only those
// are parked; every other row is written once, in id order.
func TestRefusedBatchBisected(t *testing.T) {
	t.Parallel()
	const n, limit = 32, 5000 // rows; the topic's max.message.bytes
	for _, tc := range []struct {
		name  string
		large map[int]bool // rows over the limit alone
		size  int          // the other rows' value bytes
	}{
		{"max.message.bytes below the batch", nil, 1000}, // four rows a batch
		{"one row too large", map[int]bool{11: true}, 10},
		{"two rows too large", map[int]bool{5: true, 20: true}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const topic, p = "locks.commands.dlq", int32(4)
			c := newCluster(t)
			cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
			require.NoError(t, err)
			defer cl.Close()
			maxBytes := strconv.Itoa(limit)
			_, err = kadm.NewClient(cl).CreateTopic(context.Background(), 1, 1, map[string]*string{"max.message.bytes": &maxBytes}, topic)
			require.NoError(t, err)
			st := testdb.New(t)
			pub := newPublisher(t, c.ListenAddrs(), false)
			relay := newRelay(t, st, pub, nil)

			// Random bytes, each row's its own: kgo compresses batches.
			// Each value starts with its row's number.
			filler := string(kafkatest.RandomBytes(n * 1000))
			rows := make([]rec, n)
			var want []string
			parked := []string{}
			for i := range rows {
				v := fmt.Sprintf("%02d", i)
				if tc.large[i] {
					parked = append(parked, v)
					v += filler[i*100 : i*100+2*limit]
				} else {
					want = append(want, v)
					v += filler[i*tc.size : (i+1)*tc.size]
				}
				rows[i] = rec{topic, fmt.Sprint("k", i%3), v, ""}
			}
			insert(t, st, p, rows...)
			published, err := relay.DrainOnce(context.Background(), p)
			require.NoError(t, err)
			assert.Equal(t, len(want), published)
			t.Logf("%d round trips for %d rows", pub.calls.Load(), n)
			assert.Less(t, pub.calls.Load(), int64(n), "round trips: the first publish and the halves")

			var got []string
			for _, v := range values(consume(t, c.ListenAddrs(), topic, len(want))) {
				got = append(got, v[:2])
			}
			assert.Equal(t, want, got, "every other row once, in id order")
			left, err := st.Pool.Query(context.Background(), `
				SELECT convert_from(substring(value from 1 for 2), 'UTF8') FROM outbox
				WHERE park_reason = 'MESSAGE_TOO_LARGE' AND parked_until = 'infinity' ORDER BY id`)
			require.NoError(t, err)
			got, err = pgx.CollectRows(left, pgx.RowTo[string])
			require.NoError(t, err)
			assert.Equal(t, parked, got, "parked for good")
			assert.Equal(t, len(parked), count(t, st, "true"), "only the refused rows stay")
		})
	}
}
