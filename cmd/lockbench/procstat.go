package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
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

func (p pidProc) cpu() (time.Duration, error) { return statCPU(fmt.Sprintf("/proc/%d/stat", p.pid)) }

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

// clockTick is USER_HZ, 100 on every Linux lockbench runs on.
const clockTick = 100

// statCPU reads utime+stime of /proc/<pid>/stat.
func statCPU(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected %s", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected %s", path)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected %s", path)
	}
	return time.Duration(ut+st) * time.Second / clockTick, nil
}

// postgresCPU sums utime+stime of every process named postgres on this
// machine (all its backends, including other users' of the same server).
// Backends that ended meanwhile are not counted, so take it around a load
// whose connections live through it.
func postgresCPU() (time.Duration, int) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var total time.Duration
	n := 0
	for _, d := range dirs {
		comm, err := os.ReadFile(d + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		if c, err := statCPU(d + "/stat"); err == nil {
			total += c
			n++
		}
	}
	return total, n
}

// cpuSnapshot reads the CPU of the worker, of a broker process, of
// lockbench and of PostgreSQL.
type cpuSnapshot struct {
	at                       time.Time
	worker, broker, self, pg time.Duration
	workerOK, selfOK         bool
	machineBusy, idle        uint64 // /proc/stat jiffies
}

// takeCPU reads the worker's CPU from p and a broker process's from broker
// (nil: none, or not measured apart).
func takeCPU(p, broker procSource) cpuSnapshot {
	s := cpuSnapshot{at: time.Now()}
	if p != nil {
		if c, err := p.cpu(); err == nil {
			s.worker, s.workerOK = c, true
		}
	}
	if broker != nil {
		s.broker, _ = broker.cpu()
	}
	if c, err := (selfProc{}).cpu(); err == nil {
		s.self, s.selfOK = c, true
	}
	s.pg, _ = postgresCPU()
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

// cpuUse is what happened between two snapshots.
type cpuUse struct {
	Seconds        float64 `json:"wall_seconds"`
	WorkerCPU      float64 `json:"worker_cpu_seconds"`
	BrokerCPU      float64 `json:"broker_cpu_seconds,omitempty"` // with --broker-bin only
	LockbenchCPU   float64 `json:"lockbench_process_cpu_seconds"`
	PostgresCPU    float64 `json:"postgres_cpu_seconds"`
	MachineBusyPct float64 `json:"machine_busy_percent"`
}

func cpuBetween(a, b cpuSnapshot) cpuUse {
	u := cpuUse{
		Seconds:      b.at.Sub(a.at).Seconds(),
		WorkerCPU:    (b.worker - a.worker).Seconds(),
		BrokerCPU:    (b.broker - a.broker).Seconds(),
		LockbenchCPU: (b.self - a.self).Seconds(),
		PostgresCPU:  (b.pg - a.pg).Seconds(),
	}
	busy, idle := float64(b.machineBusy-a.machineBusy), float64(b.idle-a.idle)
	if busy+idle > 0 {
		u.MachineBusyPct = 100 * busy / (busy + idle)
	}
	return u
}
