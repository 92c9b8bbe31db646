package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/omninode/lockworker/internal/procstat"
)

func kfakeCluster() (*kfake.Cluster, error) {
	return kfake.NewCluster(kfake.NumBrokers(1))
}

// procSource is the process scenario 7 measures.
type procSource interface {
	describe() string
	cpu() (time.Duration, error) // user + system so far
	peakRSS() (int64, error)     // bytes (VmHWM)
}

// selfProc is lockbench's own process: in-process mode, where the worker
// shares it with the broker and the load generator.
type selfProc struct{}

func (selfProc) describe() string {
	return "in-process: lockbench's own process (worker + embedded broker + load generator), getrusage and /proc/self/status VmHWM"
}

func (selfProc) cpu() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func (selfProc) peakRSS() (int64, error) { return vmHWM("/proc/self/status") }

// pidProc is the lockworker child process.
type pidProc struct{ pid int }

func (p pidProc) describe() string {
	return fmt.Sprintf("child process: the lockworker binary alone (pid %d), /proc/<pid>/stat utime+stime and /proc/<pid>/status VmHWM", p.pid)
}

func (p pidProc) cpu() (time.Duration, error) {
	s, err := procstat.Read(fmt.Sprintf("/proc/%d/stat", p.pid))
	return s.Own, err
}

func (p pidProc) peakRSS() (int64, error) { return vmHWM(fmt.Sprintf("/proc/%d/status", p.pid)) }

func vmHWM(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in %s", path)
}

// postmaster is a PostgreSQL server's process tree: its postmaster and the
// backends and workers it forks.
type postmaster struct {
	proc string // "/proc", or a copy of its layout in tests
	pid  int
	// skip is a child left out while it lives (without).
	skip int
	// afterScan, in tests, runs between the scan of the children and the
	// postmaster's second reading, where a reap makes a child count twice.
	afterScan func()
}

// serverProcsQuery returns lockbench's backend and the pids of the
// server's own background processes, in the server's numbering: its
// checkpointer, background writer and walwriter, which run as long as the
// server does (PostgreSQL 10 and later list them in pg_stat_activity, with
// these backend_type names through 17 at least). A role that is neither a
// superuser nor a member of pg_read_all_stats sees every row's pid, datid
// and usesysid but not the backend_type of the sessions of other roles, nor
// of any background process: for it the processes of the server that have
// neither a database nor a user are taken instead. Those are the three,
// the autovacuum launcher and whichever of the archiver, the startup
// process, the WAL receiver and the WAL summarizer run, all children of the
// postmaster too.
const serverProcsQuery = `SELECT pg_backend_pid(), ARRAY(SELECT pid FROM pg_stat_activity
	WHERE backend_type IN ('checkpointer', 'background writer', 'walwriter')
		OR (backend_type IS NULL AND datid IS NULL AND usesysid IS NULL AND pid IS NOT NULL)
	ORDER BY pid)`

// rowQuerier is a pool, a connection or a transaction.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// serverProcs runs serverProcsQuery.
func serverProcs(ctx context.Context, q rowQuerier) (backend int, background []int, err error) {
	var pids []int32
	if err := q.QueryRow(ctx, serverProcsQuery).Scan(&backend, &pids); err != nil {
		return 0, nil, err
	}
	for _, p := range pids {
		background = append(background, int(p))
	}
	return backend, background, nil
}

// findPostmaster finds the server of pool's connections on this machine:
// the parent of a backend's process, which must be the parent of the
// server's background processes too.
func findPostmaster(ctx context.Context, pool *pgxpool.Pool) (*postmaster, error) {
	backend, background, err := serverProcs(ctx, pool)
	if err != nil {
		return nil, err
	}
	return postmasterOf("/proc", backend, background)
}

