package topics

import (
	"errors"
	"fmt"

	"github.com/klauspost/compress/s2"
)

// Events and lock states are stored compressed where they wait or are kept:
// an event's or a lock state's row of the outbox (EncodeEventHeaders,
// EncodeLockStateHeaders) and a request's outcome in processed_requests.
// S2 (Snappy's successor) against a dictionary of such records takes a
// 480-byte event to 80–150 bytes in 1–2 µs, and every byte stored costs
// PostgreSQL twice, in the table and in its WAL: for each command it stored
// an event three times, the largest part of its writes
// (docs/performance.md). The relay is handed the plain rows in memory;
// only a row read back from the table is expanded.

// compactEventForm starts a compacted event: an S2 block against
// eventDict; compactStateForm a compacted lock state, against stateDict.
// JSON starts with '{', so a stored value of either form tells which it is.
const (
	compactEventForm = 0x01
	compactStateForm = 0x02
)

// eventDict and stateDict are the compression dictionaries: events, and
// lock state records, with the fields they usually carry. They are part of
// the stored form: never change them. Another dictionary takes another
// first byte and keeps these for reading what was stored with them.
const (
	eventDict = `{"v":1,"event_id":"01a23c9b-d530-7132-bcaa-f5f09ee3e655","type":"lock.acquired","request_id":"",` +
		`"operation":"acquire","success":true,"lock_info":{"namespace":"","lock_name":"","owner_id":"","status":"acquired",` +
		`"fencing_token":1,"acquired_at":"2026-12-03T15:52:55.343923Z","expires_at":"2026-12-03T15:52:55.343923Z",` +
		`"lease_duration":30,"acquisition_count":1,"extension_count":0,"mode":"exclusive","limit":1,"revision":1},` +
		`"duration_ms":0.5,"occurred_at":"2026-12-03T15:52:55.343923Z"}` +
		`{"v":1,"type":"lock.released","operation":"release","success":false,"error_code":"NOT_HELD","error_message":"",` +
		`"type":"lock.extended","operation":"extend","type":"lock.queued","queue_position":1,"type":"lock.rejected","status":"released"}`
	stateDict = `{"v":1,"namespace":"","lock_name":"","revision":2,"status":"acquired","limit":1,"holder_count":1,"holders":[` +
		`{"owner_id":"","mode":"exclusive","status":"acquired","fencing_token":1,"acquired_at":"2026-12-03T15:52:55.343923Z",` +
		`"expires_at":"2026-12-03T15:52:55.343923Z","lease_duration":30,"extension_count":0}],"waiter_count":0,` +
		`"acquisition_count":1,"operation":"acquire","changed_at":"2026-12-03T15:52:55.343923Z"}` +
		`{"v":1,"revision":3,"status":"released","limit":1,"holder_count":0,"holders":[],"waiter_count":0,"operation":"release",` +
		`"mode":"shared","operation":"extend","status":"expired","operation":"expire","delay_until":"`
	// maxCompacted is the largest value compacted; a larger one (a status
	// listing many holders with large metadata: the contract allows tens
	// of megabytes) is stored plain, which either reader takes as it is.
	// It bounds what a stored value may expand to, so a corrupt row cannot
	// take the memory.
	maxCompacted = 1 << 20
)

// The dictionaries of eventDict and stateDict, built the same way always:
// explicitly, from their first byte.
var (
	eventDictionary = makeDict(eventDict)
	stateDictionary = makeDict(stateDict)
)

func makeDict(s string) *s2.Dict {
	d := s2.MakeDictManual([]byte(s), 0)
	if d == nil {
		panic("topics: a compaction dictionary is not a valid S2 dictionary")
	}
	return d
}

// CompactEvent appends the stored form of value, an encoded event, to dst:
// compacted, or plain above maxCompacted. Safe for concurrent use.
func CompactEvent(dst, value []byte) []byte {
	return compact(dst, compactEventForm, eventDictionary, value)
}

// CompactLockState appends the stored form of value, an encoded lock
// state, to dst, as CompactEvent does. Safe for concurrent use.
func CompactLockState(dst, value []byte) []byte {
	return compact(dst, compactStateForm, stateDictionary, value)
}

func compact(dst []byte, form byte, d *s2.Dict, value []byte) []byte {
	if len(value) > maxCompacted {
		return append(dst, value...)
	}
	return append(append(dst, form), d.Encode(nil, value)...)
}

// errCorruptRecord is a stored event or lock state that does not expand.
var errCorruptRecord = errors.New("corrupt stored record")

// ExpandEvent returns the event a stored value holds: CompactEvent's form
// expanded, and an event stored plain (as earlier versions did) as it is.
// Safe for concurrent use.
func ExpandEvent(b []byte) ([]byte, error) { return expand(b, compactEventForm, eventDictionary) }

// ExpandLockState returns the lock state a stored value holds:
// CompactLockState's form expanded, and one stored plain as it is.
func ExpandLockState(b []byte) ([]byte, error) { return expand(b, compactStateForm, stateDictionary) }

// expand returns b expanded if it starts with form (an S2 block against d
// follows), bounded by maxCompacted; else b as it is.
func expand(b []byte, form byte, d *s2.Dict) ([]byte, error) {
	if len(b) == 0 || b[0] != form {
		return b, nil
	}
	n, err := s2.DecodedLen(b[1:])
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", errCorruptRecord, err)
	case n == 0 || n > maxCompacted:
		return nil, fmt.Errorf("%w: %d bytes", errCorruptRecord, n)
	}
	v, err := d.Decode(nil, b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorruptRecord, err)
	}
	return v, nil
}
