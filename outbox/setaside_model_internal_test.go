package outbox

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
)

// partLog answers a Publish as a topic of several Kafka partitions would
// (kgo fails per partition): a value's key is its first letter, and
// part maps a key to its Kafka partition. The broker refuses a Kafka
// partition's whole batch (MESSAGE_TOO_LARGE) when it holds a value of
// refused; the records of a partition in away fail as with no leader
// (NOT_LEADER_FOR_PARTITION after kgo's retries, a KafkaAway failure);
// every other record is written, in written.
type partLog struct {
	part    map[byte]int
	refused map[string]bool
	away    map[int]bool

	mu      sync.Mutex
	calls   [][]string
	written []string
}

func (k *partLog) Publish(topic string, msgs ...*message.Message) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var call []string
	partRefused := map[int]bool{}
	for _, m := range msgs {
		v := string(m.Payload)
		call = append(call, v)
		partRefused[k.part[v[0]]] = partRefused[k.part[v[0]]] || k.refused[v]
	}
	k.calls = append(k.calls, call)
	perr := &kafkapubsub.PublishError{Topic: topic, Total: len(msgs)}
	for i, v := range call {
		switch pt := k.part[v[0]]; {
		case k.away[pt]:
			perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, UUID: msgs[i].UUID, Err: kerr.NotLeaderForPartition})
		case partRefused[pt]:
			perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, UUID: msgs[i].UUID, Err: kerr.MessageTooLarge})
		default:
			k.written = append(k.written, v)
		}
	}
	if len(perr.Failed) > 0 {
		return perr
	}
	return nil
}

func (k *partLog) Close() error { return nil }

// halfAwayRelay is a relay over a topic of two Kafka partitions, keys a
// and c on partition 0, b on partition 1, with a1 b1 c1 a2 waiting: c1 is
// too large, and partition 1 has no leader.
func halfAwayRelay(t *testing.T) (*Relay, *partLog, []row) {
	t.Helper()
	st := testdb.New(t)
	pub := &partLog{part: map[byte]int{'a': 0, 'c': 0, 'b': 1}, refused: map[string]bool{"c1": true}, away: map[int]bool{1: true}}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	rows, _ := setAsideRows(t, st, []string{"a1", "b1", "c1", "a2"})
	return r, pub, rows
}

// TestSetAsideAcksRowsWrittenInAHalfThatFailedOtherwise: a topic of
// two Kafka partitions, keys a and c on partition 0, b on partition 1.
// The first publish of a1 b1 c1 a2 fails: partition 0's batch refused for
// c1 (too large), partition 1 without a leader. Classify says
// RecordRefused (a1's error is the first), so setAside publishes the
// halves. Its first half, a1 b1, has a1 written (partition 0 takes it now)
// and b1 failed again for the leader: a KafkaAway failure. The rows Kafka
// wrote must be acknowledged whatever the failure (doc.go: "Whatever the
// kind, the rows Kafka wrote are acknowledged ... and only the others are
// retried"; settle runs ackWritten first for that), and the rest handed
// back must be only the unsettled rows: b1 c1 a2, not the whole half,
// which the relay would publish again (a1 written twice).
func TestSetAsideAcksRowsWrittenInAHalfThatFailedOtherwise(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, pub, rows := halfAwayRelay(t)
	p := r.part(0)
	ps := &passState{failed: map[string]bool{}}

	// The pass's publish, as settle accounts it.
	u := unit{"t", rows}
	first := r.publish(ctx, p, "t", u.rows)
	kind, _ := Classify(first)
	require.Equal(t, RecordRefused, kind)
	r.settle(ctx, p, u, first, ps, false)

	require.Equal(t, [][]string{{"a1", "b1", "c1", "a2"}, {"a1", "b1"}}, pub.calls)
	require.Equal(t, []string{"a1"}, pub.written)
	require.Equal(t, []string{"a1"}, ackedValues(rows, p.acked), "a1 was written by Kafka: acknowledged, not published again")
}

