package topics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func TestCompactEvent(t *testing.T) {
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "req-1", time.Now())
	at := topics.NewTime(time.Now())
	ev.LockInfo = &topics.LockInfo{LockName: "orders/42", OwnerID: "svc-a", Status: "acquired", FencingToken: 981, AcquiredAt: &at, ExpiresAt: &at,
		LeaseDuration: 30, AcquisitionCount: 7, Mode: "exclusive", Limit: 1}
	v, err := ev.Encode()
	require.NoError(t, err)
	requireCompacts(t, topics.CompactEvent, topics.ExpandEvent, v)
	// Large ones too; past a megabyte (a status of many holders with
	// large metadata) they are stored plain.
	for _, n := range []int{100_000, 1 << 20, 5 << 20} {
		ev.ErrorMessage = strings.Repeat("<", n)
		v, err = ev.Encode()
		require.NoError(t, err)
		c := topics.CompactEvent(nil, v)
		got, err := topics.ExpandEvent(c)
		require.NoError(t, err)
		require.Equal(t, string(v), string(got), n)
		require.Equal(t, len(v) > 1<<20, string(c) == string(v), "plain past a megabyte: %d", n)
	}
}

func TestExpandEventCorrupt(t *testing.T) {
	c := topics.CompactEvent(nil, []byte(`{"v":1}`))
	for _, b := range [][]byte{{0x01}, {0x01, 0x28, 0xb5}, c[:len(c)-1], append([]byte{0x01}, "garbage"...)} {
		_, err := topics.ExpandEvent(b)
		require.ErrorContains(t, err, "corrupt stored record", "%q", b)
	}
}

func TestCompactLockState(t *testing.T) {
	at := topics.NewTime(time.Now())
	st := topics.LockState{LockName: "orders/42", Revision: 9, Status: "acquired", Limit: 1, HolderCount: 1, AcquisitionCount: 3,
		Holders:   []topics.Holder{{OwnerID: "svc-a", Mode: "exclusive", Status: "acquired", FencingToken: 981, AcquiredAt: at, ExpiresAt: at, LeaseDuration: 30}},
		Operation: "acquire", ChangedAt: at}
	v, err := st.Encode()
	require.NoError(t, err)
	requireCompacts(t, topics.CompactLockState, topics.ExpandLockState, v)
}

// requireCompacts checks that compact takes v to under a third of its
// size and expand gives it back, and that expand takes v stored plain (as
// earlier versions did) as it is.
func requireCompacts(t *testing.T, compact func(dst, v []byte) []byte, expand func([]byte) ([]byte, error), v []byte) {
	t.Helper()
	c := compact(nil, v)
	require.Less(t, len(c), len(v)/3, "a record takes a fraction of its size")
	got, err := expand(c)
	require.NoError(t, err)
	require.Equal(t, string(v), string(got))
	got, err = expand(v)
	require.NoError(t, err)
	require.Equal(t, string(v), string(got), "stored plain, read as it is")
}

// TestDecodeLockStateOfALaterVersion: a lock state of a v above the
// contract's is refused, not read as this version's.
func TestDecodeLockStateOfALaterVersion(t *testing.T) {
	_, err := topics.DecodeLockState([]byte(`{"v":2,"namespace":"default","lock_name":"a","revision":3}`))
	require.ErrorContains(t, err, "v 2, and this client reads v 1")
	// A later version may have dropped or retyped any field: its version is
	// what is told.
	_, err = topics.DecodeLockState([]byte(`{"v":2,"namespace":"default","name":"a"}`))
	require.ErrorContains(t, err, "v 2, and this client reads v 1")
	_, err = topics.DecodeLockState([]byte(`{"v":2,"namespace":"default","lock_name":"a","revision":"3"}`))
	require.ErrorContains(t, err, "v 2, and this client reads v 1")
	st, err := topics.DecodeLockState([]byte(`{"v":1,"namespace":"default","lock_name":"a","revision":3}`))
	require.NoError(t, err)
	require.EqualValues(t, 3, st.Revision)
}
