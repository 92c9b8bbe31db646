package worker

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// tally is Metrics counting what it is told, durations left out.
type tally struct {
	noMetrics
	mu     sync.Mutex
	counts map[string]int
}

func (m *tally) add(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts[key]++
}

func (m *tally) Batch(records int, _ time.Duration) {
	m.add("batch")
	for range records {
		m.add("batch record")
	}
}

func (m *tally) Command(operation, result string, _ time.Duration) {
	m.add("command " + operation + " " + result)
}

func (m *tally) Events(requestID string, evs []topics.Event) {
	for _, ev := range evs {
		m.add("event " + requestID + " " + ev.Type)
	}
}

func (m *tally) DeadLettered(reason string) { m.add("dead-lettered " + reason) }

func (m *tally) snapshot() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]int{}
	for k, v := range m.counts {
		out[k] = v
	}
	return out
}

// commitFate is what becomes of a batch's COMMIT in runBatch.
type commitFate int

const (
	commitAnswered commitFate = iota
	commitLost                // it takes effect, its answer lost
	// commitLostRolledBack: its answer lost, it is rolled back, and another
	// replica moves the offset where it would have (a zombie's batch of
	// the same records).
	commitLostRolledBack
)

// A batch whose COMMIT took effect but whose answer was lost is reported
// as one answered is, once, when the retry finds it committed: its
// commands, events and dead-lettered records counted, the invalid command
// and the skipped batch logged. Both ways a retry finds it: a batch whose
// partition's offset is known fails its offset guard (settleMoved); a
// partition's first batch finds every record applied. One whose COMMIT
// was lost and did not take effect is not reported, though the stored
// offset is where it would have put it.
func TestLostCommitIsReported(t *testing.T) {
	for _, known := range []bool{true, false} {
		name := "first batch"
		if known {
			name = "offset known"
		}
		t.Run(name, func(t *testing.T) {
			want, wantLogs, _ := runBatch(t, known, commitAnswered)
			require.Equal(t, 1, want["dead-lettered INVALID_REQUEST"], "the batch's invalid command is counted")
			require.Equal(t, 1, want["dead-lettered "+DeadLetterBatchTooLarge], "the batch's skipped batch is counted")
			got, logs, p := runBatch(t, known, commitLost)
			require.Equal(t, want, got, "counted as when answered")
			require.Contains(t, logs, "batch found committed on retry")
			for _, logs := range []string{wantLogs, logs} {
				require.Equal(t, 1, strings.Count(logs, "invalid command: answered with its error code"), "logged once: %s", logs)
				require.Equal(t, 1, strings.Count(logs, "skipped a record batch of the commands topic"), "logged once: %s", logs)
			}
			require.NoError(t, p.ctx.Err(), "the partition is not restarted")
			require.EqualValues(t, p.expected, batchEnd(known))

			got, logs, p = runBatch(t, known, commitLostRolledBack)
			before := map[string]int{}
			if known {
				before = map[string]int{"batch": 1, "batch record": 1, "command acquire ok": 1, "event r-0-0 lock.acquired": 1}
				require.Error(t, p.ctx.Err(), "the partition is restarted, as moved by another replica")
			} else {
				require.EqualValues(t, p.expected, batchEnd(known), "the partition goes on from the stored offset")
			}
			require.Equal(t, before, got, "the batch is not counted")
			require.NotContains(t, logs, "batch found committed on retry")
			require.NotContains(t, logs, "invalid command: answered with its error code")
			require.NotContains(t, logs, "skipped a record batch of the commands topic")
		})
	}
}

// batchEnd is where runBatch's batch moves its partition's offset.
func batchEnd(known bool) int64 {
	if known {
		return 6
	}
	return 5
}

// runBatch applies, on a worker of its own, a batch of two acquires, an
// invalid command and a skipped batch (after a batch of one acquire that
// makes its partition's offset known, when known), and returns what the
// worker's Metrics were told, its logs and the partition. Unless fate is
// commitAnswered, the batch's COMMIT is held at the server (a deferred
// trigger waits for an advisory lock the test holds) while the connection
// is cut: its answer is lost. Then the COMMIT is let through (commitLost),
// or its backend terminated and the offset moved to the batch's end by
// another (commitLostRolledBack).
func runBatch(t *testing.T, known bool, fate commitFate) (map[string]int, string, *partition) {
	ctx := context.Background()
	m := &tally{counts: map[string]int{}}
	w, direct, proxy, logs := proxiedWorker(t, kafkatest.Cluster(t), topics.DefaultNames(), m)
	noWake := context.CancelFunc(func() {}) // no poll loop to wake (seekTo)
	w.wakePoll.Store(&noWake)
	p := w.newPartition(w.hard, 0)
	from := int64(0)
	if known {
		apply(w, seg(t, p, 0, "before"))
		from = 1
	}
	_, err := direct.Pool.Exec(ctx, `
		CREATE FUNCTION hold_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_advisory_xact_lock_shared(4244);
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER hold_commit AFTER UPDATE ON consumer_offsets DEFERRABLE INITIALLY DEFERRED
			FOR EACH ROW WHEN (NEW.next_offset > OLD.next_offset) EXECUTE FUNCTION hold_commit()`)
	require.NoError(t, err)
	lock, err := direct.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer lock.Release()
	if fate != commitAnswered {
		_, err = lock.Exec(ctx, `SELECT pg_advisory_lock(4244)`)
		require.NoError(t, err)
	}

	end := batchEnd(known)
	invalid := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: from + 2, Value: []byte("not a command")}
	skip := &kgo.ErrDecompressTooLarge{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: from + 3, NextOffset: end}
	cmds := seg(t, p, from, "a", "b")
	cmds.records = append(cmds.records, invalid)
	done := make(chan struct{})
	go func() {
		defer close(done)
		apply(w, cmds, segment{p: p, tooLarge: skip, polledAt: time.Now()})
	}()
	if fate != commitAnswered {
		var pid int
		require.Eventually(t, func() bool {
			err := direct.Pool.QueryRow(ctx,
				`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = 4244 AND NOT granted`).Scan(&pid)
			return err == nil
		}, 20*time.Second, 5*time.Millisecond, "the COMMIT reached the server; logs: %s", logs)
		proxy.Cut() // the COMMIT's answer is lost
		if fate == commitLostRolledBack {
			_, err = direct.Pool.Exec(ctx, `SELECT pg_terminate_backend($1, 20000)`, pid)
			require.NoError(t, err)
		}
		_, err = lock.Exec(ctx, `SELECT pg_advisory_unlock(4244)`)
		require.NoError(t, err)
		if fate == commitLostRolledBack {
			_, err = direct.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('lockworker', $1, 0, $2)
				ON CONFLICT (group_id, topic, partition) DO UPDATE SET next_offset = $2`, topics.DefaultNames().Commands, end)
			require.NoError(t, err)
		}
		require.Eventually(t, func() bool { return storedOffset(t, direct, 0) == end }, 20*time.Second, 5*time.Millisecond,
			"the COMMIT took effect, or another replica moved the offset")
		proxy.Restore()
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the batch was not settled; logs: %s", testlog.LastLines(logs.String(), 20))
	}
	require.EqualValues(t, end, storedOffset(t, direct, 0))
	var applied int
	require.NoError(t, direct.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name IN ('a', 'b') AND acquisition_count = 1`).Scan(&applied))
	if fate == commitLostRolledBack {
		require.Zero(t, applied, "not applied by this worker")
	} else {
		require.Equal(t, 2, applied, "each applied once")
	}
	return m.snapshot(), logs.String(), p
}
