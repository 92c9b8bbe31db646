package kafkapubsub

import (
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
)

// eventMessage is how the relay hands an event's record over: its
// CloudEvents headers and the key as Metadata.
func eventMessage() *message.Message {
	m := message.NewMessage("0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", []byte(`{"v":1}`))
	m.Metadata = message.Metadata{
		"ce_specversion":   "1.0",
		"ce_id":            "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
		"ce_source":        "lockworker/bench-host-1",
		"ce_type":          "lock.acquired",
		"ce_time":          "2026-11-25T20:00:00Z",
		"content-type":     "application/json",
		"request_id":       "svc-7-000123",
		DefaultKeyMetadata: "lock:orders/42",
	}
	return m
}

// A record's headers are the UUID, then the metadata's by name, whatever
// their order in the map; the key metadata gives the key too.
func TestRecordHeadersInOrder(t *testing.T) {
	p := &Publisher{keyMetadata: DefaultKeyMetadata}
	m := &message.Message{UUID: "u", Metadata: message.Metadata{"b": "2", "a": "1", "_": "0", "B": "3", DefaultKeyMetadata: "k"}}
	r := p.record("t", m)
	require.Equal(t, []byte("k"), r.Key)
	var names []string
	for _, h := range r.Headers {
		names = append(names, h.Key)
	}
	require.Equal(t, []string{UUIDHeader, "B", "_", "a", "b", DefaultKeyMetadata}, names)
}

// An event's record allocates the record, its headers, its key, and each
// header's value once, and the sorted names once.
func TestRecordAllocs(t *testing.T) {
	p := &Publisher{keyMetadata: DefaultKeyMetadata}
	m := eventMessage()
	// The record, its headers, its key, the UUID header's value, the sorted
	// names, and each other header's value.
	want := float64(5 + len(m.Metadata))
	require.Equal(t, want, testing.AllocsPerRun(100, func() { p.record("t", m) }))
}

// BenchmarkRecord is the publisher's record of a message the relay hands
// over for an event.
func BenchmarkRecord(b *testing.B) {
	p := &Publisher{keyMetadata: DefaultKeyMetadata}
	m := eventMessage()
	b.ReportAllocs()
	for b.Loop() {
		_ = p.record("locks.replies.x", m)
	}
}
