package outbox

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/store"
)

// kafkaLog answers a Publish as Kafka with a Kafka partition for each key
// would, a value's key being its first letter: the broker refuses a key's
// whole batch when it holds a value of refused, the client fails a value of
// alone by itself, and every other record is written, in written. A call
// that away says yes to fails as when Kafka is away.
type kafkaLog struct {
	refused, alone map[string]bool
	away           func(call []string) bool

	mu      sync.Mutex
	calls   [][]string
	written []string
}

func (k *kafkaLog) Publish(topic string, msgs ...*message.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var call []string
	keyRefused := map[byte]bool{}
	for _, m := range msgs {
		call = append(call, string(m.Payload))
		keyRefused[m.Payload[0]] = keyRefused[m.Payload[0]] || k.refused[string(m.Payload)]
	}
	k.calls = append(k.calls, call)
	if k.away != nil && k.away(call) {
		return errors.New("dial tcp: connection refused")
	}
	perr := &kafkapubsub.PublishError{Topic: topic, Total: len(msgs)}
	for i, v := range call {
		if keyRefused[v[0]] || k.alone[v] {
			perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, UUID: msgs[i].UUID, Err: kerr.MessageTooLarge})
		} else {
			k.written = append(k.written, v)
		}
	}
	if len(perr.Failed) > 0 {
		return perr
	}
	return nil
}

func (k *kafkaLog) Close() error { return nil }

// setAsideRows writes outbox rows of topic t with values, keyed by their
// first letter, and returns them as read, with the wrote ones' ids.
func setAsideRows(t *testing.T, st *store.Store, values []string, wrote ...string) ([]row, map[int64]bool) {
	t.Helper()
	var rows []row
	ids := map[int64]bool{}
	for _, v := range values {
		x := row{topic: "t", key: []byte(v[:1]), value: []byte(v), at: time.Now()}
		require.NoError(t, st.Pool.QueryRow(context.Background(), `
			INSERT INTO outbox (source_partition, topic, key, value) VALUES (0, 't', $1, $2) RETURNING id, created_at`,
			x.key, x.value).Scan(&x.id, &x.created))
		rows = append(rows, x)
		if slices.Contains(wrote, v) {
			ids[x.id] = true
		}
	}
	return rows, ids
}

// valuesOf are the rows' values.
func valuesOf(rows []row) []string {
	var out []string
	for _, x := range rows {
		out = append(out, string(x.value))
	}
	return out
}

// ackedValues are the values of the rows acknowledged, in that order.
func ackedValues(rows []row, acked []rowRef) []string {
	value := map[int64]string{}
	for _, x := range rows {
		value[x.id] = string(x.value)
	}
	var out []string
	for _, ref := range acked {
		out = append(out, value[ref.id])
	}
	return out
}

// parkedValues are the values of the rows parked for good as too large,
// in id order.
func parkedValues(t *testing.T, st *store.Store) []string {
	t.Helper()
	rows, err := st.Pool.Query(context.Background(), `
		SELECT convert_from(value, 'UTF8') FROM outbox WHERE parked_until = 'infinity' AND park_reason = 'MESSAGE_TOO_LARGE' ORDER BY id`)
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return got
}

// TestSetAsideKeepsOrderPerKey: the rows refused together go again in
// halves, in id order. A half Kafka refused has the rows it wrote
// acknowledged, not sent again (b1, e0), and the others split. A row Kafka
// wrote (the original publish's b2, d2, a2; e2, written in a refused half
// after e1 failed) goes again only when a row of its key before it landed
// after it, in a half taken whole (a1) or written in a refused one (b1),
// not when that row was parked (d1, e1) or landed before it (e0, in the
// same publish): each key's last record is its last row, written once.
func TestSetAsideKeepsOrderPerKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &kafkaLog{refused: map[string]bool{"c2": true, "d1": true}, alone: map[string]bool{"e1": true}}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	rows, wrote := setAsideRows(t, st, []string{"a1", "c1", "b1", "c2", "b2", "d1", "d2", "a2", "f1", "f2", "f3", "e0", "e1", "e2"}, "b2", "d2", "a2")
	p := r.part(0)
	ps := &passState{failed: map[string]bool{}}

	rest, err, dbErr := r.setAside(ctx, p, unit{"t", rows}, wrote, ps)
	require.NoError(t, dbErr)
	require.NoError(t, err)
	require.Empty(t, rest)
	require.Equal(t, [][]string{{"a1", "c1"}, {"b1", "c2"}, {"c2"}, {"b2"}, {"d1"}, {"a2", "f1", "f2", "f3"}, {"e0", "e1", "e2"}, {"e1"}}, pub.calls)
	require.Equal(t, []string{"a1", "c1", "b1", "b2", "a2", "f1", "f2", "f3", "e0", "e2"}, pub.written, "each once")
	require.Equal(t, []string{"a1", "c1", "b1", "b2", "d2", "a2", "f1", "f2", "f3", "e0", "e2"}, ackedValues(rows, p.acked))
	require.Equal(t, 11, ps.res.published)
	require.Equal(t, []string{"c2", "d1", "e1"}, parkedValues(t, st))
}

// TestSetAsideKafkaAwayMidway: Kafka away in the middle of the halves
// leaves the rows from the half that failed so, those settled before it
// acknowledged or parked.
func TestSetAsideKafkaAwayMidway(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &kafkaLog{refused: map[string]bool{"a3": true}, away: func(call []string) bool { return call[0] == "a4" }}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	rows, _ := setAsideRows(t, st, []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8"})
	p := r.part(0)
	ps := &passState{failed: map[string]bool{}}

	rest, err, dbErr := r.setAside(ctx, p, unit{"t", rows}, nil, ps)
	require.NoError(t, dbErr)
	require.ErrorContains(t, err, "connection refused")
	kind, _ := Classify(err)
	require.Equal(t, KafkaAway, kind)
	require.Equal(t, []string{"a4", "a5", "a6", "a7", "a8"}, valuesOf(rest))
	require.Equal(t, [][]string{{"a1", "a2", "a3", "a4"}, {"a1", "a2"}, {"a3", "a4"}, {"a3"}, {"a4"}}, pub.calls)
	require.Equal(t, []string{"a1", "a2"}, ackedValues(rows, p.acked))
	require.Equal(t, []string{"a3"}, parkedValues(t, st))
}
