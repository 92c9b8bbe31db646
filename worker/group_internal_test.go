package worker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// The move of the old group's rows is offered as is only when they are
// known to be of the commands topic as it is now; when they are not (no ID
// stored, or one stored while Kafka now gives none), with the caveat to
// make sure the topic was not created again since, beside the DELETE
// (starting the old group once would only record the current ID beside
// them); with another ID stored, only the DELETE.
func TestGroupChangedOffersTheMoveOnlyForTheCurrentTopic(t *testing.T) {
	const move = "UPDATE consumer_offsets SET group_id = 'new' WHERE group_id = 'old'"
	const del = "DELETE FROM consumer_offsets WHERE group_id = 'old' AND topic = 'locks.commands';"
	const caveat = "make sure the topic was not deleted and created again since that group's last start"
	const startOnce = "start once"
	for _, c := range []struct {
		name        string
		stored, id  string
		known       bool
		contains    []string
		notContains []string
	}{
		{"the current ID stored", "id-1", "id-1", true, []string{move, del}, []string{caveat, startOnce}},
		{"the current ID not known", "id-1", "", false, []string{move, del}, []string{caveat, startOnce}},
		{"another ID stored", "id-1", "id-2", true, []string{del, "of an earlier topic of that name"}, []string{move, caveat, startOnce}},
		{"an ID stored, Kafka now gives none", "id-1", "", true, []string{move, del, caveat, "gives topics no ID now"}, []string{startOnce}},
		{"no ID stored, Kafka gives none", "", "", true, []string{move, del, caveat, "this Kafka gives topics no ID"}, []string{startOnce}},
		{"no ID stored, the topic has one", "", "id-2", true, []string{move, del, caveat, "no topic ID is stored with them"}, []string{startOnce}},
		{"no ID stored, the topic's not known", "", "", false, []string{move, del, caveat, "no topic ID is stored with them"}, []string{startOnce}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := groupChanged(&store.OtherGroupError{Group: "new", Topic: "locks.commands", Others: []string{"old"}, TopicID: c.stored}, c.id, c.known)
			require.ErrorIs(t, err, ErrGroupChanged)
			for _, s := range c.contains {
				require.Contains(t, err.Error(), s)
			}
			for _, s := range c.notContains {
				require.NotContains(t, err.Error(), s)
			}
		})
	}
	err := groupChanged(&store.OtherGroupError{Group: "new", Topic: "locks.commands", Others: []string{"old", "older"}, TopicID: "id-1"}, "id-1", true)
	require.Contains(t, err.Error(), "old's stored offsets changed last")
}
