package kafkapubsub

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// recordRef is Publisher.record as it was before it sorted the keys in a
// slice sized once: the records must stay byte-identical to its.
func (p *Publisher) recordRef(topic string, msg *message.Message) *kgo.Record {
	r := &kgo.Record{
		Topic:   topic,
		Value:   msg.Payload,
		Context: msg.Context(),
		Headers: make([]kgo.RecordHeader, 0, len(msg.Metadata)+1),
	}
	if key, ok := msg.Metadata[p.keyMetadata]; ok {
		r.Key = []byte(key)
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: UUIDHeader, Value: []byte(msg.UUID)})
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		if k == UUIDHeader {
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return r
}

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

func TestRecordEquivalent(t *testing.T) {
	many := message.NewMessage("u", []byte("v"))
	for i := range 40 { // more keys than any stack buffer would hold
		many.Metadata.Set(fmt.Sprintf("k%02d", 39-i), fmt.Sprint(i))
	}
	forged := eventMessage()
	forged.Metadata.Set(UUIDHeader, "forged")
	forged.Metadata.Set("", "")
	for name, m := range map[string]*message.Message{
		"event":          eventMessage(),
		"no metadata":    message.NewMessage("u", nil),
		"nil metadata":   {UUID: "u"},
		"forged uuid":    forged,
		"forty keys":     many,
		"only the key":   {UUID: "", Metadata: message.Metadata{DefaultKeyMetadata: ""}},
		"only the uuid":  {UUID: "u", Metadata: message.Metadata{UUIDHeader: "x"}},
		"empty payload":  {UUID: "u", Payload: []byte{}, Metadata: message.Metadata{"a": "1"}},
		"unsorted names": {UUID: "u", Metadata: message.Metadata{"b": "2", "a": "1", "_": "0", "B": "3"}},
	} {
		p := &Publisher{keyMetadata: DefaultKeyMetadata}
		require.Equal(t, p.recordRef("t", m), p.record("t", m), name)
	}
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
