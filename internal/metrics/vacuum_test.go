package metrics

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/worker"
)

var _ worker.VacuumMetrics = (*Metrics)(nil)

// TestVacuumMetrics: dead rows per hot table and vacuum runs by result;
// names outside the hot tables and results never become labels.
func TestVacuumMetrics(t *testing.T) {
	m := New(Config{})
	m.TableDeadRows("locks", 1200)
	m.TableDeadRows("locks", 30)
	m.TableDeadRows("outbox", 7)
	m.TableDeadRows("pg_class", 1)
	m.VacuumRun(worker.VacuumDone)
	m.VacuumRun(worker.VacuumDone)
	m.VacuumRun(worker.VacuumBusy)
	m.VacuumRun("exploded")

	require.Equal(t, 30.0, series(t, m, "lockworker_table_dead_rows", "table", "locks").GetGauge().GetValue())
	require.Equal(t, 7.0, series(t, m, "lockworker_table_dead_rows", "table", "outbox").GetGauge().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_table_dead_rows", "table", "other").GetGauge().GetValue())
	require.Equal(t, 2.0, series(t, m, "lockworker_vacuum_runs_total", "result", "done").GetCounter().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_vacuum_runs_total", "result", "busy").GetCounter().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_vacuum_runs_total", "result", "other").GetCounter().GetValue())
}
