//go:build !linux

package chaos

import "os/exec"

// dieWithParent does nothing: only Linux has the parent-death signal this
// package relies on, so elsewhere a parent that dies without its cleanups
// leaves its processes running.
func dieWithParent(*exec.Cmd) {}
