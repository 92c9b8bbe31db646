package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// ---- soak (not part of "all") ---------------------------------------------

// SoakResult is the soak scenario: a closed loop of clients acquiring and
// releasing a few locks each for a long time, against the database as it is
// (autovacuum on or off), to show whether the worker wears down as its
// tables churn (issue 11: table bloat).
type SoakResult struct {
	Clients int     `json:"clients"`
	Locks   int     `json:"locks"`
	Seconds float64 `json:"seconds"`
	// Vacuum is whether the worker's vacuum loop ran (--vacuum).
	Vacuum bool `json:"worker_vacuum"`
	// Settings are the server's autovacuum settings.
	Settings store.VacuumSettings `json:"postgres"`
	// Scrapes of the worker's /metrics (--soak-scrape) and how long the
	// slowest took.
	Scrapes     int     `json:"metrics_scrapes"`
	ScrapeMaxMS float64 `json:"metrics_scrape_max_ms"`
	Errors      int64   `json:"errors"`
	// Errors are those of the commands sent after the warm-up. Unanswered
	// of them are the commands sent before the last window's end and still
	// unanswered when the grace after it ended: they are in its latency,
	// with their wait until then.
	Unanswered int64        `json:"unanswered_at_end"`
	Windows    []SoakWindow `json:"windows"`
	// ThroughputRatio and P99Ratio are the last window's over the first's.
	ThroughputRatio float64 `json:"throughput_ratio_last_first"`
	P99Ratio        float64 `json:"p99_ratio_last_first"`
}

// SoakWindow is one window (a minute by default) of the soak.
type SoakWindow struct {
	EndSeconds float64 `json:"end_seconds"`
	Commands   int64   `json:"commands"`
	PerSecond  float64 `json:"commands_per_second"`
	Latency    dist    `json:"latency"`
	// DeadRows of the hot tables at the window's end.
	DeadRows map[string]int64 `json:"dead_rows"`
}

type soakWindow struct {
	commands atomic.Int64
	lat      *hist
}

func (b *bench) soak(ctx context.Context) (SoakResult, error) {
	cfg := b.cfg
	res := SoakResult{Clients: cfg.SoakClients, Locks: cfg.SoakLocks, Vacuum: cfg.Vacuum}
	if b.t.st != nil {
		set, err := b.t.st.ReadVacuumSettings(ctx)
		if err != nil {
			return res, err
		}
		res.Settings = set
	}
	n := int((cfg.SoakDuration + cfg.SoakWindow - 1) / cfg.SoakWindow)
	windows := make([]soakWindow, n)
	for i := range windows {
		windows[i].lat = newHist()
	}
	// Client c takes locks c, c+clients, ... of its own: parseFlags ensures
	// SoakLocks >= SoakClients, so no two share one and none refuses another.
	perClient := max(1, cfg.SoakLocks/cfg.SoakClients)
	var errs, unanswered, reported atomic.Int64
	var start atomic.Pointer[time.Time] // set when the warm-up ends
	// lctx ends with the grace after the last window (or a signal).
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	// cutShort ends the soak on a signal: its windows so far would read as
	// the whole soak's.
	cutShort := func() (SoakResult, error) {
		stop()
		wg.Wait()
		return SoakResult{}, fmt.Errorf("cut short after %d of %d windows: %w", len(res.Windows), n, ctx.Err())
	}
	for c := range cfg.SoakClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprintf("soak-owner-%d", c)
			for i := 0; ; i++ {
				lock := b.rid("soak", (c+cfg.SoakClients*(i%perClient))%cfg.SoakLocks)
				for _, op := range []string{topics.OpAcquire, topics.OpRelease} {
					cmd := topics.Command{RequestID: b.rid("soak", c, i, op[:1]), Operation: op, LockName: lock, OwnerID: owner, LeaseDuration: 60}
					sent := time.Now()
					if s := start.Load(); s != nil && !sent.Before(s.Add(time.Duration(n)*cfg.SoakWindow)) {
						return // the soak has ended: no new command
					}
					r, err := b.d.call(lctx, cmd, 30*time.Second)
					if ctx.Err() != nil {
						return // a signal: cutShort drops the figures
					}
					want := map[string]string{topics.OpAcquire: topics.TypeAcquired, topics.OpRelease: topics.TypeReleased}[op]
					if err == nil && r.ev.Type != want {
						err = fmt.Errorf("%s answered %s %s", op, r.ev.Type, r.ev.ErrorCode)
					}
					// A failed command is in its window's latency too, with
					// the time it took to fail (a timeout's whole wait; one
					// the grace's end cut off, its wait until then).
					at := r.at
					if at.IsZero() {
						at = time.Now()
					}
					// Sent in the warm-up: in the rate of the window it is
					// answered in, as throughput's, but in no latency and
					// no error count.
					s := start.Load()
					measured := s != nil && !sent.Before(*s)
					if s != nil {
						if w := int(at.Sub(*s) / cfg.SoakWindow); w >= 0 {
							if w < n && err == nil {
								windows[w].commands.Add(1)
							}
							// Answered in the grace: sent in the last window,
							// in its latency but not its rate.
							if measured {
								windows[min(w, n-1)].lat.add(at.Sub(sent))
							}
						}
					}
					if err == nil {
						continue
					}
					if measured {
						errs.Add(1)
						if lctx.Err() != nil {
							unanswered.Add(1) // still waiting when the grace ended
						} else if reported.Add(1) <= 5 {
							b.progress("soak: %v", err)
						}
					}
					break
				}
			}
		}()
	}
	select {
	case <-time.After(cfg.Warmup):
	case <-ctx.Done():
		return cutShort()
	}
	t0 := time.Now()
	start.Store(&t0)
	// The grace after the last window: the commands in flight may still be
	// answered; those unanswered when it ends are cut off, errors.
	defer time.AfterFunc(time.Duration(n)*cfg.SoakWindow+cfg.EndGrace, stop).Stop()
	sctx, stopScrape := context.WithCancel(lctx)
	defer stopScrape()
	if b.t.httpAddr != "" && cfg.SoakScrape > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.scrape(sctx, "http://"+b.t.httpAddr+"/metrics", cfg.SoakScrape, &res)
		}()
	}
	for w := range n {
		end := t0.Add(time.Duration(w+1) * cfg.SoakWindow)
		select {
		case <-time.After(time.Until(end)):
		case <-ctx.Done():
			return cutShort()
		}
		sw := SoakWindow{EndSeconds: time.Since(t0).Seconds(), Commands: windows[w].commands.Load()}
		sw.PerSecond = float64(sw.Commands) / cfg.SoakWindow.Seconds()
		if b.t.st != nil {
			if stats, err := b.t.st.ReadTableStats(ctx); err == nil {
				sw.DeadRows = map[string]int64{}
				for _, t := range stats {
					sw.DeadRows[t.Table] = t.DeadRows
				}
			}
		}
		res.Windows = append(res.Windows, sw)
		b.progress("soak: %3.0f s  %s commands/s  dead rows %v", sw.EndSeconds, fmtNum(sw.PerSecond), sw.DeadRows)
	}
	res.Seconds = time.Since(t0).Seconds()
	stopScrape()
	wg.Wait()
	res.Unanswered = unanswered.Load()
	res.Errors = errs.Load()
	// The last window's answers have all arrived now, or been cut off.
	for i := range res.Windows {
		res.Windows[i].Commands = windows[i].commands.Load()
		res.Windows[i].PerSecond = float64(res.Windows[i].Commands) / cfg.SoakWindow.Seconds()
		res.Windows[i].Latency = windows[i].lat.dist()
	}
	// A last window that completed nothing has a ratio of 0, a miss.
	first, last := res.Windows[0], res.Windows[len(res.Windows)-1]
	if first.PerSecond > 0 {
		res.ThroughputRatio = last.PerSecond / first.PerSecond
	}
	if first.Latency.P99 > 0 {
		res.P99Ratio = last.Latency.P99 / first.Latency.P99
	}
	return res, nil
}

