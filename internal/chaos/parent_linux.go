package chaos

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel SIGKILL cmd's process when its parent goes,
// so that a go test that panics on its timeout (skipping the cleanups), or a
// killed lockbench, leaves none of the lockworker and devkafka processes
// this package started (Replica, Broker) running. Processes started
// otherwise are not covered: lockbench's target.go starts its lockworker
// itself.
//
// The signal comes when the OS thread that started the process exits, not
// the process (go.dev/issue/27505). The Go runtime ends a thread only when a
// goroutine locked to it (runtime.LockOSThread) returns without unlocking;
// no caller of this package starts processes from such a goroutine, so that
// thread lasts as long as the parent.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
