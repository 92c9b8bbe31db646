package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The peer scenario runs the original node's own design beside lockworker:
// its table (its README's schema, ../shared/reference), one autocommitted
// statement per acquire and per release, ownership checked on release.
// Each round measures lockworker's closed loop (scenario 1's raw records)
// and the peer's, each first in every other round (inTurn), with the same
// clients, warm-up and window, so the figures compare as ratios within one
// run on one noisy machine.

// peerDDL is the original node's table and indexes.
const peerDDL = `
CREATE TABLE distributed_locks (
    lock_id VARCHAR(255) PRIMARY KEY,
    owner_id VARCHAR(255) NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lease_duration REAL NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    metadata JSONB DEFAULT '{}',
    status VARCHAR(50) DEFAULT 'acquired',
    acquisition_count INT DEFAULT 1,
    extension_count INT DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    updated_at TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_distributed_locks_expires_at ON distributed_locks(expires_at);
CREATE INDEX idx_distributed_locks_owner_id ON distributed_locks(owner_id);
CREATE INDEX idx_distributed_locks_status ON distributed_locks(status);`

// peerAcquire takes a free, released or expired lock, or renews its own, in
// one statement; no row back means another owner holds it. Times are epoch milliseconds, as
// the original stores them.
const peerAcquire = `
INSERT INTO distributed_locks AS l (lock_id, owner_id, acquired_at, expires_at, lease_duration, heartbeat_at, metadata, status)
VALUES ($1, $2, $3, $3 + ($4 * 1000)::bigint, $4, $3, '{}', 'acquired')
ON CONFLICT (lock_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, acquired_at = EXCLUDED.acquired_at,
    expires_at = EXCLUDED.expires_at, lease_duration = EXCLUDED.lease_duration, heartbeat_at = EXCLUDED.heartbeat_at,
    status = 'acquired', acquisition_count = l.acquisition_count + 1, extension_count = 0, updated_at = NOW()
WHERE l.status <> 'acquired' OR l.expires_at < EXCLUDED.acquired_at OR l.owner_id = EXCLUDED.owner_id
RETURNING acquisition_count`

// peerRelease ends the owner's own lease.
const peerRelease = `
UPDATE distributed_locks SET status = 'released', updated_at = NOW()
WHERE lock_id = $1 AND owner_id = $2 AND status = 'acquired'`

var errPeerHeld = errors.New("held by another owner")

// PeerRound is one round: lockworker and the original design.
type PeerRound struct {
	// Lockworker is the target's round: lockworker, or a floor.
	Lockworker ThroughputResult `json:"lockworker"`
	Original   ThroughputResult `json:"original"`
	// Ratio is lockworker's commands/s over the original's; P50Ratio its
	// acquire p50 over the original's (0: not measured, p50Ratio).
	Ratio    float64 `json:"throughput_ratio"`
	P50Ratio float64 `json:"acquire_p50_ratio"`
}

// PeerResult is the peer scenario.
type PeerResult struct {
	// Target is what ran beside the original design: lockworker, or a
	// floor (floor.go).
	Target  string      `json:"target"`
	Clients int         `json:"clients"`
	Rounds  []PeerRound `json:"rounds"`
	// Light is the original design with one client in a closed loop: its
	// latency at light load, beside scenario 2's.
	Light ThroughputResult `json:"light"`
}

// peerCycler is scenario 1's closed loop on the original design; locks are
// named by round, as a run cut off between acquire and release leaves its
// locks held.
func (b *bench) peerCycler(pool *pgxpool.Pool, round int) cycler {
	return func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		lock, owner := b.rid("peer", round, c), fmt.Sprintf("peer-owner-%d", c)
		start := time.Now()
		var n int
		if err := pool.QueryRow(ctx, peerAcquire, lock, owner, start.UnixMilli(), 60.0).Scan(&n); err != nil {
			if errors.Is(err, pgx.ErrNoRows) { // the statement's WHERE kept the holder's row
				err = errPeerHeld
			}
			return time.Since(start), 0, 0, fmt.Errorf("acquire %s: %w", lock, err)
		}
		acq := time.Since(start)
		start = time.Now()
		tag, err := pool.Exec(ctx, peerRelease, lock, owner)
		switch {
		case err != nil:
			return acq, time.Since(start), 1, fmt.Errorf("release %s: %w", lock, err)
		case tag.RowsAffected() != 1:
			return acq, time.Since(start), 1, fmt.Errorf("release %s: not held by %s", lock, owner)
		}
		return acq, time.Since(start), 2, nil
	}
}

