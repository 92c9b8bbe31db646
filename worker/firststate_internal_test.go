package worker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// The lock state topic counts as changed when its partition count differs
// or its topic ID does (both known); a topic ID not told this time (a
// broker too old to say) keeps the recorded one, which a later
// re-creation is then still told from.
func TestStateTopicChanged(t *testing.T) {
	for _, c := range []struct {
		name       string
		was, found store.StateTopic
		record     store.StateTopic
		changed    bool
	}{
		{"same", store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{ID: "a", Partitions: 8}, false},
		{"partitions added", store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{ID: "a", Partitions: 11}, store.StateTopic{ID: "a", Partitions: 11}, true},
		{"created again", store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{ID: "b", Partitions: 8}, store.StateTopic{ID: "b", Partitions: 8}, true},
		{"ID known at last", store.StateTopic{Partitions: 8}, store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{ID: "a", Partitions: 8}, false},
		{"ID not told", store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{Partitions: 8}, store.StateTopic{ID: "a", Partitions: 8}, false},
		{"ID not told, partitions added", store.StateTopic{ID: "a", Partitions: 8}, store.StateTopic{Partitions: 9}, store.StateTopic{ID: "a", Partitions: 9}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			record, changed := stateTopicChanged(c.was, c.found)
			require.Equal(t, c.changed, changed)
			require.Equal(t, c.record, record)
		})
	}
}
