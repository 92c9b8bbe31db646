package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A lease kept by a session shows it, and so does each holder.
func TestDescribeSession(t *testing.T) {
	at := topics.NewTime(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	li := &topics.LockInfo{LockName: "a", OwnerID: "o", Status: topics.StatusAcquired, FencingToken: 7, SessionID: "s-1",
		Mode: topics.ModeShared, HolderCount: 2, Holders: []topics.Holder{
			{OwnerID: "o", Mode: topics.ModeShared, FencingToken: 7, ExpiresAt: at, SessionID: "s-1"},
			{OwnerID: "p", Mode: topics.ModeShared, FencingToken: 8, ExpiresAt: at}}}
	d := describe(li)
	require.Contains(t, d, "a acquired owner=o token=7 session=s-1")
	require.Contains(t, d, "\n  o shared token=7 expires=2026-12-03T09:00:00.000000Z session=s-1\n  p shared token=8 expires=2026-12-03T09:00:00.000000Z")
	li.Status, li.HolderCount = topics.StatusReleased, 0
	require.Equal(t, "a released owner=o token=7 session=s-1 acquisitions=0 extensions=0 mode=shared", describe(li),
		"the session whose end released it")
}
