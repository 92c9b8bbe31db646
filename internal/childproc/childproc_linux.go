// Package childproc holds what the processes a test or a benchmark starts
// need in common: DieWithParent.
package childproc

import (
	"os/exec"
	"syscall"
)

// DieWithParent has the kernel SIGKILL cmd's process when its parent goes,
// so that a go test that panics on its timeout (skipping the cleanups), or a
// killed lockbench, leaves none of the lockworker and devkafka processes it
// started running. Call it before cmd.Start; it sets cmd.SysProcAttr.
//
// The signal comes when the OS thread that started the process exits, not
// the process (go.dev/issue/27505). The Go runtime ends a thread only when a
// goroutine locked to it (runtime.LockOSThread) returns without unlocking;
// no caller starts processes from such a goroutine, so that thread lasts as
// long as the parent. Do not call cmd.Start from a locked goroutine.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
