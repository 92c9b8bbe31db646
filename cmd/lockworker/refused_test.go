package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testlog"
)

// A file the configuration names that is missing or invalid (Kafka's TLS
// files, the verification keys, DATABASE_URL's sslrootcert) is a configuration refused, as ParseEnv's
// errors are: exit code 2, at once, with the setting named, even while
// PostgreSQL is unreachable (the start would wait for it).
func TestRefusedFilesExit2(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	// The secrets' files by a short name: a long value that names no file
	// may be a key pasted in place of its path, refused unshown by
	// ParseEnv already (TestSecretPastedForItsPathExit2).
	missingSecret := "missing-secret.pem"
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("not a PEM block\n"), 0o600))
	garbageKeys := filepath.Join(dir, "keys")
	require.NoError(t, os.Mkdir(garbageKeys, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(garbageKeys, "k.pem"), []byte("not a key\n"), 0o600))
	kafka, _ := externalKafka(t)
	_, dbURL, password := cutPostgres(t)
	missingRootCert := connstr.WithParam(dbURL, "sslrootcert", missing)
	tlsOn := map[string]string{"KAFKA_TLS_ENABLED": "true"}
	authOn := map[string]string{"AUTH_REQUIRED": "true"}
	with := func(base map[string]string, kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	cases := []struct {
		name, setting string
		env           map[string]string
	}{
		{"CA file missing", "KAFKA_TLS_CA_FILE", with(tlsOn, "KAFKA_TLS_CA_FILE", missing)},
		{"CA file without a certificate", "KAFKA_TLS_CA_FILE", with(tlsOn, "KAFKA_TLS_CA_FILE", garbage)},
		{"client certificate missing", "KAFKA_TLS_CERT_FILE", with(tlsOn, "KAFKA_TLS_CERT_FILE", missing, "KAFKA_TLS_KEY_FILE", missingSecret)},
		{"client certificate invalid", "KAFKA_TLS_CERT_FILE", with(tlsOn, "KAFKA_TLS_CERT_FILE", garbage, "KAFKA_TLS_KEY_FILE", garbage)},
		{"AUTH_KEYS missing", "AUTH_REQUIRED", with(authOn, "AUTH_KEYS", missing)},
		{"AUTH_KEYS invalid", "AUTH_REQUIRED", with(authOn, "AUTH_KEYS", garbageKeys)},
		{"AUTH_REQUESTER_KEYS missing", "AUTH_REQUIRED", with(authOn, "AUTH_REQUESTER_KEYS", missing)},
		{"AUTH_REQUESTER_KEYS invalid", "AUTH_REQUIRED", with(authOn, "AUTH_REQUESTER_KEYS", garbageKeys)},
		{"AUTH_HMAC_KEY_FILE missing", "AUTH_REQUIRED", with(authOn, "AUTH_HMAC_KEY_FILE", missingSecret)},
		// pgx reads it while parsing the URL, before connecting.
		{"DATABASE_URL's sslrootcert missing", "DATABASE_URL", map[string]string{"DATABASE_URL": missingRootCert}},
		{"DATABASE_URL's sslrootcert not PEM", "DATABASE_URL", map[string]string{"DATABASE_URL": connstr.WithParam(dbURL, "sslrootcert", garbage)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := with(map[string]string{"DATABASE_URL": dbURL}, "KAFKA_BOOTSTRAP_SERVERS", kafka.ListenAddrs()[0],
				"HTTP_ADDR", "127.0.0.1:0", "INSTANCE_ID", "e2e")
			for k, v := range tc.env { // the case's settings win
				env[k] = v
			}
			m := NewMain()
			require.NoError(t, m.ParseEnv(lookup(env)), "refused by ParseEnv: exit 2 already")
			logs := &testlog.Buffer{}
			m.Logger = zerolog.New(logs)
			t.Cleanup(m.Close)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- m.Run(ctx) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(runWait):
				t.Fatalf("Run did not fail in %s", runWait)
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.setting)
			require.Equal(t, 2, m.exitCode(err, false))
			line := logLine(t, logs.String(), "configuration refused")
			assert.Contains(t, line, `"level":"error"`)
			assert.Contains(t, line, tc.setting)
			assert.NotContains(t, logs.String(), startRetryMsg, "refused before waiting for PostgreSQL")
			assert.NotContains(t, logs.String(), password)
			if tc.setting == "DATABASE_URL" {
				require.ErrorContains(t, err, "parameter sslrootcert", "the parameter named")
				require.NotContains(t, err.Error(), "invalid format")
			}
			if tc.env["DATABASE_URL"] == missingRootCert {
				require.ErrorContains(t, err, missing, "the file named")
			}
		})
	}
}

