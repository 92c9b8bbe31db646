package topics_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A holder takes no more of a lock.status than HolderBytes counts, however
// its owner_metadata is written: <, > and & stay one byte each (json.Marshal
// would write six, and a status of many such holders would pass Kafka's
// 1 MiB record while counted within MaxHoldersBytes).
func TestHolderBytesBoundsItsEncoding(t *testing.T) {
	at := topics.NewTime(time.Now())
	meta, err := json.Marshal(map[string]string{"url": strings.Repeat("a<b>&", 800)})
	require.NoError(t, err)
	meta = bytes.ReplaceAll(meta, []byte(`\u003c`), []byte("<")) // as jsonb stores it
	meta = bytes.ReplaceAll(meta, []byte(`\u003e`), []byte(">"))
	meta = bytes.ReplaceAll(meta, []byte(`\u0026`), []byte("&"))
	h := topics.Holder{OwnerID: "<&>\x01", Mode: topics.ModeShared, Status: "acquired", FencingToken: -1 << 63,
		AcquiredAt: at, ExpiresAt: at, LeaseDuration: 86400.123456, ExtensionCount: 1 << 62,
		OwnerMetadata: meta, SessionID: "s<&>"}
	status := func(hs ...topics.Holder) int {
		e := topics.NewEvent(topics.TypeStatus, topics.OpQuery, "r", time.Now())
		e.LockInfo = &topics.LockInfo{LockName: "l", Status: "acquired", Holders: hs}
		b, err := e.Encode()
		require.NoError(t, err)
		return len(b)
	}
	one, two := status(h), status(h, h)
	require.LessOrEqual(t, two-one, topics.HolderBytes(h))
	require.LessOrEqual(t, one-status(), topics.HolderBytes(h))
}

// A session command's record has no lock_name, as the contract asks of
// the session operations.
func TestSessionCommandHasNoLockName(t *testing.T) {
	b, err := topics.Command{Operation: topics.OpSessionOpen, OwnerID: "o", SessionID: "s"}.Encode()
	require.NoError(t, err)
	require.NotContains(t, string(b), "lock_name")
}
