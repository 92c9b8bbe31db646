package store

import (
	"context"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// A transaction's idle limit doubles after an attempt PostgreSQL ended for
// idling, up to maxAttemptGrowth (64) times the configured one: one that
// failed with 25P03, or lost its connection after it ran at least the
// limit (the write of its next statement failing before it read the
// 25P03). Not after a connection lost sooner, one the attempt's bound
// closed, another failure, nor under the server's setting.
func TestIdleLimitGrowth(t *testing.T) {
	idled := translate(&pgconn.PgError{Severity: "FATAL", Code: "25P03"})
	pipe := translate(fmt.Errorf("write failed: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}))
	bounded := fmt.Errorf("%w after 1s: %w", ErrAttemptTimedOut, pipe)
	conflict := translate(&pgconn.PgError{Code: "40001"})
	type try struct {
		took time.Duration
		err  error
	}
	for name, c := range map[string]struct {
		configured time.Duration
		tries      []try
		want       []time.Duration // each attempt's idle limit set (0: none)
	}{
		"25P03": {time.Second, []try{{time.Millisecond, idled}, {time.Millisecond, idled}}, []time.Duration{0, 2 * time.Second, 4 * time.Second}},
		"a broken pipe after the limit": {time.Second, []try{{time.Second, pipe}, {2 * time.Second, pipe}},
			[]time.Duration{0, 2 * time.Second, 4 * time.Second}},
		"a broken pipe before the limit": {time.Second, []try{{time.Second, pipe}, {time.Second, pipe}},
			[]time.Duration{0, 2 * time.Second, 2 * time.Second}},
		"the attempt's bound":  {time.Second, []try{{time.Minute, bounded}}, []time.Duration{0, 0}},
		"a conflict":           {time.Second, []try{{time.Minute, conflict}}, []time.Duration{0, 0}},
		"the server's setting": {-1, []try{{time.Minute, idled}, {time.Minute, pipe}}, []time.Duration{0, 0, 0}},
		"capped at 64 times": {time.Second, []try{{0, idled}, {0, idled}, {0, idled}, {0, idled}, {0, idled}, {0, idled}, {0, idled}},
			[]time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, 64 * time.Second, 64 * time.Second}},
	} {
		t.Run(name, func(t *testing.T) {
			s := &Store{cfg: Config{IdleInTransactionTimeout: c.configured, RetryBase: time.Microsecond, RetryMax: time.Microsecond}}
			var got []time.Duration
			err := s.retryBounded(context.Background(), func(a *attempt) error {
				got = append(got, a.idle)
				require.Equal(t, a.idle == 0, a.idleSQL() == "", "a statement exactly when a limit is set")
				if len(got) > len(c.tries) {
					return nil
				}
				a.took = c.tries[len(got)-1].took
				return c.tries[len(got)-1].err
			})
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}
