package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/omninode/lockworker/topics"
)

// Summary is the original node's metrics summary (its get_metrics()), kept
// field for field for its users. It covers this process since it started,
// and is read from the Prometheus metrics, so the two always agree.
type Summary struct {
	TotalAcquires  int64 `json:"total_acquires"`
	TotalReleases  int64 `json:"total_releases"`
	TotalExtends   int64 `json:"total_extends"`
	TotalQueries   int64 `json:"total_queries"`
	TotalCleanups  int64 `json:"total_cleanups"`
	FailedAcquires int64 `json:"failed_acquires"`
	// SuccessRate is the share of acquires not answered lock.rejected (a
	// queued acquire is not a failure), as in the original node; 1 before
	// the first acquire.
	SuccessRate float64 `json:"success_rate"`
	// AvgAcquireTimeMS and AvgReleaseTimeMS average duration_ms (poll to
	// commit); 0 before the first such command.
	AvgAcquireTimeMS float64 `json:"avg_acquire_time_ms"`
	AvgReleaseTimeMS float64 `json:"avg_release_time_ms"`
}

// Summary reads the summary from the command counters and latencies.
func (m *Metrics) Summary() Summary {
	total := map[string]int64{}
	failed := map[string]int64{}
	collect(m.commands, func(labels map[string]string, d *dto.Metric) {
		n := int64(d.GetCounter().GetValue())
		op := labels["operation"]
		total[op] += n
		if r := labels["result"]; r != "ok" && r != resultQueued {
			failed[op] += n
		}
	})
	avgMS := map[string]float64{}
	collect(m.latency, func(labels map[string]string, d *dto.Metric) {
		if h := d.GetHistogram(); h.GetSampleCount() > 0 {
			avgMS[labels["operation"]] = h.GetSampleSum() / float64(h.GetSampleCount()) * 1000
		}
	})
	s := Summary{
		TotalAcquires: total[topics.OpAcquire], TotalReleases: total[topics.OpRelease], TotalExtends: total[topics.OpExtend],
		TotalQueries: total[topics.OpQuery], TotalCleanups: total[topics.OpCleanup], FailedAcquires: failed[topics.OpAcquire],
		SuccessRate: 1, AvgAcquireTimeMS: avgMS[topics.OpAcquire], AvgReleaseTimeMS: avgMS[topics.OpRelease],
	}
	if s.TotalAcquires > 0 {
		s.SuccessRate = float64(s.TotalAcquires-s.FailedAcquires) / float64(s.TotalAcquires)
	}
	return s
}

// collect calls fn with the labels and value of each series of c.
func collect(c prometheus.Collector, fn func(map[string]string, *dto.Metric)) {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	for metric := range ch {
		var d dto.Metric
		if metric.Write(&d) != nil {
			continue
		}
		labels := make(map[string]string, len(d.GetLabel()))
		for _, l := range d.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		fn(labels, &d)
	}
}
