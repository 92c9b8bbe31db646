package handlers

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestQueueStateKeepsTheHigherRevision: a lock's state record of a lower
// revision than the one before it in the transaction never replaces it;
// a higher one does.
func TestQueueStateKeepsTheHigherRevision(t *testing.T) {
	b := NewBatch(nil, Env{})
	for _, s := range []struct {
		lock string
		rev  int64
	}{{"l", 5}, {"l", 4}, {"m", 1}, {"m", 2}} {
		b.queueState("", s.lock, &pending{state: &topics.LockState{LockName: s.lock, Revision: s.rev}})
	}
	var kept []string
	for _, r := range b.outbox {
		if !r.superseded {
			kept = append(kept, fmt.Sprintf("%s %d", r.p.state.LockName, r.p.state.Revision))
		}
	}
	require.Equal(t, []string{"l 5", "m 2"}, kept)
}
