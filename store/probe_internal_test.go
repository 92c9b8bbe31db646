package store

import (
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// An error the server sent (too many connections, a login refused) is an
// answer for Probe; one of the network is not.
func TestProbeAnswered(t *testing.T) {
	require.NoError(t, answered(&pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}))
	require.NoError(t, answered(fmt.Errorf("connecting: %w", &pgconn.PgError{Code: "28P01"})), "wrapped")
	require.Error(t, answered(&net.OpError{Op: "dial", Err: errors.New("connection refused")}))
}
