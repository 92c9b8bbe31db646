package main

import (
	"errors"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// terminal is lockctl's controlling terminal, when its stdin is that
// terminal: run and elect then hand the terminal to their command's process
// group for the command's run, as a shell hands it to a job, and take it back
// after.
type terminal struct {
	fd   int // stdin's
	pgrp int // lockctl's process group
}

// controllingTerminal returns f as lockctl's controlling terminal, or nil
// when f is not one (a file, a pipe, a terminal of another session, or none
// at all).
func controllingTerminal(f *os.File) *terminal {
	fd := int(f.Fd())
	if _, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP); err != nil {
		return nil
	}
	return &terminal{fd: fd, pgrp: unix.Getpgrp()}
}

// foreground is the terminal's foreground process group (-1 if unknown).
func (t *terminal) foreground() int {
	pgrp, err := unix.IoctlGetInt(t.fd, unix.TIOCGPGRP)
	if err != nil {
		return -1
	}
	return pgrp
}

// hasForeground reports whether lockctl's process group is the foreground:
// only then is the terminal lockctl's to hand on.
func (t *terminal) hasForeground() bool { return t.foreground() == t.pgrp }

// give makes pgrp the terminal's foreground process group. The kernel sends
// SIGTTOU to a background process that tries, which would stop lockctl: it
// is ignored meanwhile, as shells do.
func (t *terminal) give(pgrp int) error {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	return unix.IoctlSetPointerInt(t.fd, unix.TIOCSPGRP, pgrp)
}

// takeBack returns the foreground to lockctl's process group if the group
// pgrp (the command's) has it.
func (t *terminal) takeBack(pgrp int) {
	if t.foreground() == pgrp {
		_ = t.give(t.pgrp)
	}
}

// cldStopped is waitid's si_code for a child stopped by a signal
// (CLD_STOPPED).
const cldStopped = 5

// followStops makes the command (process pid, leader of its own group) and
// lockctl one job for the shell, until the command exits: when the command
// is stopped (Ctrl-Z reaches it, as the foreground group; or it read the
// terminal from the background), lockctl takes the terminal back and stops
// too, so the shell sees its job stopped and gets the terminal; when the
// shell continues lockctl (fg, bg), lockctl hands the terminal back (after
// fg) and continues the command. Without it the stopped command would keep
// the terminal while the shell waited for lockctl, still running.
//
// While lockctl is stopped it renews no lease: a stop longer than the
// lease loses it, and the command is stopped when it is continued.
func (t *terminal) followStops(pid int) {
	for {
		var info unix.Siginfo
		// WNOWAIT: exec's Wait reaps the command; this only looks.
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WSTOPPED|unix.WNOWAIT, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || info.Code != cldStopped {
			return // exited (or already reaped)
		}
		// Consume the stop, so that the next look waits for a new one.
		_ = unix.Waitid(unix.P_PID, pid, &info, unix.WSTOPPED|unix.WNOHANG, nil)
		t.takeBack(pid)
		stopSelf()
		// Continued: by fg (lockctl has the terminal again), or by bg.
		if t.hasForeground() {
			_ = t.give(pid)
		}
		_ = syscall.Kill(-pid, syscall.SIGCONT)
	}
}

// stopSelf stops lockctl with SIGTSTP and returns once it is continued. The
// signal goes to the calling thread, so that it takes effect before the
// call returns. (In an orphaned process group, where nobody could continue
// lockctl, the kernel discards it and stopSelf returns at once.)
func stopSelf() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), unix.SIGTSTP)
}
