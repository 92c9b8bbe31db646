package main

import (
	"bytes"
	"strings"
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

// TestGoalsShowSampleCount: a percentile in the goals table says how many
// samples it is of.
func TestGoalsShowSampleCount(t *testing.T) {
	cfg := DefaultConfig()
	r := newReport(&cfg)
	r.Latency = &LatencyResult{Rate: 100, Sent: 1000, Answered: 1000,
		Acquire: dist{N: 500, P50: 1.2, P99: 4}, Release: dist{N: 499, P50: 1.1, P99: 3}}
	r.Contention = &ContentionResult{Waiters: 3, Granted: 3, Fair: true, InOrder: 3, HandOff: dist{N: 3, P50: 2}}
	r.finish(&cfg)
	var table bytes.Buffer
	r.print(&table, &cfg)
	for _, want := range []string{"1.20 ms n=500", "4.00 ms n=500", "3.00 ms n=499", "2.00 ms n=3"} {
		require.Contains(t, table.String(), want)
	}
	for _, line := range strings.Split(table.String(), "\n") {
		if strings.Contains(line, "grants in queue order") {
			require.NotContains(t, line, "n=", "a count, not a percentile")
		}
	}
}
