package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var lagDesc = prometheus.NewDesc(Namespace+"_consumer_lag",
	"Commands in Kafka beyond the next one PostgreSQL will apply, per commands partition this process owns.",
	[]string{"partition"}, nil)

// lagCollector reads the consumer lag at scrape time.
type lagCollector struct {
	lag     func(context.Context) (map[int32]int64, error)
	timeout time.Duration
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- lagDesc }

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	lag, err := c.lag(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(lagDesc, err)
		return
	}
	for p, n := range lag {
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(n), strconv.Itoa(int(p)))
	}
}
