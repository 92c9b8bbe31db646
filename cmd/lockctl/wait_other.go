//go:build !linux

package main

// waitExited cannot wait for a child's exit without reaping it here
// (waitid's WNOWAIT is Linux's).
func waitExited(int) bool { return false }
