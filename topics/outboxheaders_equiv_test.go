package topics_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// encodeHeadersRef and decodeHeadersRef are EncodeHeaders and DecodeHeaders
// as they were before they sized their results once: what the outbox holds
// was written by them, and the sized ones must give exactly what they gave.
func encodeHeadersRef(dst []byte, hs []topics.Header) []byte {
	for _, h := range hs {
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(h.Value)))
		dst = append(dst, h.Value...)
	}
	return dst
}

var errCorruptHeadersRef = errors.New("corrupt headers")

func decodeHeadersRef(b []byte) ([]topics.Header, error) {
	var hs []topics.Header
	field := func() ([]byte, error) {
		if len(b) < 4 {
			return nil, errCorruptHeadersRef
		}
		n := binary.BigEndian.Uint32(b)
		if uint64(len(b)-4) < uint64(n) {
			return nil, errCorruptHeadersRef
		}
		f := b[4 : 4+n]
		b = b[4+n:]
		return f, nil
	}
	for len(b) > 0 {
		k, err := field()
		if err != nil {
			return nil, fmt.Errorf("header %d: key: %w", len(hs), err)
		}
		v, err := field()
		if err != nil {
			return nil, fmt.Errorf("header %d (%q): value: %w", len(hs), k, err)
		}
		hs = append(hs, topics.Header{Key: string(k), Value: v})
	}
	return hs, nil
}

func headersBenchEvent() topics.Event {
	return topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "svc-7-000123", time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC))
}

// FuzzHeaders decodes any bytes with DecodeHeaders and with the reference:
// both refuse the same inputs with the same message, or give the same
// headers, whose values alias the same bytes; what is read encodes back to
// the input, and encoding after a prefix gives what the reference gives.
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
		want, wantErr := decodeHeadersRef(b)
		got, err := topics.DecodeHeaders(b)
		if wantErr != nil {
			require.Error(t, err)
			require.Equal(t, wantErr.Error(), err.Error())
			require.Nil(t, got)
			return
		}
		require.NoError(t, err)
		require.Equal(t, want == nil, got == nil)
		require.Equal(t, len(want), len(got))
		for i := range want {
			require.Equal(t, want[i].Key, got[i].Key)
			require.Equal(t, want[i].Value, got[i].Value)
			require.Equal(t, cap(want[i].Value), cap(got[i].Value), "a value aliases the input to its end")
		}
		require.Equal(t, string(b), string(topics.EncodeHeaders(nil, got)))
		require.Equal(t, encodeHeadersRef(nil, got), topics.EncodeHeaders(nil, got))
		prefix := []byte{0x01, 'x'}
		require.Equal(t, encodeHeadersRef(bytes.Clone(prefix), got), topics.EncodeHeaders(bytes.Clone(prefix), got))
		spare := make([]byte, 1, len(b)+1)
		require.Equal(t, encodeHeadersRef(bytes.Clone(spare), got), topics.EncodeHeaders(spare, got))
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
