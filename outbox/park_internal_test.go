package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A park makes every pass read the table until a while after it ends, then
// rows handed over go from memory again (the entry itself stays an hour to
// keep holding newer rows back by the database's clock).
func TestParkReadsTheTableUntilItEnds(t *testing.T) {
	r := &Relay{cfg: Config{PollInterval: time.Hour}}
	now := time.Now()
	p := &partition{parked: map[string]time.Time{}, lastRead: now}
	require.False(t, r.mustRead(p))
	p.parked["t"] = now.Add(5 * time.Minute)
	require.True(t, r.mustRead(p), "parked")
	p.parked["t"] = now.Add(-parkSlack / 2)
	require.True(t, r.mustRead(p), "just ended by this clock: the database's may lag")
	p.parked["t"] = now.Add(-2 * parkSlack)
	require.False(t, r.mustRead(p), "long ended")
}
