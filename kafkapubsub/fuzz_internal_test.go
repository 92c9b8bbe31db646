package kafkapubsub

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// FuzzMessageConversion converts any record (key, or none; value; headers
// of any names and values, repeated, empty, not UTF-8, large) to a message
// as a subscription does (Subscriber.message), and any message back to a
// record as the publisher does (Publisher.record), with any KeyMetadata
// both use: doc.go's mapping. Nothing panics. A record's message has its
// value, the last UUIDHeader's value as UUID ("topic/partition/offset"
// without one), each other header's last value by name, and its key, when
// not nil, as Metadata[KeyMetadata]. A message's record has its payload,
// UUIDHeader first, then a header of each Metadata entry but UUIDHeader's,
// sorted by name and the same each time, and the KeyMetadata entry as
// key. A message round-trips unchanged but for a Metadata entry named
// UUIDHeader (the header holds UUID); a record's message is a fixed point.
// `go test` runs the seeds; `go test -fuzz FuzzMessageConversion
// ./kafkapubsub` explores.
func FuzzMessageConversion(f *testing.F) {
	hdrs := func(kv ...string) []byte {
		var b []byte
		for _, s := range kv {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
		return b
	}
	huge := strings.Repeat("\xff", 256<<10)
	for _, s := range []struct {
		key, value  []byte
		nilKey      bool
		headers     []byte
		keyMetadata string
		uuid, topic string
		partition   int32
		offset      int64
		nilValue    bool
	}{
		{key: []byte("lock:orders/42"), value: []byte(`{"v":1}`), headers: hdrs(UUIDHeader, "u", "ce_type", "lock.acquired"), uuid: "u", topic: "t"},
		{nilKey: true, value: []byte("v"), headers: hdrs("a", "1"), topic: "t", partition: 3, offset: 7},
		{key: []byte{}, value: []byte{}, headers: hdrs(DefaultKeyMetadata, "header"), topic: "t"},
		{nilKey: true, nilValue: true, headers: hdrs(DefaultKeyMetadata, "header"), topic: "t"},
		{key: []byte("k"), headers: hdrs(UUIDHeader, "first", UUIDHeader, "second", "a", "1", "a", "2"), topic: "t"},
		{key: []byte("k"), headers: hdrs("", "", "", "x"), topic: "", partition: -1, offset: -1},
		{key: []byte("\xff\x00"), value: []byte("\xfe"), headers: hdrs("\xff", "\x00\xff", "é", "\xc3"), uuid: "\xff", topic: "\xff"},
		{key: []byte(huge), value: []byte(huge), headers: hdrs(huge, huge, "a", huge), uuid: huge, topic: "t"},
		{key: []byte("k"), headers: hdrs(UUIDHeader, "u"), keyMetadata: UUIDHeader, uuid: "v", topic: "t"},
		{nilKey: true, headers: hdrs(UUIDHeader, "u", "k", "x"), keyMetadata: "k", topic: "t"},
		{key: []byte("k"), headers: hdrs("k", "header", "partition_key", "p"), keyMetadata: "k", topic: "t"},
		{key: []byte("k"), headers: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, topic: "t"},
		{key: []byte("k"), headers: []byte{0x05, 'a'}, topic: "t"},
		{key: []byte("k"), headers: hdrs("a"), topic: "t"}, // a name without a value
	} {
		f.Add(s.key, s.nilKey, s.value, s.nilValue, s.headers, s.keyMetadata, s.uuid, s.topic, s.partition, s.offset)
	}
	f.Fuzz(func(t *testing.T, key []byte, nilKey bool, value []byte, nilValue bool, headers []byte, keyMetadata, uuid, topic string, partition int32, offset int64) {
		if nilKey {
			key = nil
		}
		if nilValue {
			value = nil
		}
		km := keyMetadata
		if km == "" {
			km = DefaultKeyMetadata // as NewSubscriber and NewPublisher default it
		}
		s := &Subscriber{cfg: SubscriberConfig{KeyMetadata: km}}
		p := &Publisher{keyMetadata: km}
		at := func(r *kgo.Record) *kgo.Record {
			r.Topic, r.Partition, r.Offset = topic, partition, offset
			return r
		}

		// A record's message.
		rec := at(&kgo.Record{Key: key, Value: value, Headers: headersOf(headers)})
		msg := s.message(rec)
		wantUUID := fmt.Sprintf("%s/%d/%d", topic, partition, offset)
		wantMD := message.Metadata{}
		for _, h := range rec.Headers {
			if h.Key == UUIDHeader {
				wantUUID = string(h.Value)
			} else {
				wantMD[h.Key] = string(h.Value)
			}
		}
		if key != nil {
			wantMD[km] = string(key)
		}
		require.Equal(t, wantUUID, msg.UUID)
		require.True(t, bytes.Equal(value, msg.Payload), "the payload is the record's value")
		require.Equal(t, wantMD, msg.Metadata)

		// Its record, and that record's message: the same.
		again := s.message(at(checkRecord(t, p, km, msg)))
		require.Equal(t, msg.UUID, again.UUID)
		require.True(t, bytes.Equal(msg.Payload, again.Payload))
		require.Equal(t, msg.Metadata, again.Metadata, "a record's message is a fixed point")

		// Any message round-trips, but for a Metadata entry of UUIDHeader.
		m := message.NewMessage(uuid, value)
		for _, h := range rec.Headers {
			m.Metadata[h.Key] = string(h.Value)
		}
		if key != nil {
			m.Metadata[km] = string(key)
		}
		back := s.message(at(checkRecord(t, p, km, m)))
		wantMD = maps.Clone(m.Metadata)
		if km != UUIDHeader {
			delete(wantMD, UUIDHeader) // not written: the header holds UUID
		}
		require.Equal(t, uuid, back.UUID)
		require.True(t, bytes.Equal(value, back.Payload))
		require.Equal(t, wantMD, back.Metadata, "a message round-trips unchanged")
	})
}

// checkRecord is p's record of msg, checked: the payload as value,
// UUIDHeader first, then each Metadata entry but UUIDHeader's as a header,
// sorted by name, the entry named km as key, the same each time.
func checkRecord(t *testing.T, p *Publisher, km string, msg *message.Message) *kgo.Record {
	r := p.record("t", msg)
	require.Equal(t, "t", r.Topic)
	require.True(t, bytes.Equal(msg.Payload, r.Value), "the value is the payload")
	if v, ok := msg.Metadata[km]; ok {
		require.NotNil(t, r.Key, "an entry of KeyMetadata, even empty, is a key")
		require.Equal(t, v, string(r.Key))
	} else {
		require.Nil(t, r.Key, "no entry of KeyMetadata, no key")
	}
	require.NotEmpty(t, r.Headers)
	require.Equal(t, kgo.RecordHeader{Key: UUIDHeader, Value: []byte(msg.UUID)}, r.Headers[0])
	n := len(msg.Metadata)
	if _, ok := msg.Metadata[UUIDHeader]; ok {
		n--
	}
	require.Len(t, r.Headers, 1+n, "a header of each entry but UUIDHeader's")
	for i, h := range r.Headers[1:] {
		if i > 0 {
			require.Less(t, r.Headers[i].Key, h.Key, "headers sorted by name, each once")
		}
		require.NotEqual(t, UUIDHeader, h.Key)
		v, ok := msg.Metadata[h.Key]
		require.True(t, ok, "header %q is of no entry", h.Key)
		require.Equal(t, v, string(h.Value))
	}
	require.Equal(t, r.Headers, p.record("t", msg).Headers, "the same message, the same record")
	return r
}

// headersOf reads record headers from b: each a key and a value, each a
// uvarint length and that many bytes (fewer at b's end).
func headersOf(b []byte) []kgo.RecordHeader {
	next := func() ([]byte, bool) {
		n, size := binary.Uvarint(b)
		if size <= 0 {
			return nil, false
		}
		b = b[size:]
		n = min(n, uint64(len(b)))
		v := b[:n:n]
		b = b[n:]
		return v, true
	}
	var hs []kgo.RecordHeader
	for {
		k, ok := next()
		if !ok {
			return hs
		}
		v, _ := next()
		hs = append(hs, kgo.RecordHeader{Key: string(k), Value: v})
	}
}