// A setting ParseEnv refuses exits 2 as well, by the same rule
// (exitStatus), the setting named.
func TestParseEnvRefusedExit2(t *testing.T) {
	err := NewMain().ParseEnv(lookup(map[string]string{"LOG_FORMAT": "xml"}))
	require.ErrorIs(t, err, errRefused)
	require.ErrorContains(t, err, `LOG_FORMAT: "xml" is not json or console`)
	require.Equal(t, 2, exitStatus(err, false))
	require.Equal(t, 2, exitStatus(err, true), "refused, signalled or not")

	// Set to nothing, it would start the embedded broker, not reach Kafka.
	err = NewMain().ParseEnv(lookup(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": " "}))
	require.ErrorIs(t, err, errRefused)
	require.ErrorContains(t, err, "KAFKA_BOOTSTRAP_SERVERS: is set but empty")
	m := NewMain()
	require.NoError(t, m.ParseEnv(lookup(map[string]string{})), "unset: the embedded broker")
	require.True(t, m.Config.EmbeddedKafka())

	// lockworker's own rule, which lockctl's FromEnv does not apply: the
	// embedded broker would refuse the group's join.
	err = NewMain().ParseEnv(lookup(map[string]string{"KAFKA_SESSION_TIMEOUT": "2", "KAFKA_HEARTBEAT_INTERVAL": "0.5"}))
	require.ErrorIs(t, err, errRefused)
	require.ErrorContains(t, err, `KAFKA_SESSION_TIMEOUT: "2s" is less than EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT (6s)`)
	require.Equal(t, 2, exitStatus(err, false))
}

// lookup is os.LookupEnv over env.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

// A secret pasted where the path of its file belongs (runs/key.out and
// runs/hmac.out of the review) exits 2 without the secret in the error
// or the log: neither the start's config line nor the refusal quote it.
func TestSecretPastedForItsPathExit2(t *testing.T) {
	const secret = "HUNTER2"
	for name, env := range map[string]map[string]string{
		"KAFKA_TLS_KEY_FILE": {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CERT_FILE": "/etc/hostname",
			"KAFKA_TLS_KEY_FILE": "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI" + secret + "\n-----END PRIVATE KEY-----"},
		"AUTH_HMAC_KEY_FILE": {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": secret + "-shared-secret-0123456789abcdef"},
	} {
		err := NewMain().ParseEnv(lookup(env))
		require.ErrorIs(t, err, errRefused, name)
		require.Equal(t, 2, exitStatus(err, false))
		require.ErrorContains(t, err, name+" is not a readable file path (value not shown: it may be a key pasted in place of its path)")
		require.NotContains(t, err.Error(), secret)

		// Set in code, it is refused by Run, before the config line.
		m := NewMain()
		logs := &testlog.Buffer{}
		m.Logger = zerolog.New(logs)
		m.Config.HTTPAddr = "127.0.0.1:0"
		m.Config.Kafka.BootstrapServers = []string{"127.0.0.1:1"}
		m.Config.Kafka.TLS = config.TLSConfig{Enabled: true, CertFile: "/etc/hostname", KeyFile: env["KAFKA_TLS_KEY_FILE"]}
		if name == "AUTH_HMAC_KEY_FILE" {
			m.Config.Kafka.TLS = config.TLSConfig{}
			m.Config.Auth = config.AuthConfig{Required: true, HMACKeyFile: env[name]}
		}
		err = m.Run(context.Background())
		m.Close()
		require.Equal(t, 2, m.exitCode(err, false), "%v", err)
		require.NotContains(t, err.Error(), secret)
		require.NotContains(t, logs.String(), secret)
	}
}
