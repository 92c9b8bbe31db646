// Package testport picks addresses for tests that listen, close the
// listener, and listen on the same address again later (a broker restarted
// where its clients look for it).
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Addr returns a 127.0.0.1 address free now, on a port below the kernel's
// ephemeral range: the kernel gives ports of that range to :0 listeners and
// to outgoing connections, so one of those, from another test running
// meanwhile, could take a port of that range while the test has it closed.
func Addr(t testing.TB) string {
	t.Helper()
	const least = 10000
	ephemeral := 32768 // Linux's default least ephemeral port
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				ephemeral = n
			}
		}
	}
	for range 100 {
		port := least
		if ephemeral > least {
			port += rand.IntN(ephemeral - least)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // taken
		}
		addr := l.Addr().String()
		if err := l.Close(); err != nil {
			t.Fatalf("closing %s: %v", addr, err)
		}
		return addr
	}
	t.Fatalf("no free port found between %d and %d", least, ephemeral)
	return ""
}
