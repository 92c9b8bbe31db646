package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/omninode/lockworker/internal/childproc"
)

// The shim: run and elect start COMMAND through a re-exec of lockctl's own
// binary, so that a lockctl killed (SIGKILL, the OOM killer) leaves nothing
// of COMMAND's running beside the next holder. The shim is a child
// subreaper: what COMMAND's processes orphan (a daemon's double fork, a
// setsid'd step whose parent exited) becomes its child, not init's, so that
// all COMMAND started stays below it. When lockctl dies (the shim's
// parent-death signal, SIGTERM) the shim SIGKILLs all of it and exits.
// Otherwise it is not seen: it starts COMMAND (in a process group of its
// own, as lockctl would) with lockctl's stdin, stdout, stderr and
// environment, catches the signals that would end it (lockctl's stop, the
// terminal's and the group's reach COMMAND themselves), and reports to
// lockctl on a pipe: COMMAND's pid (or "fail CODE" and the start's error),
// "exited" once COMMAND has exited, unreaped, and COMMAND's wait status
// once lockctl has released it (a byte on another pipe: a stop has run its
// course by then), after which it reaps COMMAND and exits; that pipe's end
// without the byte is lockctl's death.
// The pipes come after the descriptors lockctl's caller passed on (a make
// jobserver's, a 3>file), which reach COMMAND as they would without it.

// shimArg, lockctl's first argument, runs the shim.
const shimArg = "lockctl-shim"

// init runs the shim in lockctl, and in the test binary that runs lockctl
// in-process: its /proc/self/exe. The command starts from the main OS
// thread, locked during init and never ended before the process: the
// command's parent-death signal comes when the shim dies, not before
// (childproc).
func init() {
	if len(os.Args) > 1 && os.Args[1] == shimArg {
		os.Exit(runShim(os.Args[2:]))
	}
}

// viaShim sets cmd up to start the command through the shim, in a process
// group of its own if ownGroup; nil where /proc/self/exe cannot be run, the
// command then lockctl's own child (direct).
func viaShim(cmd *exec.Cmd, ownGroup bool) *shim {
	if cmd.Err != nil || unix.Access("/proc/self/exe", unix.X_OK) != nil {
		direct(cmd, ownGroup)
		return nil // Start fails with cmd.Err, as without a shim
	}
	s := &shim{}
	var reportW, ackR *os.File
	var err error
	if s.reportR, reportW, err = os.Pipe(); err == nil {
		s.child = append(s.child, reportW)
		if ackR, s.ack, err = os.Pipe(); err == nil {
			s.child = append(s.child, ackR)
		}
	}
	if err != nil {
		cmd.Err = fmt.Errorf("lockctl's shim: %w", err) // Start's, a command that cannot be run
		return s
	}
	s.report = bufio.NewReader(s.reportR)
	s.passed = inherited()
	pipes := 3 + len(s.passed)
	cmd.ExtraFiles = append(s.passed, s.child...)
	cmd.Args = append([]string{os.Args[0], shimArg, strconv.Itoa(os.Getpid()), strconv.FormatBool(ownGroup), strconv.Itoa(pipes), cmd.Path},
		cmd.Args...)
	cmd.Path = "/proc/self/exe"
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	return s
}

// inherited is lockctl's descriptors from 3 on that a command it started
// would inherit (not close-on-exec: its caller's), each at its own index
// less 3, the gaps nil, as exec.Cmd's ExtraFiles places them.
func inherited() []*os.File {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil
	}
	var fds []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	var files []*os.File
	for _, fd := range fds {
		// A duplicate, which exec places at fd: an *os.File closes its
		// descriptor once collected, and the caller's stays untouched.
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			continue
		}
		files = append(files, make([]*os.File, fd-3-len(files))...)
		files = append(files, os.NewFile(uintptr(dup), "inherited"))
	}
	return files
}

