package topics_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func TestHeadersRoundTrip(t *testing.T) {
	for _, hs := range [][]topics.Header{
		nil,
		{{Key: "ce_id", Value: []byte("0193")}},
		{{Key: "", Value: nil}, {Key: "binary", Value: []byte{0, 0xff, '\n', 0x80}}, {Key: "ce_type", Value: []byte("lock.acquired")}},
	} {
		got, err := topics.DecodeHeaders(topics.EncodeHeaders(nil, hs))
		require.NoError(t, err)
		require.Equal(t, len(hs), len(got))
		for i := range hs {
			require.Equal(t, hs[i].Key, got[i].Key)
			require.Equal(t, string(hs[i].Value), string(got[i].Value))
		}
	}
}

func TestHeadersCorrupt(t *testing.T) {
	good := topics.EncodeHeaders(nil, []topics.Header{{Key: "k", Value: []byte("value")}})
	for _, b := range [][]byte{good[:3], good[:6], good[:len(good)-1], {0xff, 0xff, 0xff, 0xff, 'k'}} {
		_, err := topics.DecodeHeaders(b)
		require.ErrorContains(t, err, "corrupt headers")
	}
}

// An event's row stores the event compacted and only the source as
// headers; read back, it is the event with EventHeaders of it.
func TestEventRowRoundTrip(t *testing.T) {
	ev := topics.NewEvent(topics.TypeReleased, topics.OpRelease, "req-9", time.Now())
	v, err := ev.Encode()
	require.NoError(t, err)
	got, hs, err := topics.DecodeOutboxRow(topics.CompactEvent(nil, v), topics.EncodeEventHeaders(nil, "lockworker/a"))
	require.NoError(t, err)
	require.Equal(t, string(v), string(got))
	require.Equal(t, topics.EventHeaders(ev, "lockworker/a"), hs)
	// An event stored plain (before compaction) reads the same.
	got, hs, err = topics.DecodeOutboxRow(v, topics.EncodeEventHeaders(nil, "lockworker/a"))
	require.NoError(t, err)
	require.Equal(t, string(v), string(got))
	require.Equal(t, topics.EventHeaders(ev, "lockworker/a"), hs)
	// Any other row is its value and headers as written, whatever the
	// value's first byte.
	raw := []byte{0x01, 0xff, 'x'}
	h := []topics.Header{{Key: "k", Value: []byte("v")}}
	got, hs, err = topics.DecodeOutboxRow(raw, topics.EncodeHeaders(nil, h))
	require.NoError(t, err)
	require.Equal(t, raw, got)
	require.Equal(t, h, hs)
	got, hs, err = topics.DecodeOutboxRow(nil, nil)
	require.NoError(t, err)
	require.Nil(t, got)
	require.Empty(t, hs)
	// A lock state's row.
	st, err := topics.LockState{LockName: "a", Status: "released", Revision: 4}.Encode()
	require.NoError(t, err)
	got, hs, err = topics.DecodeOutboxRow(topics.CompactLockState(nil, st), topics.EncodeLockStateHeaders(nil))
	require.NoError(t, err)
	require.Equal(t, string(st), string(got))
	require.Equal(t, topics.LockStateHeaders(), hs)
	_, _, err = topics.DecodeOutboxRow([]byte{0x02, 0xff}, topics.EncodeLockStateHeaders(nil))
	require.ErrorContains(t, err, "corrupt stored record")
	for _, bad := range [][]byte{[]byte("not an event"), {0x01, 'x'}, topics.CompactEvent(nil, []byte("not an event"))} {
		_, _, err = topics.DecodeOutboxRow(bad, topics.EncodeEventHeaders(nil, "lockworker/a"))
		require.Error(t, err, "%q", bad)
	}
}
