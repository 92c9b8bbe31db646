package testdb

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// A failure to reach PostgreSQL that every later test would meet is
// remembered (no answer in time, a refused password): the next test fails
// at once with the same message, trying nothing; a refused connection or a
// busy server's refusal, which a restart ends, is not.
func TestReachRemembersTheFirstFailure(t *testing.T) {
	refused := errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	tooMany := &pgconn.PgError{Code: "53300", Message: "sorry, too many clients already"}
	for _, tc := range []struct {
		name     string
		err      error
		remember bool
	}{
		{"no answer in time", fmt.Errorf("dial tcp 10.0.0.1:5432: %w", context.DeadlineExceeded), true},
		{"connection refused", refused, false},
		{"password refused", &pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, true},
		{"too many clients", tooMany, false},
		{"starting up", &pgconn.PgError{Code: "57P03", Message: "the database system is starting up"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			r := &reacher{connect: func(context.Context, string) (*pgx.Conn, error) {
				tries++
				return nil, tc.err
			}}
			url := "postgres://u@db.example:5432/d"
			first := fatalOf(t, func(tb testing.TB) { r.reach(tb, context.Background(), url) })
			require.Contains(t, first, "TEST_DATABASE_URL=", "says how to provide PostgreSQL")
			require.Contains(t, first, tc.err.Error())
			require.Equal(t, 1, tries)

			second := fatalOf(t, func(tb testing.TB) { r.reach(tb, context.Background(), url) })
			if tc.remember {
				require.Equal(t, 1, tries, "not tried again")
				require.Contains(t, second, first, "the same message")
				require.Contains(t, second, "an earlier test")
			} else {
				require.Equal(t, 2, tries, "tried again")
				require.Equal(t, first, second)
			}
		})
	}
}

// The real server, reached, is not remembered as failed.
func TestRequire(t *testing.T) {
	Require(t)
	server.mu.Lock()
	defer server.mu.Unlock()
	require.Empty(t, server.failed)
}

// SkipMissing skips unless LOCKWORKER_TEST_REQUIRE_ALL=1, which makes the
// skip a failure with the same reason.
func TestSkipMissing(t *testing.T) {
	for _, tc := range []struct {
		env, want string // want: "skip", "fail" or "bad value"
	}{
		{"", "skip"}, {"0", "skip"}, {"false", "skip"},
		{"1", "fail"}, {"true", "fail"},
		{"yes please", "bad value"},
	} {
		t.Run(fmt.Sprintf("%q", tc.env), func(t *testing.T) {
			t.Setenv(RequireAllEnv, tc.env)
			r := &skipRecorder{TB: t}
			done := make(chan struct{})
			go func() { defer close(done); SkipMissing(r, "no %s here", "frobnicator") }()
			<-done
			switch tc.want {
			case "skip":
				require.Equal(t, "no frobnicator here", r.skipped)
				require.Empty(t, r.failed)
			case "fail":
				require.Empty(t, r.skipped)
				require.Contains(t, r.failed, "no frobnicator here")
				require.Contains(t, r.failed, RequireAllEnv+"=1")
			case "bad value":
				require.Empty(t, r.skipped)
				require.Contains(t, r.failed, "no frobnicator here")
				require.Contains(t, r.failed, "want 1")
			}
		})
	}
}

// skipRecorder records a Skip or a Fatalf and ends the goroutine, as the
// test's would end the test.
type skipRecorder struct {
	testing.TB
	skipped, failed string
}

func (s *skipRecorder) Skip(args ...any) {
	s.skipped = fmt.Sprint(args...)
	runtime.Goexit()
}

func (s *skipRecorder) Fatalf(format string, args ...any) {
	s.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
