package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// authWorker starts a broker, a schema and a worker of their own that
// requires tokens (AUTH_REQUIRED) verified by v, and returns the broker's
// address.
func authWorker(t *testing.T, v *auth.Verifier) string {
	t.Helper()
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "auth", Auth: v})
	return e.Brokers[0]
}

// With AUTH_REQUIRED, lockctl revoke signing with the workers' HMAC secret
// (an issuer's, which may sign as anyone) ends the lease, as the README's
// operator does; signing with a requester's own key it claims no admin,
// and is refused FORBIDDEN rather than UNAUTHENTICATED (which no reply
// would tell: exit 3 after --timeout).
func TestRevokeWithAuthentication(t *testing.T) {
	dir, requesterKeys := t.TempDir(), t.TempDir()
	secret := filepath.Join(dir, "hmac")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("s", topics.MinHMACSecretBytes)+"\n"), 0o600))
	pubKey, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pubKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(requesterKeys, "alice.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	der, err = x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	aliceKey := filepath.Join(dir, "alice.key")
	require.NoError(t, os.WriteFile(aliceKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	v, err := auth.NewVerifier(auth.Config{HMACKeyFile: secret, RequesterKeysPath: requesterKeys, Audience: "lockworker"})
	require.NoError(t, err)
	t.Cleanup(v.Close)
	brokers := authWorker(t, v)

	for _, name := range []string{client.EnvToken, client.EnvTokenFile, client.EnvTokenIssuer} {
		t.Setenv(name, "")
	}
	t.Setenv(client.EnvTokenAudience, "lockworker")
	const lock = "ctl-auth-revoke"
	lockctl := func(keyFile string, args ...string) result {
		t.Helper()
		t.Setenv(client.EnvSigningKeyFile, keyFile)
		var out, errOut testlog.Buffer
		// The worker may still be joining its group: a longer --timeout.
		args = append([]string{args[0], "--brokers", brokers, "--timeout", "30s"}, args[1:]...)
		code := run(context.Background(), args, &out, &errOut)
		return result{code, out.String(), errOut.String()}
	}

	r := lockctl(aliceKey, "acquire", "--requester", "alice", "--lock", lock, "--owner", "job", "--lease", "60s")
	require.Equal(t, exitOK, r.code, r.stderr)

	r = lockctl(aliceKey, "revoke", "--requester", "alice", "--lock", lock, "--reason", "mine now")
	assert.Equal(t, exitRefused, r.code, r.stderr)
	assert.Contains(t, r.stderr, `FORBIDDEN: requester "alice" may not revoke: its token has no admin claim`)

	r = lockctl(secret, "revoke", "--requester", "ops", "--lock", lock, "--reason", "stuck since 03:00")
	require.Equal(t, exitOK, r.code, r.stderr)
	assert.Contains(t, r.stdout, "revoked 1 lease(s) of "+lock+": last "+lock+" revoked owner=alice:job")
}