// scrape reads url every interval until ctx is done, as Prometheus would
// (the worker's database gauges are read at scrape time), into res.
func (b *bench) scrape(ctx context.Context, url string, interval time.Duration, res *SoakResult) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				b.progress("soak: scraping %s: %v", url, err)
			}
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		res.Scrapes++
		res.ScrapeMaxMS = max(res.ScrapeMaxMS, ms(time.Since(start)))
	}
}

// soakGoals are issue 11's: the last window within 20 % of the first.
func (r *Report) soakGoals() {
	s := r.Soak
	if s == nil || len(s.Windows) == 0 {
		return
	}
	r.goal("soak", "throughput last window / first", ">= 0.8", s.ThroughputRatio, "", s.ThroughputRatio >= 0.8, s.Windows[0].PerSecond > 0)
	r.failedIn(s.Errors)
	r.goal("soak", "p99 last window / first", "<= 1.2", s.P99Ratio, "", s.P99Ratio <= 1.2 && s.P99Ratio > 0, s.P99Ratio > 0)
	r.failedIn(s.Errors)
}

func (s *SoakResult) print(w io.Writer, window time.Duration) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format, args...) }
	p("\nsoak: %d clients on %d locks for %.0f s; worker vacuum loop %v; PostgreSQL autovacuum %v, track_counts %v; %d errors%s; %d scrapes of /metrics, slowest %.0f ms\n",
		s.Clients, s.Locks, s.Seconds, s.Vacuum, s.Settings.Autovacuum, s.Settings.TrackCounts, s.Errors, fmtUnanswered(s.Unanswered), s.Scrapes, s.ScrapeMaxMS)
	p("  %-8s %12s %9s %9s %9s   %s\n", "until", "commands/s", "p50 ms", "p99 ms", "max ms", "dead rows at the end")
	for _, x := range s.Windows {
		p("  %6.0f s %12s %9.2f %9.2f %9.1f   locks %d, outbox %d, consumer_offsets %d, processed_requests %d\n",
			x.EndSeconds, fmtNum(x.PerSecond), x.Latency.P50, x.Latency.P99, x.Latency.Max,
			x.DeadRows["locks"], x.DeadRows["outbox"], x.DeadRows["consumer_offsets"], x.DeadRows["processed_requests"])
	}
	p("  last %s / first %s: throughput %.2f, p99 %.2f\n", window, window, s.ThroughputRatio, s.P99Ratio)
}
