package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestQueueStateKeepsTheHigherRevision: a lock's state record of a lower
// revision than the one before it in the transaction never replaces it,
// and its drop, which no path should reach, is logged as an error to
// Env.Log (the zero Logger discards it); a higher one replaces it,
// silently.
func TestQueueStateKeepsTheHigherRevision(t *testing.T) {
	var logged bytes.Buffer
	b := NewBatch(nil, Env{Partition: 3, Log: zerolog.New(&logged)})
	for _, s := range []struct {
		lock string
		rev  int64
	}{{"l", 5}, {"l", 4}, {"m", 1}, {"m", 2}} {
		b.queueState("ns", s.lock, &pending{state: &topics.LockState{LockName: s.lock, Revision: s.rev}})
	}
	var kept []string
	for _, r := range b.outbox {
		if !r.superseded {
			kept = append(kept, fmt.Sprintf("%s %d", r.p.state.LockName, r.p.state.Revision))
		}
	}
	require.Equal(t, []string{"l 5", "m 2"}, kept)

	var entry map[string]any
	dec := json.NewDecoder(&logged)
	require.NoError(t, dec.Decode(&entry))
	require.False(t, dec.More(), "one entry: %s", logged.String())
	require.Equal(t, "error", entry["level"])
	require.Equal(t, "l", entry["lock_name"])
	require.Equal(t, "ns", entry["namespace"])
	require.EqualValues(t, 3, entry["partition"])
	require.EqualValues(t, 4, entry["revision"])
	require.EqualValues(t, 5, entry["kept_revision"])

	// Without a Log, the drop is still made, and logged nowhere.
	b = NewBatch(nil, Env{})
	b.queueState("ns", "l", &pending{state: &topics.LockState{LockName: "l", Revision: 5}})
	b.queueState("ns", "l", &pending{state: &topics.LockState{LockName: "l", Revision: 4}})
	require.Len(t, b.outbox, 1)
}
