package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestStatsCorrectsForTheStall feeds Stats two contenders sending every
// 100 ms, answered in 10 ms, one of which waits 2 s once: the p99 over the
// commands sent is 10 ms; the corrected one counts the 19 commands a
// requester sending every 100 ms would have had waiting meanwhile.
func TestStatsCorrectsForTheStall(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	l := &Load{}
	send := func(owner string, ms, tookMS int) {
		q := &request{id: fmt.Sprintf("%s-%d", owner, ms), owner: owner, sent: at(ms)}
		if tookMS >= 0 {
			q.answered = at(ms + tookMS)
		}
		l.order = append(l.order, q)
	}
	for ms := 0; ms < 10_000; ms += 100 {
		send("a", ms, 10)
		switch {
		case ms < 5000 || ms >= 7000:
			send("b", ms, 10)
		case ms == 5000:
			send("b", ms, 2000) // its partition had no owner; b sent nothing until 7000
		}
	}
	send("a", 10_000, -1) // still in flight

	s := l.Stats()
	assert.Equal(t, 182, s.Commands)
	assert.Equal(t, 1, s.Unanswered)
	assert.Equal(t, 1, s.OverSecond)
	assert.Equal(t, 2*time.Second, s.Worst)
	assert.Equal(t, 10*time.Millisecond, s.P99) // the 180th of 181: blind to the stall
	// 181 answers (180 of 10 ms) and 19 synthetic waits of 100 to 1,900 ms:
	// the 198th of 200 is 1,800 ms (histogram precision 0.1 %).
	assert.InDelta(t, 1800*time.Millisecond, s.CorrectedP99, float64(2*time.Millisecond))

	// Commands sent before the stall: the interval is still each
	// contender's usual one, and nothing is added.
	s = l.Stats(Window{From: at(0), To: at(4000)})
	assert.Equal(t, 80, s.Commands)
	assert.Zero(t, s.OverSecond)
	assert.Equal(t, 10*time.Millisecond, s.P99)
	assert.InDelta(t, 10*time.Millisecond, s.CorrectedP99, float64(20*time.Microsecond))
}

// TestIntervalsOfClusteredGaps: two contenders whose gaps are 10 and 30 ms
// in nearly equal numbers (one more of either), plus a lease left to expire
// (1.05 s) and a stall (6 s). Their medians are 10 and 30 ms; their usual
// intervals, means without the long gaps, both about 20 ms.
func TestIntervalsOfClusteredGaps(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 6, 0, 0, 0, time.UTC)
	var all []sample
	contender := func(owner string, tens, thirties int) {
		at := t0
		all = append(all, sample{owner: owner, sent: at})
		gaps := []time.Duration{1050 * time.Millisecond, 6 * time.Second}
		for i := range max(tens, thirties) {
			if i < tens {
				gaps = append(gaps, 10*time.Millisecond)
			}
			if i < thirties {
				gaps = append(gaps, 30*time.Millisecond)
			}
		}
		for _, g := range gaps {
			at = at.Add(g)
			all = append(all, sample{owner: owner, sent: at})
		}
	}
	contender("low", 53, 50)
	contender("high", 50, 53)
	iv := intervals(all)
	assert.InDelta(t, 20*time.Millisecond, iv["low"], float64(500*time.Microsecond)) // 2,030 ms / 103
	assert.InDelta(t, 20*time.Millisecond, iv["high"], float64(500*time.Microsecond))
}
