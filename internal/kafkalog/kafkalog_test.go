package kafkalog

import (
	"bytes"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	log := zerolog.New(&buf).Level(zerolog.TraceLevel)
	c, b := Client(log), Broker(log)
	c.Log(kgo.LogLevelError, "c-error")
	c.Log(kgo.LogLevelWarn, "c-warn")
	c.Log(kgo.LogLevelInfo, "c-info", "broker", 1)
	c.Log(kgo.LogLevelDebug, "c-debug")
	b.Logf(kfake.LogLevelError, "b-%s", "error")
	b.Logf(kfake.LogLevelWarn, "b-warn")
	b.Logf(kfake.LogLevelInfo, "b-info")
	b.Logf(kfake.LogLevelDebug, "b-debug")
	want := []string{
		`{"level":"error","message":"c-error"}`,
		`{"level":"warn","message":"c-warn"}`,
		`{"level":"info","broker":1,"message":"c-info"}`,
		`{"level":"debug","message":"c-debug"}`,
		`{"level":"error","message":"b-error"}`,
		`{"level":"warn","message":"b-warn"}`,
		`{"level":"debug","message":"b-info"}`,
		`{"level":"trace","message":"b-debug"}`,
	}
	require.Equal(t, want, strings.Split(strings.TrimSpace(buf.String()), "\n"))
}

func TestClientLevelFollowsTheLog(t *testing.T) {
	for lvl, want := range map[zerolog.Level]kgo.LogLevel{
		zerolog.DebugLevel: kgo.LogLevelInfo,
		zerolog.InfoLevel:  kgo.LogLevelWarn,
		zerolog.WarnLevel:  kgo.LogLevelWarn,
		zerolog.ErrorLevel: kgo.LogLevelError,
	} {
		require.Equal(t, want, Client(zerolog.Nop().Level(lvl)).Level(), lvl.String())
	}
}
