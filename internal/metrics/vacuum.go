package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/omninode/lockworker/store"
)

// vacuumMetrics are the vacuum loop's (worker.Vacuumer).
type vacuumMetrics struct {
	deadRows   *prometheus.GaugeVec
	vacuumRuns *prometheus.CounterVec
}

func newVacuumMetrics() vacuumMetrics {
	return vacuumMetrics{
		deadRows: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "table_dead_rows",
			Help: "Dead row versions of each hot table (pg_stat_user_tables.n_dead_tup), read by the vacuum loop every VACUUM_INTERVAL.",
		}, []string{"table"}),
		vacuumRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "vacuum_runs_total",
			Help: "VACUUMs of hot tables the vacuum loop decided on, by result: done, busy (another replica was vacuuming) or failed.",
		}, []string{"result"}),
	}
}

// TableDeadRows implements worker.VacuumMetrics.
func (m *Metrics) TableDeadRows(table string, n int64) {
	m.vacuum.deadRows.WithLabelValues(label(table, store.HotTables)).Set(float64(n))
}

// VacuumRun implements worker.VacuumMetrics.
func (m *Metrics) VacuumRun(result string) {
	m.vacuum.vacuumRuns.WithLabelValues(label(result, vacuumResults)).Inc()
}

// vacuumResults are worker.VacuumDone, VacuumBusy and VacuumFailed, spelled
// out so metrics need not import the worker.
var vacuumResults = []string{"done", "busy", "failed"}
