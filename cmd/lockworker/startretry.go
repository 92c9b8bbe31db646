package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// onStartRetry is told of each retry of the start's step after a
// transient error of what ("database", "Kafka"): a warn line on log with
// the error, the attempt, the wait and the step. PostgreSQL's start
// (store.Config.OnStartRetry) and Kafka's (store.RetryWith) share it.
func (m *Main) onStartRetry(log zerolog.Logger, what string) func(attempt int, err error, delay time.Duration) {
	return func(attempt int, err error, delay time.Duration) {
		log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", delay).Str("step", *m.step.Load()).
			Msg("transient " + what + " error while starting; retrying")
	}
}

// warnIfSilent logs at warn, once, if the start's attempt at what it
// calls before it returns stop has not ended within m.KafkaSilentWarn:
// the attempt goes on, and its outcome is logged as usual.
func (m *Main) warnIfSilent(log zerolog.Logger, what string) (stop func()) {
	t := time.AfterFunc(m.KafkaSilentWarn, func() {
		log.Warn().Dur("waited", m.KafkaSilentWarn).Str("step", *m.step.Load()).
			Msg("no answer from " + what + " yet while starting: the topic check, its first requests, has waited this long (a broker that accepts connections and does not answer, an address whose connections time out, or a slow cluster); still waiting: the attempt ends when the Kafka client gives up, about 40 s, and is retried")
	})
	return func() { t.Stop() }
}

// kafkaUnreachable reports whether err, of the start's first Kafka
// request, says only that no broker answered yet, which a wait may cure,
// as PostgreSQL's start has it: a connection refused, reset or timed out,
// a host name that does not resolve (a Kubernetes Service not created
// yet, but a misspelt host too), or an error code Kafka calls retriable
// (no controller yet, a broker not available). kgo gives up on a refused
// dial after its second try. Not what no wait cures: SASL authentication
// or an authorization refused (error codes that are not retriable), a
// broker certificate that does not verify, a TLS alert from the broker, a
// broker not speaking TLS, and a connection a broker accepts and then
// closes, which kgo retried for its own retry timeout already (one side
// alone expecting TLS or SASL, a wrong SASL password on some brokers).
func kafkaUnreachable(err error) bool {
	if _, closed := errors.AsType[*kgo.ErrFirstReadEOF](err); closed || tlsRefused(err) {
		return false
	}
	if ke, ok := errors.AsType[*kerr.Error](err); ok {
		return ke.Retriable
	}
	_, network := errors.AsType[net.Error](err)
	return network
}

// tlsRefused reports whether err says TLS failed for a reason no wait
// cures: the broker's certificate, its alert, or no TLS on its side.
func tlsRefused(err error) bool {
	if op, ok := errors.AsType[*net.OpError](err); ok && op.Op == "remote error" {
		return true // an alert the broker sent: a client certificate it refuses, no common version
	}
	_, verify := errors.AsType[*tls.CertificateVerificationError](err)
	_, authority := errors.AsType[x509.UnknownAuthorityError](err)
	_, host := errors.AsType[x509.HostnameError](err)
	_, invalid := errors.AsType[x509.CertificateInvalidError](err)
	_, alert := errors.AsType[tls.AlertError](err)
	_, header := errors.AsType[tls.RecordHeaderError](err)
	return verify || authority || host || invalid || alert || header
}