// runShim is the shim: args are lockctl's pid, whether the command gets a
// process group of its own, the descriptor of the report pipe (the ack
// pipe's the next), the command's path and its argv.
func runShim(args []string) int {
	parent, pipes := -1, -1
	if len(args) >= 5 {
		parent, _ = strconv.Atoi(args[0])
		pipes, _ = strconv.Atoi(args[2])
	}
	if parent <= 0 || pipes < 3 {
		fmt.Fprintf(os.Stderr, "lockctl: %s is lockctl's own, not a command\n", shimArg)
		return exitUsage
	}
	report, ack := os.NewFile(uintptr(pipes), "report"), os.NewFile(uintptr(pipes+1), "ack")
	syscall.CloseOnExec(pipes)
	syscall.CloseOnExec(pipes + 1)
	// Caught, not ignored: the command starts with their default action.
	// A SIGHUP or SIGINT ignored at start stays so, for the command too.
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGABRT, syscall.SIGTRAP, syscall.SIGILL, syscall.SIGSYS, syscall.SIGSTKFLT}
	for _, sig := range []os.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if !signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	caught := make(chan os.Signal, 16)
	signal.Notify(caught, sigs...)
	// Without it (Linux before 3.4) orphans go to init, as without a shim.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	// Held while the command starts, and by the kill, which ends the shim.
	var mu sync.Mutex
	mu.Lock()
	go func() {
		for range caught {
			// The parent-death signal comes once the shim has another
			// parent; any signal is looked at, for signals coalesce.
			if os.Getppid() != parent {
				mu.Lock()
				killDescendants()
				os.Exit(1)
			}
		}
	}()
	if os.Getppid() != parent {
		return 1 // lockctl died before the signal was caught
	}
	cmd := &exec.Cmd{Path: args[3], Args: args[4:], Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
	// Dies with the shim, should that be SIGKILLed.
	childproc.DieWithParent(cmd)
	cmd.SysProcAttr.Setpgid = args[1] == "true"
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(report, "fail %d\n%v", notRunCode(err), err)
		return 1
	}
	fmt.Fprintf(report, "%d\n", cmd.Process.Pid)
	mu.Unlock()
	// Orphans are reaped as they exit; the command only once lockctl
	// lets go of its pid.
	for {
		pid, err := exitedChild()
		if err != nil || pid == cmd.Process.Pid {
			break
		}
		_, _ = syscall.Wait4(pid, nil, 0, nil)
	}
	fmt.Fprint(report, "exited\n")
	// lockctl's release is a byte; the pipe's end without it is its death
	// (its files close before the kernel gives the shim another parent,
	// so no getppid tells it yet): what runs below goes too, a stop's
	// grace wait being cut short by it included.
	var released [1]byte
	n, _ := ack.Read(released[:])
	mu.Lock() // not while a kill runs
	if n == 0 || os.Getppid() != parent {
		killDescendants()
		return 1
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(cmd.Process.Pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	fmt.Fprintf(report, "%d\n", uint32(ws))
	return 0
}

// exitedChild waits until a child has exited and returns its pid, leaving
// it unreaped.
func exitedChild() (int, error) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		// si_pid opens siginfo_t's union, after si_signo, si_errno and
		// si_code (three ints), aligned as a pointer: unix.Siginfo does
		// not name it.
		align := unsafe.Alignof(uintptr(0))
		off := (3*unsafe.Sizeof(int32(0)) + align - 1) &^ (align - 1)
		return int(*(*int32)(unsafe.Add(unsafe.Pointer(&info), off))), nil
	}
}

// killDescendants SIGKILLs all that runs below the shim, again as long as
// some is left (the children of one killed come to the shim, a
// subreaper), for at most killWait.
func killDescendants() {
	self := os.Getpid()
	st, ok := stat(self)
	if !ok {
		return // the command dies with the shim all the same
	}
	deadline := time.Now().Add(killWait)
	for {
		left := false
		for _, p := range below([]process{{self, st.Start}}) {
			if p.pid != self {
				p.signal(syscall.SIGKILL, 0)
				left = true
			}
		}
		if !left || !time.Now().Before(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
