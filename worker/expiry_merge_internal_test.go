package worker

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// dueReads counts the statements that read next due times.
type dueReads struct{ n atomic.Int32 }

func (d *dueReads) TraceQueryStart(ctx context.Context, _ *pgx.Conn, q pgx.TraceQueryStartData) context.Context {
	if strings.Contains(q.SQL, "FROM lock_holders WHERE source_partition") {
		d.n.Add(1)
	}
	return ctx
}

func (d *dueReads) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestUntilDueMergesPartitions: the schedulers of many partitions that read
// their next due times while a read runs are answered by one statement
// together, not one each, and each gets its own partition's due time.
func TestUntilDueMergesPartitions(t *testing.T) {
	reads := &dueReads{}
	st := testdb.NewWith(t, store.Config{Tracer: reads})
	ctx := t.Context()
	_, err := st.Pool.Exec(ctx, `INSERT INTO sessions (id, owner_id, ttl, expires_at, source_partition) VALUES
		('s1', 'o', 30, clock_timestamp() + interval '30 s', 1), ('s2', 'o', 90, clock_timestamp() + interval '90 s', 2)`)
	require.NoError(t, err)
	// The first read waits on this lock; the others come meanwhile.
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)

	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	const n = 8
	in := make([]time.Duration, n+1)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	read := func(id int32) {
		p := &partition{w: w, id: id, wake: make(chan struct{}, 1)}
		in[id], errs[id] = p.untilDue(ctx)
	}
	wg.Go(func() { read(1) })
	require.Eventually(t, func() bool { return reads.n.Load() == 1 }, 10*time.Second, time.Millisecond)
	for id := int32(2); id <= n; id++ {
		wg.Go(func() { read(id) })
	}
	time.Sleep(300 * time.Millisecond) // the others wait behind the first read
	require.NoError(t, tx.Rollback(ctx))
	wg.Wait()

	require.LessOrEqual(t, reads.n.Load(), int32(2), "the first read, then one for the %d partitions that came meanwhile", n-1)
	for id := 1; id <= n; id++ {
		require.NoError(t, errs[id], "partition %d", id)
	}
	require.InDelta(t, 30*time.Second, in[1], float64(5*time.Second), "partition 1's session")
	require.InDelta(t, 90*time.Second, in[2], float64(5*time.Second), "partition 2's session")
	for id := 3; id <= n; id++ {
		require.Equal(t, maxExpirySleep, in[id], "partition %d has nothing due", id)
	}
}
