package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testlog"
)

// Whatever LOG_LEVEL drops, a failed start says why on stderr: at fatal,
// panic or disabled, where the log has no error line, the reason is
// written there directly, as ParseEnv's is; at error it is the log's line.
// Either way it is said once.
func TestFailureReachesStderrAtAnyLogLevel(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	cases := []struct {
		name, reason string
		code         int
		env          map[string]string
	}{
		{"refused", "KAFKA_TLS_CA_FILE", 2, map[string]string{"KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CA_FILE": missing, "HTTP_ADDR": "127.0.0.1:0"}},
		{"failed", "listening on HTTP_ADDR " + busy.Addr().String(), 1, map[string]string{"HTTP_ADDR": busy.Addr().String()}},
	}
	for _, level := range []string{"fatal", "panic", "disabled", "error"} {
		for _, tc := range cases {
			t.Run(level+"/"+tc.name, func(t *testing.T) {
				env := map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "LOG_LEVEL": level}
				for k, v := range tc.env {
					env[k] = v
				}
				m := NewMain()
				stderr := &testlog.Buffer{}
				m.stderr = stderr
				require.NoError(t, m.ParseEnv(lookup(env)))
				require.Equal(t, tc.code, m.finish(m.Run(context.Background()), false))
				assert.Equal(t, 1, strings.Count(stderr.String(), tc.reason), "stderr: %s", stderr)
			})
		}
	}
}

// LOG_FORMAT=console writes no colour codes where the log is not a
// terminal: a file or a collector would keep them as escape bytes.
func TestConsoleLogHasNoColourOutsideATerminal(t *testing.T) {
	m := NewMain()
	stderr := &testlog.Buffer{}
	m.stderr = stderr
	require.NoError(t, m.ParseEnv(lookup(map[string]string{"LOG_FORMAT": "console", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})))
	m.Logger.Error().Str("lock", "orders").Msg("a line")
	require.Contains(t, stderr.String(), "a line")
	require.NotContains(t, stderr.String(), "\x1b[")
}
