package store_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
)

// startupRewriter returns sch reached through a proxy that rewrites each
// connection's startup as a proxy in front of PostgreSQL may: the startup
// parameters named in drop are not passed on (as pgbouncer drops those of
// its ignore_startup_parameters), and a version other than "" is reported
// as the server's server_version (as a proxy reporting its own does). It
// refuses TLS, so the URL's sslmode must do without.
func startupRewriter(t *testing.T, sch testdb.Schema, drop []string, version string) testdb.Schema {
	t.Helper()
	target, err := connstr.Server(sch.URL)
	require.NoError(t, err)
	addr := serve(t, func(c net.Conn) {
		up, err := passStartup(c, target, drop)
		if err != nil {
			return
		}
		go func() {
			_, _ = io.Copy(up, c)
			_ = up.Close() // the client gone (or c closed with the test): the server's side too
		}()
		fromServer := bufio.NewReader(up)
		if passStartupAnswer(c, fromServer, version) == nil {
			_, _ = io.Copy(c, fromServer)
		}
	})
	sch.URL, err = connstr.Redirect(sch.URL, addr)
	require.NoError(t, err)
	return sch
}

// passStartup reads the client's startup message from c, refusing its
// requests for TLS or GSS encryption, and sends it to a new connection to
// target without the parameters named in drop.
func passStartup(c net.Conn, target string, drop []string) (net.Conn, error) {
	const sslRequest, gssEncRequest = 80877103, 80877104
	for {
		body, err := readBody(c)
		if err != nil {
			return nil, err
		}
		if len(body) < 4 {
			return nil, errors.New("short startup message")
		}
		if code := binary.BigEndian.Uint32(body); code == sslRequest || code == gssEncRequest {
			if _, err := c.Write([]byte("N")); err != nil {
				return nil, err
			}
			continue
		}
		var msg pgproto3.StartupMessage
		if err := msg.Decode(body); err != nil {
			return nil, err
		}
		for name := range msg.Parameters {
			if slices.Contains(drop, name) {
				delete(msg.Parameters, name)
			}
		}
		out, err := msg.Encode(nil)
		if err != nil {
			return nil, err
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			return nil, err
		}
		if _, err := up.Write(out); err != nil {
			_ = up.Close()
			return nil, err
		}
		return up, nil
	}
}

// passStartupAnswer passes the server's messages on to c up to the end of
// the startup (ReadyForQuery, or an error), its server_version reported as
// version unless that is "".
func passStartupAnswer(c net.Conn, fromServer io.Reader, version string) error {
	for {
		var typ [1]byte
		if _, err := io.ReadFull(fromServer, typ[:]); err != nil {
			return err
		}
		body, err := readBody(fromServer)
		if err != nil {
			return err
		}
		out := append(binary.BigEndian.AppendUint32(typ[:], uint32(len(body)+4)), body...)
		if typ[0] == 'S' && version != "" {
			var status pgproto3.ParameterStatus
			if err := status.Decode(body); err != nil {
				return err
			}
			if status.Name == "server_version" {
				status.Value = version
				if out, err = status.Encode(nil); err != nil {
					return err
				}
			}
		}
		if _, err := c.Write(out); err != nil {
			return err
		}
		if typ[0] == 'Z' || typ[0] == 'E' {
			return nil
		}
	}
}

// readBody reads a message's length and then the rest of it.
func readBody(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	length := binary.BigEndian.Uint32(n[:])
	if length < 4 || length > 1<<20 {
		return nil, errors.New("bad message length")
	}
	body := make([]byte, length-4)
	_, err := io.ReadFull(r, body)
	return body, err
}
