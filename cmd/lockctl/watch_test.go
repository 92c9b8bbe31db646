package main

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// watch --lock --json and locks print a lock's record as the lock state
// topic holds it, byte for byte; the lines of a deleted or unreadable lock
// name its namespace as the records do: only when it is not empty.
func TestPrintRevisionJSON(t *testing.T) {
	at := topics.NewTime(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	rec := topics.LockState{V: topics.Version, Namespace: "ns", LockName: "a", Revision: 3, Status: topics.StatusAcquired, Limit: 1,
		HolderCount: 1, Holders: []topics.Holder{{OwnerID: "alice", Mode: topics.ModeExclusive, Status: topics.StatusAcquired,
			FencingToken: 7, AcquiredAt: at, ExpiresAt: at, LeaseDuration: 60}},
		AcquisitionCount: 7, Operation: topics.OpAcquire, ChangedAt: at, DelayUntil: &at}
	for _, tc := range []struct {
		name string
		lr   client.LockRevision
		want string
	}{
		{"state", client.LockRevision{Namespace: "ns", Name: "a", Revision: 3, Record: rec},
			`{"v":1,"namespace":"ns","lock_name":"a","revision":3,"status":"acquired","limit":1,"holder_count":1,` +
				`"holders":[{"owner_id":"alice","mode":"exclusive","status":"acquired","fencing_token":7,` +
				`"acquired_at":"2026-12-03T09:00:00.000000Z","expires_at":"2026-12-03T09:00:00.000000Z","lease_duration":60,"extension_count":0}],` +
				`"waiter_count":0,"acquisition_count":7,"operation":"acquire","changed_at":"2026-12-03T09:00:00.000000Z",` +
				`"delay_until":"2026-12-03T09:00:00.000000Z"}`},
		{"deleted", client.LockRevision{Name: "a", Deleted: true}, `{"deleted":true,"lock_name":"a"}`},
		{"deleted in a namespace", client.LockRevision{Namespace: "ns", Name: "a", Deleted: true},
			`{"deleted":true,"lock_name":"a","namespace":"ns"}`},
		{"unreadable", client.LockRevision{Name: "a", Unreadable: errors.New("bad")}, `{"lock_name":"a","unreadable":"bad"}`},
		{"unreadable in a namespace", client.LockRevision{Namespace: "ns", Name: "a", Unreadable: errors.New("bad")},
			`{"lock_name":"a","namespace":"ns","unreadable":"bad"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out testlog.Buffer
			c := &cli{stdout: &out, json: true}
			c.printRevision(tc.lr)
			require.Equal(t, tc.want+"\n", out.String())
		})
	}
}
