package topics_test

import (
	"bytes"
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

func headersBenchEvent() topics.Event {
	return topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "svc-7-000123", time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC))
}

// FuzzHeaders decodes any bytes: what DecodeHeaders refuses it refuses as
// corrupt, with no headers; what it reads encodes back to the input, after
// a prefix too.
func FuzzHeaders(f *testing.F) {
	event := topics.EncodeHeaders(nil, topics.EventHeaders(headersBenchEvent(), "lockworker/a"))
	f.Add(event)
	f.Add(event[:len(event)-1])
	f.Add(event[:7])
	f.Add([]byte{})
	f.Add(topics.EncodeHeaders(nil, topics.LockStateHeaders()))
	f.Add(topics.EncodeHeaders(nil, []topics.Header{
		{Key: "", Value: nil}, {Key: "ce_i", Value: []byte("x")}, {Key: "ce_idx", Value: []byte{0, 0xff}},
		{Key: "CE_ID", Value: []byte("y")}, {Key: topics.HeaderError, Value: []byte("boom")},
	}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 'k'})
	f.Add([]byte{0, 0, 0, 1, 'k', 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := topics.DecodeHeaders(b)
		if err != nil {
			require.ErrorContains(t, err, "corrupt headers")
			require.Nil(t, got)
			return
		}
		require.Equal(t, len(b) == 0, got == nil)
		require.Equal(t, string(b), string(topics.EncodeHeaders(nil, got)))
		prefix := []byte{0x01, 'x'}
		require.Equal(t, string(prefix)+string(b), string(topics.EncodeHeaders(bytes.Clone(prefix), got)))
		spare := make([]byte, 1, len(b)+1)
		require.Equal(t, "\x00"+string(b), string(topics.EncodeHeaders(spare, got)))
	})
}

// An outbox row's headers are encoded at Flush and decoded by the relay
// once a record: each allocates once (the bytes; the slice, whose names
// are the worker's constants).
func TestHeadersAllocs(t *testing.T) {
	hs := topics.EventHeaders(headersBenchEvent(), "lockworker/a")
	enc := topics.EncodeHeaders(nil, hs)
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { topics.EncodeHeaders(nil, hs) }), "encode")
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() {
		if _, err := topics.DecodeHeaders(enc); err != nil {
			panic(err)
		}
	}), "decode")
	// A name the worker does not write still decodes, to a string of its own.
	other := topics.EncodeHeaders(nil, []topics.Header{{Key: "x-other", Value: []byte("v")}})
	require.Equal(t, 2.0, testing.AllocsPerRun(100, func() {
		if _, err := topics.DecodeHeaders(other); err != nil {
			panic(err)
		}
	}), "decode of another name")
}

// BenchmarkOutboxHeaders is an event row's headers encoded at Flush and
// decoded by the relay.
func BenchmarkOutboxHeaders(b *testing.B) {
	hs := topics.EventHeaders(headersBenchEvent(), "lockworker/bench-host-1")
	enc := topics.EncodeHeaders(nil, hs)
	b.Run("op=encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = topics.EncodeHeaders(nil, hs)
		}
	})
	b.Run("op=decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := topics.DecodeHeaders(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}
