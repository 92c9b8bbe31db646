package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// listenOnly serves the HTTP endpoints (httpapi.Starting's) as Run does
// first, without the rest of the service.
func listenOnly(t *testing.T) *Main {
	t.Helper()
	m := NewMain()
	m.Logger = zerolog.Nop()
	m.Config.HTTPAddr = "127.0.0.1:0"
	require.NoError(t, m.listenHTTP())
	t.Cleanup(m.Close)
	return m
}

// rawGet sends a GET of path with headers on conn and returns the status, or
// an error when no answer comes within wait.
func rawGet(conn net.Conn, path string, header http.Header, wait time.Duration) (int, error) {
	req, err := http.NewRequest(http.MethodGet, "http://lockworker"+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header = header
	if err := req.Write(conn); err != nil {
		return 0, err
	}
	if err := conn.SetReadDeadline(time.Now().Add(wait)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// A request's headers are bounded well below Go's 1 MB default, with room
// for the longest INSPECT_TOKEN.
func TestHTTPHeaderLimit(t *testing.T) {
	m := listenOnly(t)
	send := func(header http.Header) int {
		t.Helper()
		conn, err := net.Dial("tcp", m.HTTPAddr)
		require.NoError(t, err)
		defer conn.Close()
		code, err := rawGet(conn, "/health/live", header, 5*time.Second)
		require.NoError(t, err)
		return code
	}
	require.Equal(t, http.StatusOK, send(http.Header{"Authorization": {"Bearer " + strings.Repeat("t", 4096)}}))
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, send(http.Header{"X-Padding": {strings.Repeat("p", 64<<10)}}))
}
