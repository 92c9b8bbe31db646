package httpapi

import (
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestConcurrentScrapes: two scrapes at once (an HA pair of Prometheus
// servers) both get 200, not one of them 503 (up == 0 on a healthy
// process). The database hangs, so the first scrape's read of the
// database gauges is still under way when the second comes: the second
// shares it, and both answer without those gauges once it times out.
func TestConcurrentScrapes(t *testing.T) {
	e := newEnv(t, nil, hung)
	e.proxy.Hang()
	defer e.proxy.Restore()
	var codes [maxScrapes]int
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() { codes[i], _ = e.get("/metrics", nil) })
	}
	wg.Wait()
	for i, code := range codes {
		require.Equal(t, http.StatusOK, code, "scrape %d", i)
	}
}
