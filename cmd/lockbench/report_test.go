package main

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestModesGoalJudgedApart: the shared / exclusive CPU ratio is judged only
// when the worker and the broker are measured as processes of their own;
// otherwise it is shown, and a note says why it is not judged.
func TestModesGoalJudgedApart(t *testing.T) {
	modes := &ModesResult{Clients: 8, Rounds: []ModesRound{{SharedCost: 1.5}, {SharedCost: 2.5}}}
	for _, c := range []struct {
		name   string
		cfg    Config
		judged bool
	}{
		{"in process", Config{}, false},
		{"child worker, broker in lockbench", Config{WorkerBin: "lockworker"}, false},
		{"apart", Config{WorkerBin: "lockworker", BrokerBin: "devkafka"}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &Report{Config: &c.cfg, Modes: modes}
			r.modesGoals()
			require.Len(t, r.Goals, 1)
			g := r.Goals[0]
			require.Equal(t, "2.50x", g.Measured)
			if c.judged {
				require.NotNil(t, g.Met)
				require.False(t, *g.Met)
				require.Empty(t, r.Notes)
				return
			}
			require.Nil(t, g.Met)
			require.Len(t, r.Notes, 1)
			require.Contains(t, r.Notes[0], "not judged")
		})
	}
}
