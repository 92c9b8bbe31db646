// Package procstat reads a process's /proc/<pid>/stat (Linux): what
// lockbench measures its processes' CPU by, the benchmarks that time a
// PostgreSQL backend, and lockctl's walk of its command's process tree.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is USER_HZ, 100 on every Linux this runs on. It divides a
// second evenly, so a tick is exactly time.Second / ClockTick.
const ClockTick = 100

// Stat is what is read of /proc/<pid>/stat.
type Stat struct {
	Comm  string
	State byte // R running, S sleeping, T stopped, ...
	PPID  int
	PGRP  int // its process group
	// Session is its session's id; TPGID the foreground process group of
	// its terminal, -1 without one.
	Session, TPGID int
	// utime+stime, and cutime+cstime: the CPU of the children it has
	// waited for.
	Own, Children time.Duration
	// Start is when it started, in clock ticks after boot: with the pid,
	// it tells the process from a later one given the same pid.
	Start uint64
}

// Read reads the stat file at path (/proc/<pid>/stat, or a copy of its
// layout in tests).
func Read(path string) (Stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Stat{}, err
	}
	// The command name may hold spaces and parentheses: it runs from the
	// first '(' to the last ')'.
	i, j := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return Stat{}, fmt.Errorf("unexpected %s", path)
	}
	// f[0] is field 3, the state; the last read is f[19], starttime.
	f := strings.Fields(string(b[j+1:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("unexpected %s", path)
	}
	var n [8]int64
	for k, x := range []int{1, 2, 3, 5, 11, 12, 13, 14} { // ppid pgrp session tpgid utime stime cutime cstime
		if n[k], err = strconv.ParseInt(f[x], 10, 64); err != nil {
			return Stat{}, fmt.Errorf("unexpected %s", path)
		}
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return Stat{}, fmt.Errorf("unexpected %s", path)
	}
	// Ticks times a tick: ticks times a second would overflow above 9.2e9
	// ticks (three years of CPU).
	tick := func(t int64) time.Duration { return time.Duration(t) * (time.Second / ClockTick) }
	return Stat{
		Comm: string(b[i+1 : j]), State: f[0][0],
		PPID: int(n[0]), PGRP: int(n[1]), Session: int(n[2]), TPGID: int(n[3]),
		Own: tick(n[4] + n[5]), Children: tick(n[6] + n[7]),
		Start: start,
	}, nil
}
