package topics

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Events are stored compressed where they wait or are kept: an event row of
// the outbox (EncodeEventHeaders) and a request's outcome in
// processed_requests. S2 (Snappy's successor) against a dictionary made
// of events takes a 490-byte event to about 80 bytes in about 2 µs, and
// every byte stored costs PostgreSQL twice, in the table and in its WAL:
// for each command it stored an event three times, the largest part of
// its writes (docs/performance.md). The relay is handed the plain rows in memory;
// only a row read back from the table is expanded.

// compactForm starts a compacted event: an S2 block against eventDict. An
// event's JSON starts with '{', so a stored value of either form tells
// which it is.
const compactForm = 0x01

// eventDict is the compression dictionary: events with the fields the
// contract's events usually carry. It is part of the stored form: never
// change it. Another dictionary takes another first byte and keeps this
// one for reading what was stored with it.
const (
	eventDict = `{"v":1,"event_id":"01a23c9b-d530-7132-bcaa-f5f09ee3e655","type":"lock.acquired","request_id":"",` +
		`"operation":"acquire","success":true,"lock_info":{"namespace":"","lock_name":"","owner_id":"","status":"acquired",` +
		`"fencing_token":1,"acquired_at":"2026-12-03T15:52:55.343923Z","expires_at":"2026-12-03T15:52:55.343923Z",` +
		`"lease_duration":30,"acquisition_count":1,"extension_count":0,"mode":"exclusive","limit":1,"revision":1},` +
		`"duration_ms":0.5,"occurred_at":"2026-12-03T15:52:55.343923Z"}` +
		`{"v":1,"type":"lock.released","operation":"release","success":false,"error_code":"NOT_HELD","error_message":"",` +
		`"type":"lock.extended","operation":"extend","type":"lock.queued","queue_position":1,"type":"lock.rejected","status":"released"}`
	// maxExpanded bounds an expanded event: far above any event the
	// contract's limits allow, so a corrupt row cannot take the memory.
	maxExpanded = 4 << 20
)

// eventDictionary is eventDict's S2 dictionary, built the same way always:
// explicitly, from its first byte.
var eventDictionary = func() *s2.Dict {
	d := s2.MakeDictManual([]byte(eventDict), 0)
	if d == nil {
		panic("topics: the event dictionary is not a valid S2 dictionary")
	}
	return d
}()

// CompactEvent appends the stored form of value, an encoded event, to dst.
// Safe for concurrent use.
func CompactEvent(dst, value []byte) []byte {
	return append(append(dst, compactForm), eventDictionary.Encode(nil, value)...)
}

// errCorruptEvent is a stored event that does not expand.
var errCorruptEvent = errors.New("corrupt stored event")

// ExpandEvent returns the event a stored value holds: CompactEvent's form
// expanded, and an event stored plain (as earlier versions did) as it is.
// Safe for concurrent use.
func ExpandEvent(b []byte) ([]byte, error) {
	if len(b) == 0 || b[0] != compactForm {
		return b, nil
	}
	n, err := s2.DecodedLen(b[1:])
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", errCorruptEvent, err)
	case n == 0 || n > maxExpanded:
		return nil, fmt.Errorf("%w: %d bytes", errCorruptEvent, n)
	}
	v, err := eventDictionary.Decode(nil, b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorruptEvent, err)
	}
	return v, nil
}
