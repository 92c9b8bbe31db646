//go:build !linux

package main

import "os/exec"

// viaShim sets cmd up to run as lockctl's own child (direct): the shim
// (shim_linux.go) relies on Linux's child subreaper.
func viaShim(cmd *exec.Cmd, ownGroup bool) *shim {
	direct(cmd, ownGroup)
	return nil
}
