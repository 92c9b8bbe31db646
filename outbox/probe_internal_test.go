package outbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
)

// Probes that fail together while passes got other topics acknowledged
// pause nothing: Kafka answered meanwhile, and the failures are their
// topics'. With nothing acknowledged since they started, two topics
// failing so pause the partition, as two publishes would; not when Kafka
// refused their creation for its replicas, which is an answer too.
func TestProbeFailuresPauseOnlyWithoutAcknowledgements(t *testing.T) {
	away := errors.New("dial tcp: connection refused")
	replicas := fmt.Errorf("kafkapubsub: create topic: %w", kerr.InvalidReplicationFactor)
	for _, c := range []struct {
		err           error
		acked, pauses bool
	}{{away, true, false}, {away, false, true}, {replicas, false, false}} {
		r := &Relay{cfg: Config{RetryBase: time.Second, RetryMax: time.Minute, ParkFor: time.Hour}, log: zerolog.Nop()}
		p := &partition{blocked: map[string]block{}, parked: map[string]bool{}, probes: &probes{}}
		for _, topic := range []string{"a", "d"} {
			p.blocked[topic] = block{failures: 1, probing: true}
			p.probes.done = append(p.probes.done, probed{u: unit{topic: topic, rows: []row{{rowRef: rowRef{id: 1}, topic: topic}}}, err: c.err, at: time.Now()})
		}
		if c.acked {
			(&passState{}).ack(p, []row{{rowRef: rowRef{id: 2}, topic: "other"}})
		}
		r.settleProbes(context.Background(), p)
		require.Equal(t, c.pauses, !p.pauseUntil.IsZero(), "%v, acknowledged meanwhile: %v", c.err, c.acked)
		for _, topic := range []string{"a", "d"} {
			b := p.blocked[topic]
			require.False(t, b.probing, "settled")
			require.Equal(t, 2, b.failures)
			require.True(t, b.until.After(time.Now()), "backs off again")
		}
		require.True(t, p.readTable.Load())
	}
}

