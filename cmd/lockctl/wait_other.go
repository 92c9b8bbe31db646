//go:build !linux

package main

import "os"

// waitExited cannot wait for a child's exit without reaping it here
// (waitid's WNOWAIT is Linux's).
func waitExited(int) bool { return false }

// inheritsOrphans says whether orphaned processes become lockctl's
// children: as init (pid 1).
func inheritsOrphans() bool { return os.Getpid() == 1 }