// Same, calling setAside directly: the rest must be exactly the unsettled
// rows.
func TestSetAsideRestIsOnlyTheUnwrittenRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, pub, rows := halfAwayRelay(t)
	p := r.part(0)
	ps := &passState{failed: map[string]bool{}}

	rest, err, dbErr := r.setAside(ctx, p, unit{"t", rows}, nil, ps)
	require.NoError(t, dbErr)
	kind, _ := Classify(err)
	require.Equal(t, KafkaAway, kind)
	require.Equal(t, []string{"a1"}, pub.written)
	require.Equal(t, []string{"b1", "c1", "a2"}, valuesOf(rest), "a1, which Kafka wrote, is not handed back to be published again")
}

// modelLog is a topic of Kafka partitions as kgo and a broker treat a
// call: per partition, the records go in batches of batch; a batch holding
// a value of refused is refused whole (MESSAGE_TOO_LARGE), and once one
// batch of a partition failed the later ones fail too unless late says
// they entered the buffer after the failure (then they are written); a
// value of alone fails by itself (client-side too large), the others of
// its batch written.
type modelLog struct {
	part    map[byte]int
	refused map[string]bool
	alone   map[string]bool
	late    func() bool
	batch   int

	calls [][]string
	log   []string // every record written, in order (one log per key is enough)
}

func (k *modelLog) Publish(topic string, msgs ...*message.Message) error {
	var call []string
	for _, m := range msgs {
		call = append(call, string(m.Payload))
	}
	k.calls = append(k.calls, call)
	byPart := map[int][]int{}
	var parts []int
	for i, v := range call {
		pt := k.part[v[0]]
		if _, ok := byPart[pt]; !ok {
			parts = append(parts, pt)
		}
		byPart[pt] = append(byPart[pt], i)
	}
	failed := map[int]bool{}
	for _, pt := range parts {
		idx := byPart[pt]
		failedYet := false
		for s := 0; s < len(idx); s += k.batch {
			b := idx[s:min(s+k.batch, len(idx))]
			whole := false
			for _, i := range b {
				whole = whole || k.refused[call[i]]
			}
			if whole || failedYet && !k.late() {
				for _, i := range b {
					failed[i] = true
				}
				failedYet = true
				continue
			}
			for _, i := range b {
				if k.alone[call[i]] {
					failed[i] = true
					continue
				}
				k.log = append(k.log, call[i])
			}
		}
	}
	if len(failed) == 0 {
		return nil
	}
	perr := &kafkapubsub.PublishError{Topic: topic, Total: len(msgs)}
	for i := range call {
		if failed[i] {
			perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, UUID: msgs[i].UUID, Err: kerr.MessageTooLarge})
		}
	}
	return perr
}

func (k *modelLog) Close() error { return nil }

// randomModel is a modelLog of up to three Kafka partitions (np), a random
// batch size and up to four keys, with 1 to maxRows values of them (tagged
// so each iteration's rows are its own), about one in ten refused and one
// in ten failing alone.
func randomModel(rnd *rand.Rand, maxRows int, tag string) (pub modelLog, values []string, np int) {
	n, nk := 1+rnd.Intn(maxRows), 1+rnd.Intn(4)
	np = 1 + rnd.Intn(3)
	pub = modelLog{part: map[byte]int{}, refused: map[string]bool{}, alone: map[string]bool{}, batch: 1 + rnd.Intn(4)}
	pub.late = func() bool { return rnd.Intn(3) == 0 }
	for k := 0; k < nk; k++ {
		pub.part[byte('a'+k)] = rnd.Intn(np)
	}
	for i := 0; i < n; i++ {
		v := fmt.Sprintf("%c%03d_%s", 'a'+rnd.Intn(nk), i, tag)
		values = append(values, v)
		switch rnd.Intn(10) {
		case 0:
			pub.refused[v] = true
		case 1:
			pub.alone[v] = true
		}
	}
	return pub, values, np
}

