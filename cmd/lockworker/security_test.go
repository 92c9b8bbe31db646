package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// securityPKI is a throwaway CA and a server certificate it signed for
// 127.0.0.1, as a real cluster's brokers would present.
type securityPKI struct {
	caFile string // the CA certificate, PEM, for KAFKA_TLS_CA_FILE
	roots  *x509.CertPool
	server *tls.Config // for kfake's listener
}

func newSecurityPKI(t *testing.T) securityPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lockworker security test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(2 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kafka broker"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	require.NoError(t, err)

	caFile := filepath.Join(t.TempDir(), "kafka-ca.pem")
	require.NoError(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return securityPKI{
		caFile: caFile,
		roots:  roots,
		server: &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER, caDER}, PrivateKey: srvKey}},
			MinVersion:   tls.VersionTLS12,
		},
	}
}

func randomSecret(t *testing.T, prefix string) string {
	b := make([]byte, 12)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return prefix + hex.EncodeToString(b)
}

func saslMechanism(t *testing.T, mech, user, pass string) sasl.Mechanism {
	switch mech {
	case "PLAIN":
		return plain.Auth{User: user, Pass: pass}.AsMechanism()
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	t.Fatalf("unknown mechanism %s", mech)
	return nil
}

// securedService is a lockworker started from environment variables, as
// main() starts it, with its log captured.
type securedService struct {
	m      *Main
	logs   *testlog.Buffer
	cancel context.CancelFunc
	done   chan error

	finished bool  // Run returned
	err      error // what it returned
}

// result waits up to timeout for Run to return.
func (s *securedService) result(timeout time.Duration) (error, bool) {
	if s.finished {
		return s.err, true
	}
	select {
	case err := <-s.done:
		s.finished, s.err = true, err
		return err, true
	case <-time.After(timeout):
		return nil, false
	}
}

// ready waits for Ready; it reports false (and Run's error) if Run returned
// first, and fails the test on timeout.
func (s *securedService) ready(t *testing.T, timeout time.Duration) (bool, error) {
	t.Helper()
	select {
	case <-s.m.Ready:
		return true, nil
	case err := <-s.done:
		s.finished, s.err = true, err
		return false, err
	case <-time.After(timeout):
		return false, nil
	}
}

func startSecured(t *testing.T, env map[string]string) *securedService {
	t.Helper()
	m := NewMain()
	require.NoError(t, m.ParseEnv(lookup(env)))
	s := &securedService{m: m, logs: &testlog.Buffer{}, done: make(chan error, 1)}
	// ParseEnv set a stderr logger with the configured level; keep the level
	// (debug) and the instance field, write to the buffer.
	m.Logger = zerolog.New(s.logs).Level(m.Config.LogLevel).With().Timestamp().Str("instance", m.Config.InstanceID).Logger()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if _, ok := s.result(60 * time.Second); !ok {
			t.Errorf("lockworker did not stop within 60 s of cancellation")
		}
		m.Close()
	})
	return s
}

func securityEnv(brokers, caFile, mech, user, pass, dbURL, instance string) map[string]string {
	return map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": brokers,
		"KAFKA_TLS_ENABLED":       "true",
		"KAFKA_TLS_CA_FILE":       caFile,
		"KAFKA_SASL_MECHANISM":    mech,
		"KAFKA_SASL_USERNAME":     user,
		"KAFKA_SASL_PASSWORD":     pass,
		"DATABASE_URL":            dbURL,
		"KAFKA_CONSUMER_GROUP":    "lockworker-" + instance,
		"COMMANDS_PARTITIONS":     "4",
		"HTTP_ADDR":               "127.0.0.1:0",
		"INSTANCE_ID":             instance,
		"LOG_LEVEL":               "debug",
	}
}

