package main

import (
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// waitExited waits until the child pid has exited, without reaping it: its
// pid, and its process group's id, stay its own until Wait reaps it. It
// reports whether it could.
func waitExited(pid int) bool {
	for {
		err := unix.Waitid(unix.P_PID, pid, &unix.Siginfo{}, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return err == nil
		}
	}
}

// inheritsOrphans says whether orphaned processes become lockctl's
// children: as init (pid 1), or as a child subreaper.
func inheritsOrphans() bool {
	if os.Getpid() == 1 {
		return true
	}
	on := new(int32) // on the heap, which does not move while the kernel writes it
	err := unix.Prctl(unix.PR_GET_CHILD_SUBREAPER, uintptr(unsafe.Pointer(on)), 0, 0, 0)
	runtime.KeepAlive(on)
	return err == nil && *on != 0
}
