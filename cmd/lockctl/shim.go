package main

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/omninode/lockworker/internal/childproc"
)

// shim is lockctl's end of the shim a command runs under (shim_linux.go);
// nil where the command is lockctl's own child.
type shim struct {
	report  *bufio.Reader // from the shim: the command's pid, its exit, its wait status
	reportR *os.File
	ack     *os.File            // written to let the shim reap the command
	child   []*os.File          // the shim's ends of the pipes
	passed  []*os.File          // duplicates of lockctl's caller's descriptors, passed on to the command (inherited)
	status  *syscall.WaitStatus // the command's, as the shim reported it
}

// direct sets cmd up to run as lockctl's own child: SIGKILLed as lockctl
// dies (Linux), in a process group of its own if ownGroup.
func direct(cmd *exec.Cmd, ownGroup bool) {
	childproc.DieWithParent(cmd)
	if ownGroup {
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Setpgid = true
	}
}

// notRun is the command's start failure, as the shim reported it, with the
// code notRunCode gave it there.
type notRun struct {
	msg  string
	code int
}

func (e notRun) Error() string { return e.msg }

// start starts cmd, and returns the command once it runs. Where the shim
// started but the command did not, the shim is cmd.Wait's to reap.
func (s *shim) start(cmd *exec.Cmd) (*os.Process, error) {
	err := cmd.Start()
	if s == nil || err != nil {
		s.close()
		return cmd.Process, err
	}
	for _, f := range append(s.child, s.passed...) {
		if f != nil {
			_ = f.Close()
		}
	}
	s.child, s.passed = nil, nil
	line, err := s.report.ReadString('\n')
	if pid, perr := strconv.Atoi(strings.TrimSuffix(line, "\n")); err == nil && perr == nil {
		// By a pidfd, though its pid stays the command's until the shim
		// reaps it, once released.
		return os.FindProcess(pid) // never fails on Linux
	}
	err = errors.New("lockctl's shim ended before it started the command")
	if code, ok := strings.CutPrefix(line, "fail "); ok {
		msg, _ := io.ReadAll(s.report)
		if n, perr := strconv.Atoi(strings.TrimSpace(code)); perr == nil {
			err = notRun{string(msg), n}
		}
	}
	s.close()
	return nil, err
}

// exited waits until the command p has exited, not reaped yet (its pid,
// and its process group's id, stay its own); false where it cannot.
func (s *shim) exited(p *os.Process) bool {
	if s == nil {
		return waitExited(p.Pid)
	}
	line, err := s.report.ReadString('\n')
	return err == nil && line == "exited\n"
}

// release lets the shim reap the command, once exited, and exit itself;
// the command's status, which the shim then reports, is statusOf's. The
// release is a byte: the pipe's end alone is lockctl's death, which the
// shim may see before the kernel gives it another parent.
func (s *shim) release() {
	if s == nil {
		return
	}
	_, _ = s.ack.Write([]byte{'r'})
	_ = s.ack.Close()
	line, err := s.report.ReadString('\n')
	if ws, perr := strconv.ParseUint(strings.TrimSuffix(line, "\n"), 10, 32); err == nil && perr == nil {
		st := syscall.WaitStatus(ws)
		s.status = &st
	}
	s.close()
}

// statusOf is the command's wait status: the shim's report of it, else (no
// shim, or one killed before it could report: SIGKILLed as the command
// was) state's.
func (s *shim) statusOf(state *os.ProcessState) syscall.WaitStatus {
	if s != nil && s.status != nil {
		return *s.status
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	return ws
}

// unreported says the shim ended without reporting the command's status.
func (s *shim) unreported() bool { return s != nil && s.status == nil }

func (s *shim) close() {
	if s == nil {
		return
	}
	for _, f := range append(append(s.child, s.passed...), s.reportR, s.ack) {
		if f != nil {
			_ = f.Close()
		}
	}
}
