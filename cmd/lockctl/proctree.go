package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
)

// process is a process by pid and start time, so that a pid the kernel has
// given to another process since is not taken for it.
type process struct {
	pid   int
	start string
}

// procStat reads a process's parent and start time from /proc/PID/stat
// (Linux); ok is false where it cannot.
func procStat(pid int) (ppid int, start string, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", false
	}
	// The command name, in parentheses, may hold anything: the fields
	// follow its last ")", from the state (field 3) on.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, "", false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[19], err == nil
}

// descendants returns root and every process below it now, from /proc
// (Linux; root alone elsewhere, or once root is gone).
func descendants(root process) []process {
	if _, start, ok := procStat(root.pid); !ok || start != root.start {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []process{root}
	}
	children := map[int][]process{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, start, ok := procStat(pid); ok {
			children[ppid] = append(children[ppid], process{pid, start})
		}
	}
	all := []process{root}
	for i := 0; i < len(all); i++ {
		all = append(all, children[all[i].pid]...)
	}
	return all
}

// signal sends sig to p unless it is gone (or its pid is another's now).
func (p process) signal(sig syscall.Signal) {
	if _, start, ok := procStat(p.pid); ok && start == p.start {
		_ = syscall.Kill(p.pid, sig)
	}
}
