package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A secret pasted into the variable meant for its file's path (a Helm
// value, or a Kubernetes Secret given as env: rather than mounted) is
// refused without being echoed, and the configuration's logged forms hide
// it; a path is still shown and named.
func TestSecretPathNotEchoed(t *testing.T) {
	const secret = "HUNTER2"
	pem := "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI" + secret + "xxxxxxxxxxxxxxxxxxxxxxxx\n-----END PRIVATE KEY-----"
	oneLine := "-----BEGIN PRIVATE KEY----- MC4CAQAwBQYDK2VwBCIEI" + secret + " -----END PRIVATE KEY-----"
	hmac := secret + "-shared-secret-0123456789abcdef"
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{"PEM key, TLS on", map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CERT_FILE": "/c.pem", "KAFKA_TLS_KEY_FILE": pem}},
		{"PEM key, TLS off", map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TLS_CERT_FILE": "/c.pem", "KAFKA_TLS_KEY_FILE": pem}},
		{"PEM key on one line", map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CERT_FILE": "/c.pem", "KAFKA_TLS_KEY_FILE": oneLine}},
		{"HMAC secret, auth on", map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": hmac}},
		{"HMAC secret, auth off", map[string]string{"AUTH_HMAC_KEY_FILE": hmac}},
		{"too long for a path", map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": "/" + secret + strings.Repeat("x", maxPathBytes)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromEnv(env(tc.env))
			require.Error(t, err)
			assert.NotContains(t, err.Error(), secret)
			name := "KAFKA_TLS_KEY_FILE"
			if _, ok := tc.env[name]; !ok {
				name = "AUTH_HMAC_KEY_FILE"
			}
			assert.ErrorContains(t, err, name+" is not a readable file path (value not shown: it may be a key pasted in place of its path)")

			// A Config built in code, never validated: how it prints,
			// and the Kafka options that read the key.
			c := Default()
			c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: "/c.pem", KeyFile: tc.env["KAFKA_TLS_KEY_FILE"]}
			c.Auth.HMACKeyFile = tc.env["AUTH_HMAC_KEY_FILE"]
			js, err := json.Marshal(c)
			require.NoError(t, err)
			for _, s := range []string{c.String(), fmt.Sprintf("%#v", c), string(js), fmt.Sprint(c.Redacted())} {
				assert.NotContains(t, s, secret)
				assert.Contains(t, s, notAPath)
			}
			if c.Kafka.TLS.KeyFile != "" {
				_, err = c.KafkaOpts()
				require.Error(t, err)
				assert.NotContains(t, err.Error(), secret)
			}
		})
	}

	t.Run("paths", func(t *testing.T) {
		cert := filepath.Join(t.TempDir(), "c.pem") // read before the key
		require.NoError(t, os.WriteFile(cert, []byte("certificate"), 0o600))
		for _, path := range []string{"/run/secrets/kafka/tls.key", "tls.key"} {
			c, err := FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": path,
				"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CERT_FILE": cert, "KAFKA_TLS_KEY_FILE": path}))
			require.NoError(t, err, path)
			assert.Equal(t, path, c.Redacted()["AUTH_HMAC_KEY_FILE"])
			assert.Equal(t, path, c.Redacted()["KAFKA_TLS_KEY_FILE"])
			_, err = c.KafkaOpts()
			assert.ErrorContains(t, err, path, "an unreadable path is named")
		}
		// A long name without a '/' may be a pasted secret: taken when
		// the file exists, shown redacted all the same.
		t.Chdir(t.TempDir())
		const bare = "a-long-hmac-key-file-name-without-a-slash.key"
		require.NoError(t, os.WriteFile(bare, []byte("k"), 0o600))
		c, err := FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": bare}))
		require.NoError(t, err)
		assert.Equal(t, notAPath, c.Redacted()["AUTH_HMAC_KEY_FILE"])

		// Base64 has '/' too: a long value is shown only when a file has
		// that name, and refused unshown when none has.
		long := filepath.Join(t.TempDir(), "a-key-file-at-a-path-of-some-length.pem")
		require.NoError(t, os.WriteFile(long, []byte("k"), 0o600))
		c, err = FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": long}))
		require.NoError(t, err)
		assert.Equal(t, long, c.Redacted()["AUTH_HMAC_KEY_FILE"])
		const pasted = "k3J/x9" + secret + "+AbCdEfGhIjKlMnOpQrStUv="
		_, err = FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_HMAC_KEY_FILE": pasted}))
		require.ErrorContains(t, err, "AUTH_HMAC_KEY_FILE is not a readable file path (value not shown")
		assert.NotContains(t, err.Error(), secret)
		_, err = FromEnv(env(map[string]string{"KAFKA_TLS_KEY_FILE": "/k.pem", "KAFKA_TLS_CERT_FILE": "/c.pem"}))
		assert.ErrorContains(t, err, `KAFKA_TLS_KEY_FILE: "/k.pem" is set but KAFKA_TLS_ENABLED is not true`)
	})
}