// postmasterOf is the postmaster of backend, the pid of one of the server's
// backends, whose background processes (serverProcsQuery) have the pids
// background. A server in another pid namespace (a container, another
// machine) numbers its processes apart from ours: the backend's pid may be
// nobody's here, or another process's, even another server's backend. The
// processes must be postgres, and the backend's parent must be the parent
// of each background process as well: a server elsewhere would have to
// have every one of those pids match a child of the same local postmaster.
// Nothing here reads a clock, which a step (NTP, a resumed VM) would move.
// A background process that exits (a crash, an archiver that fails)
// between the query and the reading here fails the check too: PostgreSQL
// is then not measured, with a note.
//
// The errors leave the pids out: they go into the report's notes, once
// however many targets a run starts.
func postmasterOf(proc string, backend int, background []int) (*postmaster, error) {
	s, err := procstat.Read(fmt.Sprintf("%s/%d/stat", proc, backend))
	if err != nil || s.Comm != "postgres" {
		return nil, fmt.Errorf("lockbench's backend is not a postgres process in %s (PostgreSQL on another machine, or in a container?)", proc)
	}
	p, err := procstat.Read(fmt.Sprintf("%s/%d/stat", proc, s.PPID))
	if err != nil || p.Comm != "postgres" {
		return nil, fmt.Errorf("the parent of lockbench's backend in %s is not a postgres process", proc)
	}
	if len(background) == 0 {
		return nil, errors.New("pg_stat_activity lists none of the server's background processes (checkpointer, background writer, walwriter)")
	}
	for _, pid := range background {
		c, err := procstat.Read(fmt.Sprintf("%s/%d/stat", proc, pid))
		if err != nil || c.Comm != "postgres" || c.PPID != s.PPID {
			return nil, fmt.Errorf("the server's background processes (pg_stat_activity) are not postgres children of the parent of lockbench's backend in %s: "+
				"that parent is another server's (PostgreSQL on another machine, or in a container?)", proc)
		}
	}
	return &postmaster{proc: proc, pid: s.PPID}, nil
}

// without is p leaving out its child pid, a backend of lockbench's own
// (--pg-sample's), not of the load measured. Only while it lives: reaped,
// its CPU is in the postmaster's children time, with the others'.
func (p *postmaster) without(pid int) *postmaster {
	q := *p
	q.skip = pid
	return &q
}

// cpu is the CPU of the server's tree so far: the postmaster's own and
// that of the children it has reaped (a backend or worker that exited), plus
// each live child's. A child's whole CPU moves into the postmaster's
// children time when it is reaped, so the sum only grows. Every database of
// the server counts: once reaped, their backends cannot be told apart.
func (p *postmaster) cpu() (time.Duration, error) {
	path := fmt.Sprintf("%s/%d/stat", p.proc, p.pid)
	pm, err := procstat.Read(path)
	if err != nil {
		return 0, err
	}
	total := time.Duration(-1)
	// The postmaster is read again after its children, so a child reaped
	// during the scan is never missed: either the scan read it or the
	// postmaster's children time holds it. It counts twice if both do;
	// the postmaster's children time changes then: scan again, a few times
	// at most, and keep the smallest total, the one nearest a scan without
	// a reap.
	for range 5 {
		before := pm
		dirs, _ := filepath.Glob(p.proc + "/[0-9]*")
		skip := fmt.Sprintf("%s/%d", p.proc, p.skip)
		var live time.Duration
		for _, d := range dirs {
			if d == skip {
				continue
			}
			if s, err := procstat.Read(d + "/stat"); err == nil && s.PPID == p.pid {
				live += s.Own + s.Children
			}
		}
		if p.afterScan != nil {
			p.afterScan()
		}
		if pm, err = procstat.Read(path); err != nil {
			return 0, err
		}
		if t := pm.Own + pm.Children + live; total < 0 || t < total {
			total = t
		}
		if pm.Children == before.Children {
			break
		}
	}
	return total, nil
}

