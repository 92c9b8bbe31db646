package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDistOfNearestRank: distOf's percentile is the nearest rank, the
// ceil(p·n)-th smallest sample, also when p·n is not whole.
func TestDistOfNearestRank(t *testing.T) {
	for _, c := range []struct {
		n             int
		p50, p95, p99 float64
	}{
		{1, 1, 1, 1},
		{100, 50, 95, 99},
		{151, 76, 144, 150}, // ceil(75.5), ceil(143.45), ceil(149.49)
		{10000, 5000, 9500, 9900},
	} {
		var ds []time.Duration
		for i := c.n; i >= 1; i-- { // unsorted: distOf sorts
			ds = append(ds, time.Duration(i)*time.Millisecond)
		}
		d := distOf(ds)
		require.Equal(t, []float64{c.p50, c.p95, c.p99, float64(c.n)}, []float64{d.P50, d.P95, d.P99, d.Max}, "n=%d", c.n)
	}
}
