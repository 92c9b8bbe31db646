package main

import "golang.org/x/sys/unix"

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
