package tcpproxy

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// echo serves lines back until the test ends.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// closed checks that err says the connection was closed, not that the
// deadline passed: a proxy that hung instead would fail that way too.
func closed(t *testing.T, err error, msg string) {
	t.Helper()
	require.Error(t, err, msg)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "%s: %v", msg, err)
}

func roundTrip(c net.Conn, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestCutHangRestore(t *testing.T) {
	p := Start(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)

	p.Hang()
	_, err = roundTrip(c, 200*time.Millisecond)
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "a hung proxy answers nothing, got %v", err)
	p.Restore()
	// The held "ping" and the next one both arrive now.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	_, err = c.Write([]byte("ping\n"))
	require.NoError(t, err)
	for range 2 {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		require.Equal(t, "ping\n", line)
	}

	p.Cut()
	_, err = r.ReadString('\n')
	closed(t, err, "a cut connection is closed")
	c2, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err) // accepted, then closed at once
	_, err = roundTrip(c2, 5*time.Second)
	closed(t, err, "a connection while cut is closed")
	c2.Close()

	p.Restore()
	c3, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c3.Close()
	got, err = roundTrip(c3, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)
}

// A proxy made by Listen forwards until Close, which closes every
// connection, a hung one too, and refuses new ones; a second Close is
// harmless.
func TestListenClose(t *testing.T) {
	p, err := Listen(echo(t))
	require.NoError(t, err)
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	defer c.Close()
	got, err := roundTrip(c, 5*time.Second)
	require.NoError(t, err)
	require.Equal(t, "ping\n", got)

	p.Hang()
	p.Close()
	_, err = roundTrip(c, 5*time.Second)
	closed(t, err, "a hung connection is closed by Close")
	_, err = net.Dial("tcp", p.Addr())
	require.Error(t, err, "no longer listening")
	p.Close()
}

// A hung link passes no close either: a client that gives up and closes
// its side leaves the server's connection open (its session holding what
// it holds) until the link is restored, as a network dropping every packet
// would; restored, the close goes through.
func TestHangHoldsAClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	p := Start(t, ln.Addr().String())
	c, err := net.Dial("tcp", p.Addr())
	require.NoError(t, err)
	server := <-accepted
	defer server.Close()

	p.Hang()
	require.NoError(t, c.Close())
	_ = server.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = server.Read(make([]byte, 1))
	var ne net.Error
	require.True(t, errors.As(err, &ne) && ne.Timeout(), "the server saw the client's close through a hung link: %v", err)

	p.Restore()
	_ = server.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = server.Read(make([]byte, 1))
	closed(t, err, "restored, the close goes through")
}
