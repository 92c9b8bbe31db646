package client

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// FuzzStateRecord reads any record of the lock state topic (key, value or
// tombstone, a header) as Watch and Locks read each one (readRecord, and
// unreadableLock for one that does not decode): any producer to the topic
// may write it. Nothing panics; a state read is of the lock its key is the
// key of (a tombstone's too), and Record says the same lock; a record not
// read says which, and the lock it is left out as is one of its key.
func FuzzStateRecord(f *testing.F) {
	state := func(ns, name string) []byte {
		at := topics.NewTime(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
		v, err := topics.LockState{Namespace: ns, LockName: name, Revision: 3, Status: topics.StatusAcquired, Limit: 1, HolderCount: 1,
			Holders:   []topics.Holder{{OwnerID: "o", Mode: "exclusive", FencingToken: 7, AcquiredAt: at, ExpiresAt: at, LeaseDuration: 30}},
			Operation: topics.OpAcquire, ChangedAt: at}.Encode()
		require.NoError(f, err)
		return v
	}
	for _, seed := range []struct {
		key       string
		value     []byte
		tombstone bool
	}{
		{"a", state("", "a"), false},
		{"ns/a", state("ns", "a"), false},
		{"a/b/c", state("a/b", "c"), false},
		{"a/b/c", state("a", "b/c"), false},
		{"a/b", nil, true},
		{"/b", nil, true},
		{"a", state("", "b"), false},   // another lock's state
		{"a", state("ns", "a"), false}, // another namespace's
		{"ns/a", state("", "a"), false},
		{"a", []byte(`{"v":2,"lock_name":"a"}`), false},
		{"a", []byte(`{"v":1,"lock_name":""}`), false},
		{"ns/a", []byte(`{"namespace":"ns","lock_name":"a","holders":{}}`), false},
		{"a", []byte("\xff"), false},
		{"", []byte(`{}`), false},
	} {
		f.Add([]byte(seed.key), seed.value, seed.tombstone, []byte("h"), []byte("v"), int32(0), int64(0))
	}
	f.Fuzz(func(t *testing.T, key, value []byte, tombstone bool, hkey, hvalue []byte, partition int32, offset int64) {
		if tombstone {
			value = nil // kgo's tombstone: a null value
		} else if value == nil {
			value = []byte{} // an empty value, not a tombstone
		}
		rec := &kgo.Record{Topic: "locks.state.v1", Key: key, Value: value, Partition: partition, Offset: offset,
			Headers: []kgo.RecordHeader{{Key: string(hkey), Value: hvalue}}}
		lr, err := readRecord(rec)
		if err == nil {
			require.Equal(t, string(key), topics.LockKey(lr.Namespace, lr.Name), "the state read is of a lock of its key")
			require.Equal(t, tombstone, lr.Deleted, "a tombstone, and only one, deletes")
			require.NoError(t, lr.Unreadable)
			if !lr.Deleted {
				require.NotEmpty(t, lr.Name)
				require.Equal(t, lr.Namespace, lr.Record.Namespace, "Record is the same lock")
				require.Equal(t, lr.Name, lr.Record.LockName, "Record is the same lock")
				require.Len(t, lr.Holders, len(lr.Record.Holders))
			}
			return
		}
		require.False(t, tombstone, "a tombstone reads: %v", err)
		require.ErrorContains(t, err, fmt.Sprintf("record of key %q at partition %d, offset %d: ", key, partition, offset),
			"the error names the record")
		ul := unreadableLock(rec, err)
		require.Equal(t, string(key), ul.Key)
		require.Equal(t, err, ul.Err)
		if ul.Known {
			require.Equal(t, string(key), topics.LockKey(ul.Namespace, ul.Name), "the lock left out is of its key")
		} else {
			require.Contains(t, string(key), "/", "only a key with a / may be more than one lock")
		}
	})
}
