package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// TestCompareTableSettledComparesOnce: with its context already done, or no
// time to compare in, CompareTableSettled compares nothing, and says so:
// an error, not a pass.
func TestCompareTableSettledComparesOnce(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	err := CompareTableSettled(done, []string{"127.0.0.1:1"}, "postgres://127.0.0.1:1/none", 30*time.Second)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "not compared")
	for _, within := range []time.Duration{0, -time.Second} {
		err = CompareTableSettled(context.Background(), []string{"127.0.0.1:1"}, "postgres://127.0.0.1:1/none", within)
		require.ErrorContains(t, err, "not compared", within)
	}
}

// TestCheckStateOrder reads a state topic of two partitions. Lock a's
// revisions: 1, 2, 3, a copy of 2 (published again: counted, not an
// error), 5, then 4 published first after 5 (the error), a tombstone and a
// new life from 1. Lock b's: 1, 2, 2 again, 3.
func TestCheckStateOrder(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	on := func(p int32, r *kgo.Record) *kgo.Record { r.Partition = p; return r }
	a := func(rev int64) *kgo.Record { return on(0, kafkatest.StateRecord(t, "a", rev)) }
	b := func(rev int64) *kgo.Record { return on(1, kafkatest.StateRecord(t, "b", rev)) }
	cluster, _ := kafkatest.StateTopic(t, 2, a(1), a(2), b(1), a(3), a(2), b(2), a(5), b(2), a(4),
		on(0, &kgo.Record{Key: []byte("a")}), a(1), a(2), b(3))
	o, err := CheckStateOrder(ctx, cluster.ListenAddrs())
	require.Equal(t, StateOrder{Records: 13, Tombstones: 1, Back: 1, Copies: 1}, o)
	require.Error(t, err)
	require.Regexp(t, `^lock a: revision 4 \(, changed .*, partition 0 offset 5\) published first after revision 5 \(.*offset 4\)$`, err.Error())

	// In order, copies and all: no error.
	cluster, _ = kafkatest.StateTopic(t, 2, a(1), a(2), a(1), b(1), a(3), b(1))
	o, err = CheckStateOrder(ctx, cluster.ListenAddrs())
	require.NoError(t, err)
	require.Equal(t, StateOrder{Records: 6, Copies: 1}, o)
}
