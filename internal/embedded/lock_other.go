//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package embedded

// lockDir is a no-op where flock is unavailable: sharing a data dir between
// two brokers is then the user's mistake to avoid.
func lockDir(string) (func(), error) { return func() {}, nil }