// cpuSnapshot reads the CPU of the worker, of a broker process, of
// lockbench and of PostgreSQL's process tree. A figure whose reading failed,
// or that has no process, is not OK: it gives no difference.
type cpuSnapshot struct {
	at                               time.Time
	worker, broker, self, pg         time.Duration
	workerOK, brokerOK, selfOK, pgOK bool
	// hasBroker says there is a broker process to read.
	hasBroker         bool
	machineBusy, idle uint64 // /proc/stat jiffies
}

// takeCPU reads the worker's CPU from p, a broker process's from broker
// (nil: none, or not measured apart) and PostgreSQL's from pg (nil: not on
// this machine).
func takeCPU(p, broker procSource, pg *postmaster) cpuSnapshot {
	s := cpuSnapshot{at: time.Now()}
	if p != nil {
		if c, err := p.cpu(); err == nil {
			s.worker, s.workerOK = c, true
		}
	}
	if broker != nil {
		s.hasBroker = true
		if c, err := broker.cpu(); err == nil {
			s.broker, s.brokerOK = c, true
		}
	}
	if c, err := (selfProc{}).cpu(); err == nil {
		s.self, s.selfOK = c, true
	}
	if pg != nil {
		if c, err := pg.cpu(); err == nil {
			s.pg, s.pgOK = c, true
		}
	}
	s.machineBusy, s.idle = machineJiffies()
	return s
}

// machineJiffies returns busy and idle jiffies of all CPUs.
func machineJiffies() (busy, idle uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i, x := range f[1:] {
		v, _ := strconv.ParseUint(x, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		} else if i < 8 { // user nice system irq softirq steal
			busy += v
		}
	}
	return busy, idle
}

// cpuUse is what happened between two snapshots. A CPU figure is nil, and
// left out of the JSON, when it was not measured: no such process (the
// broker without --broker-bin, PostgreSQL not found in /proc, the worker
// elsewhere), or a reading at either end failed.
type cpuUse struct {
	Seconds        float64  `json:"wall_seconds"`
	WorkerCPU      *float64 `json:"worker_cpu_seconds,omitempty"`
	BrokerCPU      *float64 `json:"broker_cpu_seconds,omitempty"` // with --broker-bin only
	LockbenchCPU   *float64 `json:"lockbench_process_cpu_seconds,omitempty"`
	PostgresCPU    *float64 `json:"postgres_cpu_seconds,omitempty"`
	MachineBusyPct float64  `json:"machine_busy_percent"`
	// brokerLost says a broker process's reading failed: BrokerCPU is
	// missing, not nothing to count.
	brokerLost bool
}

func cpuBetween(a, b cpuSnapshot) cpuUse {
	u := cpuUse{
		Seconds:      b.at.Sub(a.at).Seconds(),
		WorkerCPU:    cpuDiff(a.worker, b.worker, a.workerOK && b.workerOK),
		BrokerCPU:    cpuDiff(a.broker, b.broker, a.brokerOK && b.brokerOK),
		LockbenchCPU: cpuDiff(a.self, b.self, a.selfOK && b.selfOK),
		PostgresCPU:  cpuDiff(a.pg, b.pg, a.pgOK && b.pgOK),
		brokerLost:   (a.hasBroker || b.hasBroker) && !(a.brokerOK && b.brokerOK),
	}
	busy, idle := float64(b.machineBusy-a.machineBusy), float64(b.idle-a.idle)
	if busy+idle > 0 {
		u.MachineBusyPct = 100 * busy / (busy + idle)
	}
	return u
}

// cpuDiff is b - a in seconds, or nil unless both readings are ok.
func cpuDiff(a, b time.Duration, ok bool) *float64 {
	if !ok {
		return nil
	}
	v := (b - a).Seconds()
	return &v
}

// perThousand is v per 1,000 of n, or nil without v.
func perThousand(v *float64, n int64) *float64 {
	if v == nil || n == 0 {
		return nil
	}
	x := *v / (float64(n) / 1000)
	return &x
}

// fmtCPU formats a CPU figure with format, or "-" when it was not measured.
func fmtCPU(format string, v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf(format, *v)
}
