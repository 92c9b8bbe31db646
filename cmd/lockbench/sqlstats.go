package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// sqlTracer times every statement of the in-process worker's pool, by
// statement text: pg_stat_statements from the client's side (round trip
// included), for servers where the extension cannot be loaded.
type sqlTracer struct {
	mu    sync.Mutex
	on    bool
	stats map[string]*sqlStat
}

type sqlStat struct {
	SQL     string  `json:"sql"`
	Calls   int64   `json:"calls"`
	TotalMS float64 `json:"total_ms"`
	MeanMS  float64 `json:"mean_ms"`
}

type traceKey struct{}

type traceStart struct {
	sql string
	at  time.Time
}

func newSQLTracer() *sqlTracer { return &sqlTracer{stats: map[string]*sqlStat{}} }

func (t *sqlTracer) enable(on bool) {
	t.mu.Lock()
	t.on = on
	t.mu.Unlock()
}

func normalize(sql string) string {
	s := strings.Join(strings.Fields(sql), " ")
	if len(s) > 110 {
		s = s[:110] + "…"
	}
	return s
}

func (t *sqlTracer) add(sql string, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.on {
		return
	}
	s := t.stats[sql]
	if s == nil {
		s = &sqlStat{SQL: sql}
		t.stats[sql] = s
	}
	s.Calls++
	s.TotalMS += float64(d) / 1e6
}

func (t *sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, traceKey{}, traceStart{sql: d.SQL, at: time.Now()})
}

func (t *sqlTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if s, ok := ctx.Value(traceKey{}).(traceStart); ok {
		t.add(normalize(s.sql), time.Since(s.at))
	}
}

type batchTrace struct {
	at      time.Time
	queries []string
}

func (t *sqlTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return context.WithValue(ctx, traceKey{}, &batchTrace{at: time.Now()})
}

func (t *sqlTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if b, ok := ctx.Value(traceKey{}).(*batchTrace); ok {
		q := strings.Fields(d.SQL)
		b.queries = append(b.queries, strings.Join(q[:min(len(q), 3)], " "))
	}
}

func (t *sqlTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchEndData) {
	if b, ok := ctx.Value(traceKey{}).(*batchTrace); ok {
		t.add("BATCH ["+strings.Join(b.queries, " | ")+"]", time.Since(b.at))
	}
}

func (t *sqlTracer) top(n int) []sqlStat {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]sqlStat, 0, len(t.stats))
	for _, s := range t.stats {
		x := *s
		x.MeanMS = x.TotalMS / float64(x.Calls)
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TotalMS > out[j].TotalMS })
	return out[:min(n, len(out))]
}

// activitySampler samples pg_stat_activity of lockbench's database: where
// the backends are (running, waiting on a lock or on WAL, or idle waiting
// for the client) while the load runs.
type activitySampler struct {
	// backend is its connection's backend pid, in the server's numbering.
	backend int
	mu      sync.Mutex
	samples int
	counts  map[string]int
	cancel  context.CancelFunc
	done    chan struct{}
}

type activityRow struct {
	What    string  `json:"what"`
	Percent float64 `json:"percent_of_backend_samples"`
}

func startSampler(url string, every time.Duration) (*activitySampler, error) {
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &activitySampler{backend: int(conn.PgConn().PID()), counts: map[string]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer conn.Close(context.Background())
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			rows, err := conn.Query(ctx, `
				SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(regexp_replace(query, '\s+', ' ', 'g'), 70)
				FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
			if err != nil {
				continue
			}
			var state, wait, query string
			local := map[string]int{}
			_, err = pgx.ForEachRow(rows, []any{&state, &wait, &query}, func() error {
				var k string
				switch state {
				case "active":
					k = "active  " + wait + "  " + query
				case "idle in transaction":
					k = "idle in transaction (waiting for the worker)"
				default:
					k = "idle (in the pool)"
				}
				local[k]++
				return nil
			})
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.samples++
			for k, v := range local {
				s.counts[k] += v
			}
			s.mu.Unlock()
		}
	}()
	return s, nil
}

func (s *activitySampler) stop() []activityRow {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	total := 0
	for _, v := range s.counts {
		total += v
	}
	var out []activityRow
	for k, v := range s.counts {
		out = append(out, activityRow{What: k, Percent: 100 * float64(v) / float64(max(total, 1))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Percent > out[j].Percent })
	return out[:min(len(out), 25)]
}

func printSQL(w io.Writer, stats []sqlStat) {
	fmt.Fprintf(w, "\n%-8s %10s %9s  %s\n", "calls", "total ms", "mean ms", "statement (client-side timing, in-process worker pool)")
	for _, s := range stats {
		fmt.Fprintf(w, "%-8d %10.0f %9.3f  %s\n", s.Calls, s.TotalMS, s.MeanMS, s.SQL)
	}
}

func printActivity(w io.Writer, rows []activityRow) {
	fmt.Fprintf(w, "\n%7s  %s\n", "% smp", "pg_stat_activity of lockbench's database during throughput (state, wait event, query)")
	for _, r := range rows {
		fmt.Fprintf(w, "%6.1f%%  %s\n", r.Percent, r.What)
	}
}