// Probes are bounded: at most maxConcurrentTopics of a partition, and,
// beyond its first, the relay's budget of rows (TestProbeBytesAreBoundedPerRelay);
// a unit past them goes in the pass. A topic's second unit
// (OrderAcrossTopics) waits behind its probe.
func TestProbesAreBounded(t *testing.T) {
	r := newRelay(t)
	p := &partition{blocked: map[string]block{}, probes: &probes{}, lock: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the probes' publishes return at once; only what starts counts here
	var units []unit
	for i := range maxConcurrentTopics + 2 {
		topic := string(rune('a' + i))
		p.blocked[topic] = block{failures: 1}
		units = append(units, unit{topic: topic, rows: []row{{rowRef: rowRef{id: int64(i)}, topic: topic, value: make([]byte, 10)}}})
	}
	units = append(units, unit{topic: "a", rows: []row{{rowRef: rowRef{id: 100}, topic: "a"}}})
	p.blocked["fresh"] = block{} // failed by accounting (failures 0): not probed
	units = append(units, unit{topic: "fresh"})
	left := r.startProbes(ctx, p, units)
	require.Len(t, left, 3, "two past the bound, and the unprobed topic")
	p.probes.wg.Wait()

	r = newRelay(t)
	p = &partition{blocked: map[string]block{"big": {failures: 1}, "next": {failures: 1}}, probes: &probes{}}
	left = r.startProbes(ctx, p, []unit{
		{topic: "big", rows: []row{{value: make([]byte, maxHeldBytes)}}},
		{topic: "next", rows: []row{{value: make([]byte, 1)}}},
	})
	require.Equal(t, []unit{{topic: "next", rows: []row{{value: make([]byte, 1)}}}}, left, "the first is probed whatever its size")
	p.probes.wg.Wait()

	// A topic's run kept for the pass keeps its later runs there too,
	// though they would fit: a probe of them could overtake it.
	r = newRelay(t)
	p = &partition{blocked: map[string]block{"big": {failures: 1}, "x": {failures: 1}}, probes: &probes{}}
	runs := []unit{
		{topic: "big", rows: []row{{value: make([]byte, maxHeldBytes-10)}}},
		{topic: "x", rows: []row{{rowRef: rowRef{id: 1}, value: make([]byte, 20)}}},
		{topic: "x", rows: []row{{rowRef: rowRef{id: 2}, value: make([]byte, 5)}}},
	}
	left = r.startProbes(ctx, p, runs)
	require.Len(t, left, 2, "both runs of x in the pass")
	require.False(t, p.blocked["x"].probing)
	p.probes.wg.Wait()
}

// A probe that returned before Run ended and that Kafka wrote in part has
// its written rows deleted as Run ends, like those of one that succeeded,
// rather than leave them to the partition's next owner to publish again.
func TestEndProbesDeletesWhatAProbeWrote(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, Logger: zerolog.Nop()})
	require.NoError(t, err)
	p := r.part(0)
	var rows []row
	for _, v := range []string{"failed", "written"} {
		x := row{topic: "t", key: []byte(v)} // keys apart: the written row is not behind the failed one
		require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', $1) RETURNING id, created_at`, v).
			Scan(&x.id, &x.created))
		rows = append(rows, x)
	}
	partly := &kafkapubsub.PublishError{Topic: "t", Total: 2, Failed: []kafkapubsub.MessageError{{Index: 0, Err: kerr.NotLeaderForPartition}}}
	p.blocked["t"] = block{failures: 1, probing: true}
	p.probes.done = append(p.probes.done, probed{u: unit{topic: "t", rows: rows}, err: partly, at: time.Now()})
	r.endProbes(ctx, p)
	var left []string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(convert_from(value, 'UTF8')) FROM outbox`).Scan(&left))
	require.Equal(t, []string{"failed"}, left)
}

// A held pass (a stall not yet confirmed harmless, the partition maybe
// another replica's already) settles no probe: one that came back with its
// topic refused at MaxAttempts would count attempts and park the topic's
// rows in the table, for a partition the hold says may be another's. The
// probe waits; the first pass the hold lets through settles it.
func TestHeldPassSettlesNoProbe(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, Logger: zerolog.Nop(), MaxAttempts: 2, ParkFor: time.Hour})
	require.NoError(t, err)
	p := r.part(0)
	x := row{topic: "t"}
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value, attempts) VALUES (0, 't', '\x00', 1) RETURNING id, created_at`).
		Scan(&x.id, &x.created))
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', '\x00')`)
	require.NoError(t, err)
	p.blocked["t"] = block{failures: 1, probing: true}
	p.probes.done = append(p.probes.done, probed{u: unit{topic: "t", rows: []row{x}},
		err: fmt.Errorf("produce: %w", kerr.TopicAuthorizationFailed), at: time.Now()})
	held := errors.New("the partition may be another replica's")
	hold := func(context.Context) error { return held }
	p.hold.Store(&hold)
	table := func() (parked, attempts int) {
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE parked_until IS NOT NULL), max(attempts) FROM outbox`).
			Scan(&parked, &attempts))
		return parked, attempts
	}

	res := r.drain(ctx, p, math.MaxInt64, false)
	require.ErrorIs(t, res.pubErr, held)
	parked, attempts := table()
	require.Zero(t, parked, "a held pass parked rows of a partition that may be another replica's")
	require.Equal(t, 1, attempts, "a held pass counted an attempt")
	require.True(t, p.blocked["t"].probing, "the probe waits for a pass the hold lets through")

	p.hold.Store(nil)
	res = r.drain(ctx, p, math.MaxInt64, false)
	require.NoError(t, res.dbErr)
	parked, attempts = table()
	require.Equal(t, 2, parked, "settled once the hold let the pass through: the topic parked at MaxAttempts")
	require.Equal(t, 2, attempts)
}
