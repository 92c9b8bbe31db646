package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

var (
	lagDesc = prometheus.NewDesc(Namespace+"_consumer_lag",
		"Commands in Kafka beyond the next one PostgreSQL will apply, per commands partition this process owns.",
		[]string{"partition"}, nil)
	undecidedDesc = prometheus.NewDesc(Namespace+"_commands_undecided",
		"Records of the commands partition past its last stable offset, per partition this process owns: "+
			"an open Kafka transaction's and every record after its first, none applied until it commits or aborts.",
		[]string{"partition"}, nil)
)

// partitionCollector reads one gauge per commands partition at scrape time
// (the consumer lag, the undecided records). Concurrent scrapes share one
// read (Kafka's offsets, and PostgreSQL's stored ones for the lag): a
// scrape arriving while it is under way waits for its result.
type partitionCollector struct {
	desc    *prometheus.Desc
	read    func(context.Context) (map[int32]int64, error)
	timeout time.Duration
	flight  singleflight.Group
}

func (c *partitionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *partitionCollector) Collect(ch chan<- prometheus.Metric) {
	v, err, _ := c.flight.Do("read", func() (any, error) {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		return c.read(ctx)
	})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for p, n := range v.(map[int32]int64) { // shared: read only
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), strconv.Itoa(int(p)))
	}
}
