package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/internal/failstreak"
	"github.com/omninode/lockworker/store"
)

// VacuumConfig configures a Vacuumer. Fields without a default are required.
type VacuumConfig struct {
	Store *store.Store
	// Enabled runs the loop; false only checks and logs the autovacuum
	// settings at start (the check retried until it works).
	Enabled bool
	// Interval between passes. Default 2 s.
	Interval time.Duration
	// DeadRows is the bound of a hot table's dead rows past which the
	// worker vacuums it even while autovacuum runs (autovacuum has fallen
	// behind). Default 10,000.
	DeadRows int64
	Logger   zerolog.Logger
	// Metrics, when set, is told of every pass.
	Metrics VacuumMetrics
}

// VacuumMetrics receives the Vacuumer's measurements; metrics.Metrics
// implements it.
type VacuumMetrics interface {
	// TableDeadRows is a hot table's dead rows, read every pass.
	TableDeadRows(table string, n int64)
	// VacuumRun is told of every VACUUM the loop decided on: result is
	// "done", "busy" (another replica was vacuuming) or "failed"; not of
	// one cut short because the worker is stopping.
	VacuumRun(result string)
}

// Vacuum results, VacuumMetrics.VacuumRun's result.
const (
	VacuumDone   = "done"
	VacuumBusy   = "busy"
	VacuumFailed = "failed"
)

// vacuumMinDead is the fewest dead rows worth a VACUUM of its own while
// autovacuum is off: below it, a pass costs more than the dead rows do.
const vacuumMinDead = 1000

// grownMinRows and grownMaxStats bound the tables the loop vacuums for
// having grown past twice what their statistics count. Below about 2,000
// rows PostgreSQL's generic plan of the prefetch is a sequential scan
// anyway, and scanning a table that small costs little; once the
// statistics count 100,000 rows every plan is by index, and further
// doublings would only make the loop read the newest half of a large table
// while the hot tables wait for their turn (a VACUUM of a million rows never
// vacuumed took 350 ms here, all cached).
const (
	grownMinRows  = 1000
	grownMaxStats = 100_000
)

// VacuumStatus is what the loop knows, for /health/locks.
type VacuumStatus struct {
	// Enabled is VACUUM_ENABLED.
	Enabled bool `json:"enabled"`
	// Settings are the server's autovacuum settings at the last pass (at
	// start when disabled); nil until read.
	Settings *store.VacuumSettings `json:"settings,omitempty"`
	// DeadRowsBound is VACUUM_DEAD_ROWS.
	DeadRowsBound int64 `json:"dead_rows_bound"`
	// LastRun is the end of the worker's last VACUUM, LastTables what it
	// vacuumed and LastDurationMS how long it took; Runs counts them (this
	// process only).
	LastRun        *time.Time `json:"last_run"`
	LastTables     []string   `json:"last_tables,omitempty"`
	LastDurationMS float64    `json:"last_duration_ms"`
	Runs           int64      `json:"runs"`
	// Tables are the hot tables' statistics at the last pass.
	Tables []store.TableStats `json:"tables,omitempty"`
	// Error is the last pass's failure, empty when it succeeded.
	Error string `json:"error,omitempty"`
}

