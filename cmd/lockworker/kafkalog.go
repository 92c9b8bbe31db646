package main

import (
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"
)

// kafkaLogger hands franz-go's own logs (connection, SASL and TLS failures,
// rebalances) to zerolog, so a broker that refuses us says why. franz-go logs
// a lot at info, so it gets info only when the service logs at debug.
type kafkaLogger struct{ log zerolog.Logger }

func (l kafkaLogger) Level() kgo.LogLevel {
	switch lvl := l.log.GetLevel(); {
	case lvl <= zerolog.DebugLevel:
		return kgo.LogLevelInfo
	case lvl <= zerolog.WarnLevel:
		return kgo.LogLevelWarn
	default:
		return kgo.LogLevelError
	}
}

func (l kafkaLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	var ev *zerolog.Event
	switch level {
	case kgo.LogLevelError:
		ev = l.log.Error()
	case kgo.LogLevelWarn:
		ev = l.log.Warn()
	case kgo.LogLevelInfo:
		ev = l.log.Info()
	default:
		ev = l.log.Debug()
	}
	ev.Fields(keyvals).Msg(msg)
}
