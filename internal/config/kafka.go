package config

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/omninode/lockworker/internal/kafkaretry"
)

// KafkaOpts returns the connection options every lockworker Kafka client
// shares: seed brokers, kafkaretry's (a broker that is back reached within
// about a second, records produced during its outage sent then), TLS and
// SASL. Callers add their own (consumer group, producer settings).
//
// With no KAFKA_BOOTSTRAP_SERVERS the seed is Embedded.Addr. If the embedded
// broker was started on another address (port 0 in tests), set
// Kafka.BootstrapServers to its Addr() before calling.
//
// It reads the TLS files, so it can fail where FromEnv (which reads only
// the secrets' _FILE files) did not. Under KAFKA_TLS_ENABLED its dialer is
// kgo.Dialer's: a caller's own kgo.Dialer would replace it (and dial in
// plain text), and
// kgo.DialTimeout does not apply (10 s, kgo's default).
func (c Config) KafkaOpts() ([]kgo.Opt, error) {
	seeds := c.Kafka.BootstrapServers
	if len(seeds) == 0 {
		seeds = []string{c.Embedded.Addr}
	}
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...), kafkaretry.RetryOpt()}
	if c.Kafka.TLS.Enabled {
		dial, err := c.Kafka.TLS.dialer()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.Dialer(dial))
	}
	if c.Kafka.SASL.Mechanism != "" {
		m, err := c.Kafka.SASL.mechanism()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.SASL(m))
	}
	return opts, nil
}

// GroupOpts are the consumer-group options of KAFKA_SESSION_TIMEOUT,
// KAFKA_HEARTBEAT_INTERVAL and KAFKA_GROUP_PROTOCOL, to append to a group
// consumer's options (after its own balancer). group.instance.id is not among
// them: the worker sets it, because leaving on a clean stop needs it.
//
// With the consumer protocol the session timeout and heartbeat are the
// group's (see GroupConfigs); kgo ignores its own then. The sticky balancer
// selects the broker's "uniform" assignor, and is what the client falls back
// to (eagerly) if the broker turns out not to speak KIP-848.
func (c Config) GroupOpts() []kgo.Opt {
	k := c.Kafka
	opts := []kgo.Opt{kgo.SessionTimeout(k.SessionTimeout), kgo.HeartbeatInterval(k.HeartbeatInterval)}
	if k.GroupProtocol == GroupProtocolConsumer {
		opts = append(opts, kgo.Balancers(kgo.StickyBalancer()), kgo.ServerSideBalancer())
	}
	return opts
}

// GroupConfigs are the per-group broker configs that carry
// KAFKA_SESSION_TIMEOUT and KAFKA_HEARTBEAT_INTERVAL under the consumer
// (KIP-848) protocol, in milliseconds as Kafka wants them.
func (c Config) GroupConfigs() map[string]string {
	return map[string]string{
		"consumer.session.timeout.ms":    strconv.FormatInt(c.Kafka.SessionTimeout.Milliseconds(), 10),
		"consumer.heartbeat.interval.ms": strconv.FormatInt(c.Kafka.HeartbeatInterval.Milliseconds(), 10),
	}
}

// CompressionOpt is the producer option of KAFKA_COMPRESSION, for the
// relay's producer (the worker's only one). Its Config must be valid
// (FromEnv's, or one Validate passed).
func (c Config) CompressionOpt() kgo.Opt {
	return kgo.ProducerBatchCompression(compressionCodecs[c.Kafka.Compression])
}

// compressionCodecs are KAFKA_COMPRESSION's values and their codecs.
var compressionCodecs = map[string]kgo.CompressionCodec{
	"snappy": kgo.SnappyCompression(),
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"lz4":    kgo.Lz4Compression(),
}

// dialer returns the TLS dialer of KAFKA_TLS_*. The files are read now, so
// that a missing or bad one fails the start, and again at each new
// connection, so that certificates renewed in place are used without a
// restart (tlsFiles).
func (t TLSConfig) dialer() (func(ctx context.Context, network, host string) (net.Conn, error), error) {
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Only when asked for, and FromEnv refuses it without TLS enabled.
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec
	}
	var ca *tlsFiles[*x509.CertPool]
	if t.CAFile != "" {
		ca = &tlsFiles[*x509.CertPool]{what: "KAFKA_TLS_CA_FILE", paths: []string{t.CAFile}, load: loadCA}
		if _, err := ca.get(); err != nil {
			return nil, err
		}
	}
	if t.CertFile != "" || t.KeyFile != "" {
		// A Config built in code skips FromEnv's refusal of a key pasted
		// in place of its path, which the errors below would quote.
		if _, err := secretPath("KAFKA_TLS_KEY_FILE", t.KeyFile); err != nil {
			return nil, err
		}
		pair := &tlsFiles[*tls.Certificate]{what: "KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE", paths: []string{t.CertFile, t.KeyFile}, load: loadKeyPair}
		if _, err := pair.get(); err != nil {
			return nil, err
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return pair.get()
		}
	}
	return dialTLS(tc, ca), nil
}

func (s SASLConfig) mechanism() (sasl.Mechanism, error) {
	if s.Username == "" || s.Password == "" {
		return nil, fmt.Errorf("KAFKA_SASL_MECHANISM: %s needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD", s.Mechanism)
	}
	switch strings.ToUpper(s.Mechanism) {
	case "PLAIN":
		return plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("KAFKA_SASL_MECHANISM: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.Mechanism)
}
