package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// An error the server sent (too many connections, a login refused) is an
// answer for Probe; one of the network is not, nor a connection exception
// (a pooler's for a server it cannot reach), nor a server's error beside
// another host not found, unreachable, unanswered in time or, of another
// host, refusing the connection.
func TestProbeServerSent(t *testing.T) {
	full := &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}
	require.True(t, serverSent(full, true))
	require.True(t, serverSent(fmt.Errorf("connecting: %w", &pgconn.PgError{Code: "28P01"}), true), "wrapped")
	refused := &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}
	require.False(t, serverSent(refused, true))
	require.False(t, serverSent(&pgconn.PgError{Code: "08P01", Message: "server login has been failing, try again later (server_login_retry)"}, true), "PgBouncer's, the server unreachable")
	require.False(t, serverSent(errors.Join(fmt.Errorf("host a: %w", context.DeadlineExceeded), full), false), "host a did not answer")
	require.True(t, serverSent(errors.Join(refused, full), true), "one address of the host refused the connection, the other answered")
	require.False(t, serverSent(errors.Join(refused, full), false), "host a refused the connection (a firewall's reject), host b answered")
	require.False(t, serverSent(errors.Join(&net.OpError{Op: "dial", Err: syscall.EHOSTUNREACH}, full), true), "an address unreachable")
	require.False(t, serverSent(errors.Join(&net.DNSError{Err: "no such host", Name: "a"}, full), true), "host a not found")
}