// TestSetAsideModel checks, over random batches, that every row not
// refused lands, is acknowledged once, each key's records end in id
// order (a row that landed after a later row of its key has that row
// written again after it), and no row is written again needlessly.
func TestSetAsideModel(t *testing.T) {
	ctx := context.Background()
	st := testdb.New(t)
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	for iter := 0; iter < 300; iter++ {
		model, values, _ := randomModel(rnd, 24, fmt.Sprint(iter))
		pub := &model
		r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
		require.NoError(t, err)
		rows, _ := setAsideRows(t, st, values)
		p := r.part(0)
		ps := &passState{failed: map[string]bool{}}
		u := unit{"t", rows}
		perr := r.publish(ctx, p, "t", u.rows)
		ok := r.settle(ctx, p, u, perr, ps, false)
		require.True(t, ok)
		require.Empty(t, ps.failed)

		desc := fmt.Sprintf("iter %d values %v refused %v alone %v parts %v batch %d calls %v log %v", iter, values, pub.refused, pub.alone, pub.part, pub.batch, pub.calls, pub.log)
		parked := map[string]bool{}
		for _, v := range parkedValues(t, st) {
			if strings.HasSuffix(v, fmt.Sprintf("_%d", iter)) {
				parked[v] = true
			}
		}
		acked := ackedValues(rows, p.acked)
		ackedSet := map[string]int{}
		for _, v := range acked {
			ackedSet[v]++
		}
		written := map[string]int{}
		for _, v := range pub.log {
			written[v]++
		}
		for _, v := range values {
			if pub.refused[v] || pub.alone[v] {
				require.True(t, parked[v], "refused row %s parked: %s", v, desc)
				require.Zero(t, ackedSet[v], desc)
				continue
			}
			require.False(t, parked[v], "row %s not refused is not parked: %s", v, desc)
			require.Equal(t, 1, ackedSet[v], "row %s acknowledged once: %s", v, desc)
			require.NotZero(t, written[v], "row %s written: %s", v, desc)
		}
		// Order per key: lastpos(y) > lastpos(x) for x < y of a key, y not parked.
		last := map[string]int{}
		for i, v := range pub.log {
			last[v] = i
		}
		for i, x := range values {
			for _, y := range values[i+1:] {
				if x[0] != y[0] || parked[y] || parked[x] {
					continue
				}
				require.Greater(t, last[y], last[x], "%s after %s in the log: %s", y, x, desc)
			}
		}
		// No needless rewrite: each write of y after its first follows a
		// write of an earlier row of its key since y's previous write.
		prev := map[string]int{}
		for i, y := range pub.log {
			j, seen := prev[y]
			prev[y] = i
			if !seen {
				continue
			}
			needed := false
			for _, x := range pub.log[j+1 : i] {
				if x[0] == y[0] && x < y {
					needed = true
				}
			}
			require.True(t, needed, "%s written again needlessly: %s", y, desc)
		}
	}
}