// peer runs cfg.Rounds rounds at cfg.Clients, then the original design
// alone with one client.
func (b *bench) peer(ctx context.Context) (PeerResult, error) {
	res := PeerResult{Target: "lockworker", Clients: b.cfg.Clients}
	if floorMode(b.cfg.WorkerBin) != "" {
		res.Target = b.cfg.WorkerBin
	}
	url, drop, err := newSchema(ctx, b.t.adminURL, "lockbench_peer", b.cfg.Keep)
	if err != nil {
		return res, err
	}
	defer drop()
	pcfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return res, err
	}
	pcfg.MaxConns = int32(b.cfg.PGMaxConns)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, peerDDL); err != nil {
		return res, fmt.Errorf("creating the original design's table: %w", err)
	}
	for round := range b.cfg.Rounds {
		var r PeerRound
		runs := inTurn([]struct {
			dst   *ThroughputResult
			via   string
			cycle cycler
		}{
			{&r.Lockworker, res.Target, b.rawCycler(30 * time.Second)},
			{&r.Original, "original design", b.peerCycler(pool, round)},
		}, round)
		b.progress("peer round %d of %d: %s, then %s, %d clients", round+1, b.cfg.Rounds, runs[0].via, runs[1].via, b.cfg.Clients)
		for _, s := range runs {
			if *s.dst, err = b.throughput(ctx, s.via, s.cycle, false); err != nil {
				return res, err
			}
			b.quiesce(ctx, fmt.Sprintf("peer round %d, %s", round+1, s.via), time.Minute)
		}
		withoutTarget(&r.Original)
		if r.Original.PerSecond > 0 {
			r.Ratio = r.Lockworker.PerSecond / r.Original.PerSecond
		}
		r.P50Ratio = p50Ratio(r.Lockworker, r.Original)
		res.Rounds = append(res.Rounds, r)
	}
	cfg := *b.cfg
	cfg.Clients = 1
	one := &bench{cfg: &cfg, t: b.t, d: b.d, run: b.run, rep: b.rep, progress: b.progress}
	res.Light, err = one.throughput(ctx, "original design, 1 client", one.peerCycler(pool, -1), false)
	withoutTarget(&res.Light)
	return res, err
}

// withoutTarget leaves out of a run of the original design the figures of
// the target's worker and broker, idle beside it: their CPU (per 1,000 of
// the original's commands, too) and the in-process worker's batches are
// not the original's. PostgreSQL's server CPU and lockbench's process's
// (the original's clients; in process the idle worker's too) stay.
func withoutTarget(t *ThroughputResult) {
	t.CPU.WorkerCPU, t.CPU.BrokerCPU, t.CPU.brokerLost, t.WorkerCPUPer = nil, nil, false, nil
	t.Batches, t.MeanBatch, t.MeanBatchMS = 0, 0, 0
}

// p50Ratio is num's acquire p50 over den's, or 0 (not measured) when
// either answered no acquire: a side that answered nothing has no p50, and
// 0 would read as the fastest.
func p50Ratio(num, den ThroughputResult) float64 {
	if num.Acquire.N == 0 || den.Acquire.N == 0 {
		return 0
	}
	return num.Acquire.P50 / den.Acquire.P50
}