// TestSecurityTLSSASL runs the real service against a kfake cluster that
// requires TLS and SASL, for each mechanism: a requester with its own
// credentials acquires a lock over TLS+SASL and gets the reply; the service's
// log never holds the password. A wrong password or an untrusted broker
// certificate stops the service with a clear error instead of hanging.
func TestSecurityTLSSASL(t *testing.T) {
	pki := newSecurityPKI(t)

	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			// In parallel: a wrong password takes kgo's retry timeout (30 s)
			// to surface against kfake.
			t.Parallel()
			svcPass := randomSecret(t, "svc-pw-")
			reqPass := randomSecret(t, "req-pw-")
			cluster, err := kfake.NewCluster(
				kfake.NumBrokers(1),
				kfake.EnableSASL(),
				kfake.Superuser(mech, "lockworker", svcPass),
				kfake.Superuser(mech, "requester", reqPass),
				kfake.TLS(pki.server),
			)
			require.NoError(t, err)
			t.Cleanup(cluster.Close)
			brokers := cluster.ListenAddrs()[0]
			instance := "sec-" + strings.ToLower(mech)

			t.Run("acquire over TLS and SASL", func(t *testing.T) {
				sch := testdb.NewSchema(t)
				svc := startSecured(t, securityEnv(brokers, pki.caFile, strings.ToLower(mech), "lockworker", svcPass, sch.URL, instance))
				if ok, err := svc.ready(t, 60*time.Second); !ok {
					t.Fatalf("lockworker was not ready in 60 s (Run returned %v)\nlog:\n%s", err, svc.logs)
				}

				reply := "locks.replies.secure"
				cl, err := kgo.NewClient(
					kgo.SeedBrokers(brokers),
					kgo.DialTLSConfig(&tls.Config{RootCAs: pki.roots, MinVersion: tls.VersionTLS12}),
					kgo.SASL(saslMechanism(t, mech, "requester", reqPass)),
					kgo.DefaultProduceTopic("locks.commands"),
					kgo.ConsumeTopics(reply), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AllowAutoTopicCreation(),
				)
				require.NoError(t, err)
				defer cl.Close()

				cmd := topics.Command{RequestID: "sec-1", Operation: "acquire", LockName: "secure-lock", OwnerID: "requester", LeaseDuration: 60, ReplyTo: reply}
				v, err := cmd.Encode()
				require.NoError(t, err)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: []byte(cmd.Key()), Value: v}).FirstErr())

				var got *topics.Event
				for got == nil {
					fs := cl.PollFetches(ctx)
					require.NoError(t, ctx.Err(), "no reply to sec-1 within 30 s\nlog:\n%s", svc.logs)
					fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
					fs.EachRecord(func(r *kgo.Record) {
						if ev, err := topics.DecodeEvent(r.Value); err == nil && ev.RequestID == "sec-1" && got == nil {
							got = &ev
						}
					})
				}
				assert.Equal(t, topics.TypeAcquired, got.Type, "%+v", got)
				require.NotNil(t, got.LockInfo)
				assert.Equal(t, "requester", got.LockInfo.OwnerID)
				assert.Positive(t, got.LockInfo.FencingToken)

				// The service's own Kafka health check goes over TLS+SASL too.
				resp, err := http.Get("http://" + svc.m.HTTPAddr + "/health/kafka")
				require.NoError(t, err)
				resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode, "/health/kafka")

				svc.cancel()
				err, ok := svc.result(60 * time.Second)
				require.True(t, ok, "lockworker did not drain within 60 s")
				require.NoError(t, err)

				logs := svc.logs.String()
				assert.Contains(t, logs, "lockworker is consuming", "the log was captured")
				assert.Contains(t, logs, `"KAFKA_SASL_PASSWORD":"***"`, "the configuration is logged, masked")
				assert.Contains(t, logs, `"KAFKA_SASL_MECHANISM":"`+mech+`"`)
				assert.NotContains(t, logs, svcPass, "the log holds the SASL password")
				assert.NotContains(t, logs, reqPass)
			})

			t.Run("wrong password fails clearly", func(t *testing.T) {
				sch := testdb.NewSchema(t)
				wrong := randomSecret(t, "wrong-pw-")
				svc := startSecured(t, securityEnv(brokers, pki.caFile, mech, "lockworker", wrong, sch.URL, instance+"-wrong"))
				err := awaitFailure(t, svc, "a wrong SASL password")
				msg := err.Error()
				// Real Kafka answers a failed SaslAuthenticate with
				// SASL_AUTHENTICATION_FAILED, which kgo reports at once. kfake
				// closes the connection instead, so here the client sees EOF
				// (after kgo's retry timeout) on the first request it makes.
				assert.Regexp(t, `(?i)sasl|authenticat|EOF`, msg, "the error must come from the refused connection")
				assert.Contains(t, msg, "creating topic", "the error must name the step that failed")
				for _, secret := range []string{wrong, svcPass} {
					assert.NotContains(t, msg, secret, "the error holds a password")
					assert.NotContains(t, svc.logs.String(), secret, "the log holds a password")
				}
			})
		})
	}

	t.Run("untrusted broker certificate fails clearly", func(t *testing.T) {
		pass := randomSecret(t, "svc-pw-")
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
			kfake.Superuser("SCRAM-SHA-512", "lockworker", pass), kfake.TLS(pki.server))
		require.NoError(t, err)
		t.Cleanup(cluster.Close)
		other := newSecurityPKI(t) // a CA that did not sign the broker's certificate
		sch := testdb.NewSchema(t)
		svc := startSecured(t, securityEnv(cluster.ListenAddrs()[0], other.caFile, "SCRAM-SHA-512", "lockworker", pass, sch.URL, "sec-untrusted"))
		err = awaitFailure(t, svc, "an untrusted broker certificate")
		assert.Regexp(t, `(?i)x509|certificate`, err.Error(), "the error must name the certificate problem")
		assert.NotContains(t, svc.logs.String(), pass)
	})
}

// awaitFailure waits for Run to return an error without the service ever
// becoming ready.
func awaitFailure(t *testing.T, svc *securedService, cause string) error {
	t.Helper()
	ready, err := svc.ready(t, 60*time.Second)
	switch {
	case ready:
		t.Fatalf("lockworker became ready despite %s\nlog:\n%s", cause, svc.logs)
	case !svc.finished:
		t.Fatalf("lockworker neither failed nor became ready within 60 s with %s: it hangs instead of reporting the error\nlog:\n%s", cause, svc.logs)
	}
	require.Error(t, err, "lockworker stopped without an error despite %s", cause)
	t.Logf("with %s, Run returned: %v", cause, err)
	return err
}
