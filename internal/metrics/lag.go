package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

var lagDesc = prometheus.NewDesc(Namespace+"_consumer_lag",
	"Commands in Kafka beyond the next one PostgreSQL will apply, per commands partition this process owns.",
	[]string{"partition"}, nil)

// lagCollector reads the consumer lag at scrape time. Concurrent scrapes
// share one read (Kafka's end offsets and PostgreSQL's stored ones): a
// scrape arriving while it is under way waits for its result.
type lagCollector struct {
	lag     func(context.Context) (map[int32]int64, error)
	timeout time.Duration
	flight  singleflight.Group
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	v, err, _ := c.flight.Do("lag", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		return c.lag(ctx)
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(lagDesc, err)
		return
	}
	for p, n := range v.(map[int32]int64) { // shared: read only
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(int(p)))
	}
}