// peerGoals are issue 17's ratio goals.
func (r *Report) peerGoals() {
	p := r.Peer
	if p == nil || len(p.Rounds) == 0 {
		return
	}
	worst, worstP50 := p.Rounds[0].Ratio, p.Rounds[0].P50Ratio
	var errs int64
	noP50 := 0 // the first round without a p50 ratio
	for i, x := range p.Rounds {
		worst, worstP50 = min(worst, x.Ratio), max(worstP50, x.P50Ratio)
		errs += x.Lockworker.Errors + x.Original.Errors
		if x.P50Ratio == 0 && noP50 == 0 {
			noP50 = i + 1
		}
	}
	want := 1.0
	if p.Clients >= 256 {
		want = 2
	}
	r.goal("peer", fmt.Sprintf("throughput / original design's, %d clients, worst round", p.Clients), fmt.Sprintf(">= %.0fx", want), worst, "x", worst >= want, true)
	r.failedIn(errs)
	if p.Clients < 256 {
		r.goal("peer", fmt.Sprintf("acquire p50 / original design's, %d clients, worst round", p.Clients), "<= 2x", worstP50, "x", worstP50 <= 2 && noP50 == 0, true)
		if noP50 > 0 {
			// Not measured is a miss: a side answered nothing.
			r.Goals[len(r.Goals)-1].Measured = fmt.Sprintf("- (round %d: no acquire answered)", noP50)
		}
		r.failedIn(errs)
		worstCPU, have, missing := 0.0, true, ""
		for i, x := range p.Rounds {
			c, ok := cpuPerCommand(x.Lockworker)
			worstCPU, have = max(worstCPU, c*1000), have && ok
			if !ok && missing == "" {
				missing = fmt.Sprintf("round %d: %s", i+1, cpuMissing(x.Lockworker))
			}
		}
		why := r.cpuUnjudged()
		r.goal("peer", fmt.Sprintf("CPU per command (worker, broker, whole PostgreSQL server), %d clients, worst round", p.Clients), "<= 0.3 ms",
			worstCPU, " ms", worstCPU <= 0.3, have && why == "")
		if why != "" {
			r.unjudged()
			r.note("peer: the CPU per command is not judged: " + why)
		} else if !have && errs == 0 { // with errors, a miss
			r.note("peer: the CPU per command is not judged: " + missing)
		}
		r.failedIn(errs)
	}
	// Light load is issue 17's open loop of 100 commands/s (--rate 100):
	// at make bench's 1,000/s, or any other rate, the figures are not judged.
	if l := r.Latency; l != nil {
		r.latencyGoalAt(lightLoadRate, "peer", fmt.Sprintf("light load: acquire p50 at %d/s (original design, 1 client: %.2f ms)", l.Rate, p.Light.Acquire.P50), "<= 1.5 ms", l.Acquire, l.Acquire.P50, 1.5)
		r.latencyGoalAt(lightLoadRate, "peer", fmt.Sprintf("light load: acquire p99 at %d/s", l.Rate), "<= 5 ms", l.Acquire, l.Acquire.P99, 5)
		r.unjudgedAt(lightLoadRate, "peer: its light-load goals (acquire p50 <= 1.5 ms, p99 <= 5 ms)")
	}
}

func (p *PeerResult) print(w io.Writer) {
	fmt.Fprintf(w, "\npeer: %s beside the original design (one statement per acquire and release), %d clients, alternating\n", p.Target, p.Clients)
	fmt.Fprint(w, unbalanced([]string{p.Target, "original design"}, len(p.Rounds)))
	for i, x := range p.Rounds {
		fmt.Fprintf(w, "  round %d  %s %8s cmd/s  acquire p50 %7.2f ms | original %8s cmd/s  acquire p50 %7.2f ms | ratio %.2fx, p50 %s | errors %d%s, %d%s\n",
			i+1, p.Target, fmtNum(x.Lockworker.PerSecond), x.Lockworker.Acquire.P50, fmtNum(x.Original.PerSecond), x.Original.Acquire.P50, x.Ratio, fmtRatio(x.P50Ratio),
			x.Lockworker.Errors, fmtUnanswered(x.Lockworker.Unanswered), x.Original.Errors, fmtUnanswered(x.Original.Unanswered))
	}
	fmt.Fprintf(w, "  original design, 1 client: %s cmd/s, acquire p50 %.2f ms, p99 %.2f ms\n", fmtNum(p.Light.PerSecond), p.Light.Acquire.P50, p.Light.Acquire.P99)
}