// TestSetAsideRowWrittenInARefusedHalfLandsAfterTheCallersRow: one
// Kafka partition holds keys a and b. The pass's publish of a1 a2 b1 a3
// has its first batch, a1 a2 b1, refused by the broker (b1 is over the
// topic's max.message.bytes), and a3, which entered kgo's buffer only
// after that failure, written (ackWritten's own case): a3 is kept, in
// wrote. setAside publishes the half a1 a2: a1 fails alone (over the
// producer's batch limit), a2 is written, after a3 in the log. a2 landed
// there after a3: a3 must go again, so that key a's last record is its
// last row (counted as landed only when acknowledged, a2 would leave a3,
// acknowledged and deleted, never the key's last record).
func TestSetAsideRowWrittenInARefusedHalfLandsAfterTheCallersRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	late := []bool{true} // the first batch after a failure entered the buffer late
	pub := &modelLog{part: map[byte]int{'a': 0, 'b': 0}, refused: map[string]bool{"b1": true}, alone: map[string]bool{"a1": true}, batch: 3,
		late: func() bool { l := len(late) > 0 && late[0]; late = late[min(1, len(late)):]; return l }}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	rows, _ := setAsideRows(t, st, []string{"a1", "a2", "b1", "a3"})
	p := r.part(0)
	ps := &passState{failed: map[string]bool{}}
	u := unit{"t", rows}
	require.True(t, r.settle(ctx, p, u, r.publish(ctx, p, "t", u.rows), ps, false))

	require.Equal(t, []string{"a1", "b1"}, parkedValues(t, st))
	require.ElementsMatch(t, []string{"a2", "a3"}, ackedValues(rows, p.acked))
	var keyA []string
	for _, v := range pub.log {
		if v[0] == 'a' {
			keyA = append(keyA, v)
		}
	}
	require.Equal(t, "a3", keyA[len(keyA)-1], "key a's last record is its last row (log of key a: %v)", keyA)
}

// awayLog is modelLog with Kafka partitions without a leader in some
// calls: their records fail with NOT_LEADER_FOR_PARTITION (KafkaAway).
type awayLog struct {
	modelLog
	away func() map[int]bool // the partitions away in this call
}

func (k *awayLog) Publish(topic string, msgs ...*message.Message) error {
	away := k.away()
	var keep, gone []int
	for i, m := range msgs {
		if away[k.part[m.Payload[0]]] {
			gone = append(gone, i)
		} else {
			keep = append(keep, i)
		}
	}
	if len(gone) == 0 {
		return k.modelLog.Publish(topic, msgs...)
	}
	sub := make([]*message.Message, len(keep))
	for j, i := range keep {
		sub[j] = msgs[i]
	}
	var call []string
	for _, m := range msgs {
		call = append(call, string(m.Payload))
	}
	failed := map[int]error{}
	for _, i := range gone {
		failed[i] = kerr.NotLeaderForPartition
	}
	if len(sub) > 0 {
		err := k.modelLog.Publish(topic, sub...)
		k.calls = k.calls[:len(k.calls)-1]
		var perr *kafkapubsub.PublishError
		if errors.As(err, &perr) {
			for _, f := range perr.Failed {
				failed[keep[f.Index]] = f.Err
			}
		}
	}
	k.calls = append(k.calls, call)
	perr := &kafkapubsub.PublishError{Topic: topic, Total: len(msgs)}
	for i := range msgs {
		if e, ok := failed[i]; ok {
			perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, UUID: msgs[i].UUID, Err: e})
		}
	}
	return perr
}

