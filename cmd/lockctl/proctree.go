package main

import (
	"os"
	"strconv"
	"syscall"

	"github.com/omninode/lockworker/internal/procstat"
)

// process is a process by pid and start time, so that a pid the kernel has
// given to another process since is not taken for it.
type process struct {
	pid   int
	start uint64
}

// stat reads /proc/PID/stat (Linux); ok is false where it cannot.
func stat(pid int) (st procstat.Stat, ok bool) {
	st, err := procstat.Read("/proc/" + strconv.Itoa(pid) + "/stat")
	return st, err == nil
}

// procEntry is a process as /proc shows it.
type procEntry struct {
	process
	ppid, pgrp int
}

// procs reads every process from /proc once (Linux): nil elsewhere, and
// where /proc is another pid namespace's, whose pids kill would take for
// others. Zombies are left out: no signal ends one, and its children have
// another parent already.
func procs() []procEntry {
	if self, err := os.Readlink("/proc/self"); err != nil || self != strconv.Itoa(os.Getpid()) {
		return nil
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var all []procEntry
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := stat(pid); ok && st.State != 'Z' {
			all = append(all, procEntry{process{pid, st.Start}, st.PPID, st.PGRP})
		}
	}
	return all
}

// below returns the processes below each of roots still alive (and those
// roots), from one reading of /proc (procs: none where it cannot be read).
func below(roots []process) []process {
	alive := map[process]bool{}
	children := map[int][]process{}
	for _, p := range procs() {
		alive[p.process] = true
		children[p.ppid] = append(children[p.ppid], p.process)
	}
	var all []process
	seen := map[process]bool{}
	for _, r := range roots {
		if alive[r] && !seen[r] {
			seen[r] = true
			all = append(all, r)
		}
	}
	for i := 0; i < len(all); i++ {
		for _, c := range children[all[i].pid] {
			if !seen[c] {
				seen[c] = true
				all = append(all, c)
			}
		}
	}
	return all
}

// groupLive returns the pids of process group pgid's members that are not
// zombies; ok is false where /proc cannot tell (procs).
func groupLive(pgid int) (live []int, ok bool) {
	all := procs()
	for _, p := range all {
		if p.pgrp == pgid {
			live = append(live, p.pid)
		}
	}
	return live, all != nil
}

// reapOrphans reaps the exited children lockctl has once its command has
// been reaped, when orphans are given to it (inheritsOrphans: a
// container's init, pid 1, or a subreaper): processes of the command's
// whose zombies would otherwise look alive to the stop's grace wait until
// it ends. No other child of lockctl is left for a wait to take by then.
func reapOrphans() {
	if !inheritsOrphans() {
		return // init or a subreaper above reaps them
	}
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}

// signal sends sig to p unless it is gone (or its pid is another's now),
// or a member of process group pgid (not 0), which a kill of the group
// reached: a second SIGTERM would run a trap again.
func (p process) signal(sig syscall.Signal, pgid int) {
	if st, ok := stat(p.pid); ok && st.Start == p.start && (pgid == 0 || st.PGRP != pgid) {
		_ = syscall.Kill(p.pid, sig)
	}
}
