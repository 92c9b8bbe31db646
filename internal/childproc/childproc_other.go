//go:build !linux

package childproc

import "os/exec"

// DieWithParent does nothing: only Linux has the parent-death signal it
// relies on, so elsewhere a parent that dies without its cleanups leaves
// its processes running.
func DieWithParent(*exec.Cmd) {}