// Vacuumer keeps the hot tables (store.HotTables) vacuumed where
// PostgreSQL does not: every Interval it reads their dead rows and vacuums
// those past the bound. With autovacuum off the bound is the table's live
// rows (at least vacuumMinDead), as autovacuum's own scale factor would
// do, or DeadRows, whichever is lower; with autovacuum on, the worker only
// steps in past DeadRows. Replicas take turns through store.Vacuum's
// advisory lock.
//
// It also vacuums a hot table whose live rows have grown past twice what
// its statistics count (pg_class.reltuples; within grownMinRows and
// grownMaxStats), whether autovacuum runs or not, for the plans. Every
// pooled connection keeps its prepared statements' generic plans, chosen
// once from the statistics of the moment. On a new schema they are made
// while processed_requests is nearly empty, so the prefetch's plan is a
// sequential scan; it stays one as the table grows by thousands of rows a
// second, until new statistics make PostgreSQL plan again. Autovacuum looks at most once a minute
// (autovacuum_naptime), and never where it is off; in lockbench such a
// plan halved the throughput of a run. A VACUUM updates the row and page
// counts plans are costed from (not the column statistics an ANALYZE
// gathers, which a lookup by key does not need), and in an insert-only
// table reads only the pages added since; an ANALYZE of processed_requests
// took 150-300 ms of PostgreSQL's CPU here, sorting its sample. Growth by
// doubling keeps these VACUUMs few: a handful while a table fills. They
// are logged at debug: unlike a VACUUM for dead rows while autovacuum
// runs, they say nothing about autovacuum's settings.
type Vacuumer struct {
	cfg VacuumConfig
	log zerolog.Logger

	mu     sync.Mutex
	status VacuumStatus
	// logged remembers the last settings logged, so the log says when they
	// change, not every pass.
	logged *store.VacuumSettings
}