// TestSetAsideModelAway: as TestSetAsideModel, with Kafka
// partitions away at random in the first passes: setAside's rest is
// exactly the rows neither acknowledged nor parked, in id order, and the
// passes after (Kafka back) end with every key's records in order.
func TestSetAsideModelAway(t *testing.T) {
	ctx := context.Background()
	st := testdb.New(t)
	seed := time.Now().UnixNano()
	rnd := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	for iter := 0; iter < 300; iter++ {
		model, values, np := randomModel(rnd, 20, fmt.Sprint("a", iter))
		pub := &awayLog{modelLog: model}
		awayOn := true
		pub.away = func() map[int]bool {
			m := map[int]bool{}
			if awayOn && rnd.Intn(4) == 0 {
				m[rnd.Intn(np)] = true
			}
			return m
		}
		r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
		require.NoError(t, err)
		rows, _ := setAsideRows(t, st, values)
		p := r.part(0)
		todo := rows
		parkedNow := func() map[string]bool {
			parked := map[string]bool{}
			for _, v := range parkedValues(t, st) {
				if strings.HasSuffix(v, fmt.Sprintf("_a%d", iter)) {
					parked[v] = true
				}
			}
			return parked
		}
		for pass := 0; len(todo) > 0; pass++ {
			require.Less(t, pass, 50)
			if pass >= 3 {
				awayOn = false
			}
			ps := &passState{failed: map[string]bool{}}
			perr := r.publish(ctx, p, "t", todo)
			left, wrote := ps.ackWritten(p, unit{"t", todo}, perr)
			rest := left
			if perr != nil {
				if kind, _ := Classify(perr); kind == RecordRefused {
					var dbErr error
					rest, _, dbErr = r.setAside(ctx, p, unit{"t", left}, wrote, ps)
					require.NoError(t, dbErr)
				}
			}
			desc := fmt.Sprintf("iter %d pass %d values %v refused %v alone %v parts %v batch %d calls %v log %v", iter, pass, values, pub.refused, pub.alone, pub.part, pub.batch, pub.calls, pub.log)
			acked := map[string]bool{}
			for _, v := range ackedValues(rows, p.acked) {
				require.False(t, acked[v], "acknowledged twice %s: %s", v, desc)
				acked[v] = true
			}
			parked := parkedNow()
			var want []string
			for _, v := range valuesOf(todo) {
				if !acked[v] && !parked[v] {
					want = append(want, v)
				}
			}
			require.Equal(t, want, valuesOf(rest), "rest: %s", desc)
			var next []row
			for _, x := range rows {
				if !acked[string(x.value)] && !parked[string(x.value)] {
					next = append(next, x)
				}
			}
			todo = next
		}
		desc := fmt.Sprintf("iter %d values %v refused %v alone %v parts %v batch %d calls %v log %v", iter, values, pub.refused, pub.alone, pub.part, pub.batch, pub.calls, pub.log)
		parked := parkedNow()
		last := map[string]int{}
		for i, v := range pub.log {
			last[v] = i
		}
		for i, x := range values {
			if pub.refused[x] || pub.alone[x] {
				require.True(t, parked[x], "%s parked: %s", x, desc)
			} else {
				require.False(t, parked[x], "%s not parked: %s", x, desc)
				_, ok := last[x]
				require.True(t, ok, "%s written: %s", x, desc)
			}
			for _, y := range values[i+1:] {
				if x[0] != y[0] || parked[y] || parked[x] {
					continue
				}
				require.Greater(t, last[y], last[x], "%s after %s in the log: %s", y, x, desc)
			}
		}
	}
}

// liar refuses every record, with a PublishError whose Total is off.
type liar struct{ calls int }

func (l *liar) Publish(topic string, msgs ...*message.Message) error {
	l.calls++
	perr := &kafkapubsub.PublishError{Topic: topic, Total: len(msgs) + 1}
	for i := range msgs {
		perr.Failed = append(perr.Failed, kafkapubsub.MessageError{Index: i, Err: kerr.MessageTooLarge})
	}
	return perr
}
func (l *liar) Close() error { return nil }

// TestSetAsideTerminatesOnWrongTotal: a refusal that does not say which
// records failed (its Total is another call's) leaves every row of a half
// to split again, down to rows alone, each parked: the search ends.
func TestSetAsideTerminatesOnWrongTotal(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	pub := &liar{}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	var vs []string
	for i := 0; i < 37; i++ {
		vs = append(vs, fmt.Sprintf("%c%02d", 'a'+i%3, i))
	}
	rows, wrote := setAsideRows(t, st, vs, "b04", "a09", "c35")
	ps := &passState{failed: map[string]bool{}}
	rest, err, dbErr := r.setAside(context.Background(), r.part(0), unit{"t", rows}, wrote, ps)
	require.NoError(t, dbErr)
	require.NoError(t, err)
	require.Empty(t, rest)
	t.Logf("%d calls, %d parked", pub.calls, len(parkedValues(t, st)))
}
