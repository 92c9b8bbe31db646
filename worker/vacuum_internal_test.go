package worker

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// Which tables the vacuum loop takes for their growth alone: past twice
// their statistics and 1,000 rows, until the statistics count 100,000.
func TestGrown(t *testing.T) {
	for _, c := range []struct {
		live, stats int64
		want        bool
	}{
		{live: 999, stats: -1, want: false},    // too small to matter
		{live: 1000, stats: -1, want: true},    // never counted
		{live: 1000, stats: 0, want: true},     // counted empty
		{live: 5000, stats: 2500, want: true},  // doubled
		{live: 5000, stats: 2501, want: false}, // not yet
		{live: 199_998, stats: 99_999, want: true},
		{live: 10_000_000, stats: 100_000, want: false}, // plans are by index from here
	} {
		require.Equal(t, c.want, grown(store.TableStats{LiveRows: c.live, StatsRows: c.stats}), "live %d, statistics %d", c.live, c.stats)
	}
}
