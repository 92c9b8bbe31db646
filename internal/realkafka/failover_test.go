package realkafka

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/config"
)

// testFailover adds a second lockworker to w1's group and, under load on
// every partition, SIGKILLs w1: the broker hands its partitions to the
// survivor once w1's session times out (KAFKA_SESSION_TIMEOUT, by default
// Apache Kafka's minimum of 6 s), so every command is answered, and the
// replies break no lock (chaos.Check). w1 then restarts and rejoins.
func testFailover(ctx context.Context, t *testing.T, s *suite, w1 *chaos.Replica) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(s.brokers...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	// sharing waits until n members of the group hold partitions.
	sharing := func(n int, what string) {
		t.Helper()
		var last string
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			gs, err := adm.DescribeGroups(ctx, s.group)
			if err == nil {
				err = gs.Error()
			}
			holding := 0
			if g, ok := gs[s.group]; ok && err == nil {
				for _, m := range g.Members {
					if a, ok := m.Assigned.AsConsumer(); ok && len(a.Topics) > 0 {
						holding++
					}
				}
				last = g.State
			}
			if holding == n && last == "Stable" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d members of group %s hold partitions, not %d (state %q, error %v)", what, holding, s.group, n, last, err)
			}
		}
	}

	w2 := s.replica("lockworker-2")
	s.start(ctx, t, w2)
	sharing(2, "after lockworker-2 joined")

	load, err := chaos.StartLoad(ctx, chaos.LoadConfig{Brokers: s.brokers, Commands: s.names.Commands, Partitions: partitions,
		LocksPerPartition: 1, ReplyTopic: s.names.ReplyTopic("failover")})
	require.NoError(t, err)
	stopped := false
	defer func() {
		if !stopped {
			load.Stop(0)
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if st := load.Stats(); st.Commands-st.Unanswered >= 10*partitions {
			break
		}
		require.False(t, time.Now().After(deadline), "the load got too few answers before the kill: %+v", load.Stats())
	}

	killed := time.Now()
	require.NoError(t, w1.Kill())
	// The commands first sent from a second before the kill to a second
	// after include those in flight to w1's partitions when it died: each is
	// answered once the survivor took them over.
	stranded := chaos.Window{From: killed.Add(-time.Second), To: killed.Add(time.Second)}
	for deadline := killed.Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if st := load.Stats(stranded); time.Now().After(stranded.To) && st.Commands > 0 && st.Unanswered == 0 {
			t.Logf("SIGKILL of %s: %d commands sent around it, all answered, the slowest in %s (session timeout %s)",
				w1.Name, st.Commands, st.Worst.Round(time.Millisecond), config.ApacheMinSessionTimeout)
			require.Greater(t, st.Worst, time.Second, "the kill stranded commands on %s's partitions until the takeover", w1.Name)
			break
		}
		require.False(t, time.Now().After(deadline), "commands sent around the SIGKILL unanswered a minute later: %+v", load.Stats(stranded))
	}

	s.start(ctx, t, w1)
	sharing(2, "after "+w1.Name+" restarted")
	load.Stop(30 * time.Second)
	stopped = true
	st := load.Stats()
	t.Logf("%d commands (%d resends), %d unanswered, slowest answer %s", st.Commands, load.Resends(), st.Unanswered, st.Worst.Round(time.Millisecond))
	require.Zero(t, st.Unanswered, "every command is answered")
	require.NoError(t, chaos.Check(load.History()))
}
