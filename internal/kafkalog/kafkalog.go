// Package kafkalog hands the logs of franz-go's client (kgo) and of its
// broker (kfake) to zerolog, so a broker that refuses us says why in the
// service's own log.
package kafkalog

import (
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Both libraries number their levels alike: none, error, warn, info, debug.
const (
	levelError = 1
	levelWarn  = 2
	levelInfo  = 3
)

// event opens an event of log at a franz-go level. quiet moves info and
// debug one level lower, for a library that is chatty at info.
func event(log zerolog.Logger, level int8, quiet bool) *zerolog.Event {
	switch {
	case level == levelError:
		return log.Error()
	case level == levelWarn:
		return log.Warn()
	case level == levelInfo && !quiet:
		return log.Info()
	case level == levelInfo || !quiet:
		return log.Debug()
	default:
		return log.Trace()
	}
}

// Client is a kgo.Logger. franz-go logs a lot at info (every connection
// and rebalance step), so it gets info only when log is at debug.
func Client(log zerolog.Logger) kgo.Logger { return clientLogger{log} }

type clientLogger struct{ log zerolog.Logger }

func (l clientLogger) Level() kgo.LogLevel {
	switch lvl := l.log.GetLevel(); {
	case lvl <= zerolog.DebugLevel:
		return kgo.LogLevelInfo
	case lvl <= zerolog.WarnLevel:
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (l clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	event(l.log, int8(level), false).Fields(keyvals).Msg(msg)
}

// Broker is a kfake.Logger; kfake logs group membership changes at info, so
// its info and debug come one level lower.
func Broker(log zerolog.Logger) kfake.Logger { return brokerLogger{log} }

type brokerLogger struct{ log zerolog.Logger }

func (l brokerLogger) Logf(level kfake.LogLevel, format string, args ...any) {
	event(l.log, int8(level), true).Msgf(format, args...)
}