// NewVacuumer returns a Vacuumer; Run starts it.
func NewVacuumer(cfg VacuumConfig) (*Vacuumer, error) {
	if cfg.Store == nil {
		return nil, errors.New("worker: VacuumConfig.Store is required")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.DeadRows <= 0 {
		cfg.DeadRows = 10000
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Vacuumer{cfg: cfg, log: cfg.Logger,
		status: VacuumStatus{Enabled: cfg.Enabled, DeadRowsBound: cfg.DeadRows}}, nil
}

// Status returns a copy of what the loop knows.
func (v *Vacuumer) Status() VacuumStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.status
	s.LastTables = append([]string(nil), s.LastTables...)
	s.Tables = append([]store.TableStats(nil), s.Tables...)
	return s
}

// Run checks the autovacuum settings and logs them; when enabled, it then
// runs a pass every Interval until ctx is done. A failed pass, or a failed
// check when disabled, is retried after Interval doubling up to 5 s (or
// Interval, when longer), and failures in a row are logged as a streak
// (failstreak): the first, then one line per 30 s, and one when a pass works
// again. Disabled, Run returns once the check has worked.
func (v *Vacuumer) Run(ctx context.Context) {
	step, failed := v.pass, "vacuum pass"
	if !v.cfg.Enabled {
		step, failed = v.check, "checking whether autovacuum runs"
	}
	var streak failstreak.Streak
	for {
		wait := v.cfg.Interval
		err := step(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			n, ev := streak.Fail(&v.log, err)
			wait = max(wait, store.Backoff(v.cfg.Interval, store.DefaultRetryMax, n))
			ev.Dur("retry_in", wait).Msg(failed)
		default:
			streak.OK(&v.log).Msg(failed + " works again")
			if !v.cfg.Enabled {
				return
			}
		}
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// check reads the settings, for a Vacuumer disabled, and logs them with a
// warning when autovacuum does not run either.
func (v *Vacuumer) check(ctx context.Context) error {
	set, err := v.cfg.Store.ReadVacuumSettings(ctx)
	if err != nil && ctx.Err() != nil {
		return err // the worker stopping: no failure of the check
	}
	v.mu.Lock()
	v.status.Error = ""
	if err != nil {
		v.status.Error = err.Error()
	} else {
		v.status.Settings = &set
	}
	v.mu.Unlock()
	if err != nil {
		return err
	}
	ev := v.log.Info()
	if !set.Runs() {
		ev = v.log.Warn()
	}
	ev.Bool("autovacuum", set.Autovacuum).Bool("track_counts", set.TrackCounts).
		Msg("the worker's vacuum loop is off (VACUUM_ENABLED=false): the hot tables are vacuumed only by autovacuum or an operator")
	return nil
}

// pass reads the settings and statistics, and vacuums the tables due. A
// pass cut short because ctx ended (the worker stopping) is no failure: it
// leaves the status's error as it was.
func (v *Vacuumer) pass(ctx context.Context) (err error) {
	defer func() {
		if err != nil && ctx.Err() != nil {
			return
		}
		v.mu.Lock()
		v.status.Error = ""
		if err != nil {
			v.status.Error = err.Error()
		}
		v.mu.Unlock()
	}()
	set, err := v.cfg.Store.ReadVacuumSettings(ctx)
	if err != nil {
		return err
	}
	v.logSettings(set)
	stats, err := v.cfg.Store.ReadTableStats(ctx)
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.status.Settings, v.status.Tables = &set, stats
	v.mu.Unlock()
	var due []string
	behind := false // a table is due for its dead rows, not only its growth
	for _, t := range stats {
		v.cfg.Metrics.TableDeadRows(t.Table, t.DeadRows)
		switch {
		case v.due(set, t):
			due, behind = append(due, t.Table), true
		case grown(t):
			due = append(due, t.Table)
		}
	}
	if len(due) == 0 {
		return nil
	}
	start := time.Now()
	ran, err := v.cfg.Store.Vacuum(ctx, due)
	took := time.Since(start)
	switch {
	case err != nil && ctx.Err() != nil:
		// Cut short by the stop, the VACUUM or the release of its lock
		// after it (Store.Vacuum closes the session, which releases it):
		// not a failed run.
		return err
	case err != nil:
		v.cfg.Metrics.VacuumRun(VacuumFailed)
		return err
	case !ran:
		v.cfg.Metrics.VacuumRun(VacuumBusy)
		v.log.Debug().Strs("tables", due).Msg("another replica is vacuuming; skipped")
		return nil
	}
	v.cfg.Metrics.VacuumRun(VacuumDone)
	end := time.Now()
	v.mu.Lock()
	v.status.LastRun, v.status.LastTables, v.status.LastDurationMS = &end, due, float64(took)/float64(time.Millisecond)
	v.status.Runs++
	v.mu.Unlock()
	ev := v.log.Debug()
	if set.Runs() && behind { // autovacuum has fallen behind: worth an operator's look
		ev = v.log.Info()
	}
	dead := zerolog.Dict()
	for _, t := range stats {
		dead.Int64(t.Table, t.DeadRows)
	}
	ev.Strs("tables", due).Dict("dead_rows", dead).Dur("took", took).Bool("autovacuum", set.Runs()).Msg("vacuumed hot tables")
	return nil
}

// grown reports whether table t has grown past its statistics enough to be
// vacuumed for its plans. Counts a backend reports late (up to a second
// after its commit) can make a table look grown once more right after a
// VACUUM; the next VACUUM counts them, so it does not repeat.
func grown(t store.TableStats) bool {
	return t.LiveRows >= grownMinRows && t.LiveRows >= 2*t.StatsRows && t.StatsRows < grownMaxStats
}

// due reports whether table t is to be vacuumed now.
func (v *Vacuumer) due(set store.VacuumSettings, t store.TableStats) bool {
	if !set.TrackCounts {
		// No dead rows are counted: vacuum every pass (the visibility map
		// makes a pass over a clean table cheap).
		return true
	}
	if set.Autovacuum {
		return t.DeadRows >= v.cfg.DeadRows
	}
	return t.DeadRows >= min(v.cfg.DeadRows, max(t.LiveRows, vacuumMinDead))
}

// logSettings logs the settings at the first pass and whenever they change.
func (v *Vacuumer) logSettings(set store.VacuumSettings) {
	if v.logged != nil && *v.logged == set {
		return
	}
	v.logged = &set
	ev := v.log.Info().Bool("autovacuum", set.Autovacuum).Bool("track_counts", set.TrackCounts).Int64("dead_rows_bound", v.cfg.DeadRows)
	switch {
	case !set.TrackCounts:
		ev.Msg("track_counts is off: dead rows cannot be counted; the worker vacuums its hot tables every pass")
	case !set.Autovacuum:
		ev.Msg("autovacuum is off: the worker vacuums its hot tables itself")
	default:
		ev.Msg("autovacuum runs: the worker vacuums a hot table only past the dead rows bound")
	}
}

func (noMetrics) TableDeadRows(string, int64) {}
func (noMetrics) VacuumRun(string)            {}
