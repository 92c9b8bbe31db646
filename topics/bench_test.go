package topics_test

import (
	"testing"
	"time"

	"github.com/omninode/lockworker/topics"
)

var benchCommands = map[string]string{
	"acquire": `{"request_id":"svc-7-000123","operation":"acquire","lock_name":"orders/42","owner_id":"billing-7",` +
		`"lease_duration":30,"wait_timeout":10,"reply_to":"locks.replies.billing"}`,
	"acquire+metadata": `{"request_id":"svc-7-000124","operation":"acquire","namespace":"tenant-a","lock_name":"orders/42",` +
		`"owner_id":"billing-7","lease_duration":30,"owner_metadata":{"host":"billing-7.prod","pid":4242,"tags":["a","b","c"]},` +
		`"reply_to":"locks.replies.billing"}`,
	"release": `{"request_id":"svc-7-000125","operation":"release","lock_name":"orders/42","owner_id":"billing-7",` +
		`"fencing_token":17,"reply_to":"locks.replies.billing"}`,
	"invalid": `{"request_id":"svc-7-000126","operation":"acquire","lock_name":"","owner_id":"billing-7","reply_to":"locks.replies.billing"}`,
}

// BenchmarkDecode is the worker's per-record decode and validation.
func BenchmarkDecode(b *testing.B) {
	for _, name := range []string{"acquire", "acquire+metadata", "release", "invalid"} {
		v := []byte(benchCommands[name])
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(v)))
			for b.Loop() {
				_, err := topics.Decode(v, "locks.replies.")
				if (err != nil) != (name == "invalid") {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchEvent() topics.Event {
	at := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "svc-7-000123", at)
	ms := 2.1
	ev.DurationMS = &ms
	ev.LockInfo = &topics.LockInfo{LockName: "orders/42", OwnerID: "billing-7", Status: topics.StatusAcquired, FencingToken: 17,
		AcquiredAt: topics.NewTimePtr(at), ExpiresAt: topics.NewTimePtr(at.Add(30 * time.Second)), LeaseDuration: 30, AcquisitionCount: 3}
	return ev
}

// BenchmarkEventEncode is the worker's per-event encoding at Flush (with
// NewEvent's UUIDv7), and the CloudEvents headers of each outbox row.
func BenchmarkEventEncode(b *testing.B) {
	ev := benchEvent()
	b.Run("new+encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, "svc-7-000123", ev.OccurredAt.Time)
			e.LockInfo, e.DurationMS = ev.LockInfo, ev.DurationMS
			if _, err := e.Encode(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = topics.EventHeaders(ev, "lockworker/bench")
		}
	})
	b.Run("decode", func(b *testing.B) {
		v, _ := ev.Encode()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := topics.DecodeEvent(v); err != nil {
				b.Fatal(err)
			}
		}
	})
}
