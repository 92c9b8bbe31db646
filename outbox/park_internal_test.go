package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A topic parked, as the last read of the table found, makes every pass
// read the table: its rows must not go from memory before its parked rows.
func TestParkReadsTheTable(t *testing.T) {
	r := &Relay{cfg: Config{PollInterval: time.Hour}}
	p := &partition{parked: map[string]bool{}, lastRead: time.Now()}
	require.False(t, r.mustRead(p))
	p.parked["t"] = true
	require.True(t, r.mustRead(p), "parked")
}
