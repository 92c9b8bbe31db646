package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	sdk "github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
)

// keyPair writes an Ed25519 key pair: the public half into one of the
// workers' key directories (AUTH_KEYS, AUTH_REQUESTER_KEYS) as name.pem, the
// private half to a file of its own.
func keyPair(t *testing.T, keysDir, name string) (privateFile string, key ed25519.PrivateKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(keysDir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	der, err = x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	privateFile = filepath.Join(t.TempDir(), name+".key")
	require.NoError(t, os.WriteFile(privateFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return privateFile, key
}

// TestAuthenticatedService runs the real wiring with AUTH_REQUIRED and the
// SDK on both sides of it: a requester that signs its own tokens (its
// public key in AUTH_REQUESTER_KEYS), ones given a token by an issuer (its
// key in AUTH_KEYS), and one without any.
func TestAuthenticatedService(t *testing.T) {
	keys, requesterKeys := t.TempDir(), t.TempDir()
	aliceKey, alicePrivate := keyPair(t, requesterKeys, "alice")
	_, issuer := keyPair(t, keys, "issuer")
	addr := startEmbedded(t, func(c *config.Config) {
		c.Auth = config.AuthConfig{Required: true, Keys: keys, RequesterKeys: requesterKeys}
	})
	t.Setenv(sdk.EnvToken, "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	alice, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "alice", SigningKeyFile: aliceKey})
	require.NoError(t, err)
	defer alice.Close()
	lease, err := alice.Acquire(ctx, "doc")
	require.NoError(t, err)
	require.Equal(t, "alice:"+strings.TrimPrefix(lease.Owner, "alice:"), lease.Owner, "owners are scoped by requester")

	token, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.RegisteredClaims{Subject: "mallory",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString(issuer)
	require.NoError(t, err)
	mallory, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Token: token})
	require.NoError(t, err)
	defer mallory.Close()
	require.Equal(t, "locks.replies.mallory", mallory.ReplyTopic(), "the requester is the token's subject")
	_, err = mallory.Do(ctx, topics.Command{Operation: topics.OpRelease, LockName: "doc", OwnerID: lease.Owner})
	require.ErrorIs(t, err, sdk.ErrNotOwner)
	_, err = sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Token: token, Requester: "alice"})
	require.ErrorContains(t, err, "not the token's subject")

	anon, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Requester: "anon", RequestTimeout: 2 * time.Second, ReplyTimeout: time.Second})
	require.NoError(t, err)
	defer anon.Close()
	_, err = anon.Query(ctx, "doc")
	require.ErrorIs(t, err, sdk.ErrNoReply, "an unauthenticated command is only dead-lettered")

	// Revoke is administrative: without the admin claim it is FORBIDDEN.
	_, err = mallory.Revoke(ctx, "doc", lease.Owner, "mine now")
	require.ErrorIs(t, err, sdk.ErrForbidden)
	require.NoError(t, lease.Err(), "the lease is untouched")

	require.NoError(t, lease.Extend(ctx, time.Minute), "the holder's own commands still work")
	require.NoError(t, lease.Release(ctx))

	// With it, the owner_id names any requester's holder (not scoped by the
	// revoker), and the holder is told.
	rootToken, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"sub": "root", "admin": true,
		"exp": time.Now().Add(time.Hour).Unix()}).SignedString(issuer)
	require.NoError(t, err)
	root, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Token: rootToken})
	require.NoError(t, err)
	defer root.Close()
	held, err := alice.Acquire(ctx, "doc")
	require.NoError(t, err)
	n, err := root.Revoke(ctx, "doc", held.Owner, "maintenance")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	select {
	case <-held.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told of the revoke")
	}
	require.ErrorIs(t, held.Err(), sdk.ErrRevoked)

	// alice's own key speaks for alice only: signing as another requester,
	// or claiming admin, its commands are dead-lettered, answered nowhere.
	held, err = alice.Acquire(ctx, "doc")
	require.NoError(t, err)
	for name, claims := range map[string]jwt.MapClaims{
		"as mallory": {"sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()},
		"as admin":   {"sub": "alice", "admin": true, "exp": time.Now().Add(time.Hour).Unix()},
	} {
		token, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims).SignedString(alicePrivate)
		require.NoError(t, err)
		cl, err := sdk.New(ctx, sdk.Config{Brokers: []string{addr}, Token: token, RequestTimeout: 2 * time.Second, ReplyTimeout: time.Second})
		require.NoError(t, err, name)
		_, err = cl.Revoke(ctx, "doc", held.Owner, "mine now")
		require.ErrorIs(t, err, sdk.ErrNoReply, name)
		cl.Close()
	}
	require.NoError(t, held.Err(), "the lease is untouched")
	require.NoError(t, held.Release(ctx))
}

// With AUTH_REQUIRED and no INSPECT_TOKEN the start warns that the HTTP
// inspection endpoints stay open, to every namespace; with one it does not.
func TestAuthWithoutInspectTokenWarns(t *testing.T) {
	keys := t.TempDir()
	keyPair(t, keys, "issuer")
	const warning = "AUTH_REQUIRED=true without INSPECT_TOKEN"
	for _, token := range []string{"", "inspect-secret-0123456789"} {
		logs := startWarnings(t, config.AuthConfig{Required: true, Keys: keys}, token)
		if token == "" {
			line := logLine(t, logs.String(), warning)
			assert.Contains(t, line, `"level":"warn"`)
			assert.Contains(t, line, "/locks/*, /sessions/*, /health/locks")
		} else {
			assert.NotContains(t, logs.String(), warning)
		}
	}
}

// startWarnings runs a replica with auth and inspect until its start's
// warnings are logged (its context ended: Run stops at the next step) and
// returns its log.
func startWarnings(t *testing.T, auth config.AuthConfig, inspect string) *testlog.Buffer {
	t.Helper()
	logs := &testlog.Buffer{}
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = "postgres://nobody@127.0.0.1:1/none" // never reached
	m.Config.HTTPAddr = "127.0.0.1:0"
	m.Config.Kafka.BootstrapServers = []string{freeAddr(t)}
	m.Config.Auth = auth
	m.Config.InspectToken = inspect
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the warnings come first
	require.ErrorIs(t, m.Run(ctx), context.Canceled)
	m.Close()
	return logs
}

// With AUTH_KEYS and no AUTH_AUDIENCE the start warns that tokens its
// issuers sign for any application are accepted; with an audience, or
// with requester keys alone, it does not.
func TestAuthKeysWithoutAudienceWarns(t *testing.T) {
	keys, requesterKeys := t.TempDir(), t.TempDir()
	keyPair(t, keys, "issuer")
	keyPair(t, requesterKeys, "billing")
	const warning = "AUTH_KEYS without AUTH_AUDIENCE"
	for name, tc := range map[string]struct {
		auth config.AuthConfig
		warn bool
	}{
		"issuer keys, no audience":    {config.AuthConfig{Required: true, Keys: keys}, true},
		"issuer keys and audience":    {config.AuthConfig{Required: true, Keys: keys, Audience: "lockworker"}, false},
		"requester keys, no audience": {config.AuthConfig{Required: true, RequesterKeys: requesterKeys}, false},
	} {
		logs := startWarnings(t, tc.auth, "")
		if tc.warn {
			line := logLine(t, logs.String(), warning)
			assert.Contains(t, line, `"level":"warn"`, name)
			assert.Contains(t, line, "for any application", name)
		} else {
			assert.NotContains(t, logs.String(), warning, name)
		}
	}
}

// TestReplyTopicsBounded: the abuse of the security review, 20 commands
// each naming a new reply topic, creates MAX_REPLY_TOPICS topics and no
// more; the rest are refused in the dead-letter topic.
func TestReplyTopicsBounded(t *testing.T) {
	addr := startEmbedded(t, func(c *config.Config) { c.Topics.MaxReplyTopics = 5 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("locks.commands"),
		kgo.ConsumeTopics("locks.commands.dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 20 {
		c := topics.Command{RequestID: fmt.Sprint("flood-", i), Operation: topics.OpQuery, LockName: "x", ReplyTo: fmt.Sprint("locks.replies.flood-", i)}
		v, err := c.Encode()
		require.NoError(t, err)
		require.NoError(t, cl.ProduceSync(ctx, &kgo.Record{Key: []byte("x"), Value: v}).FirstErr())
	}
	refused := 0
	for refused < 15 {
		fs := cl.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "waiting for 15 dead-letter copies, got %d", refused)
		fs.EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == topics.HeaderError && strings.Contains(string(h.Value), "may not be created") {
					refused++
				}
			}
		})
	}
	adm := kadm.NewClient(cl)
	require.Eventually(t, func() bool { // the five allowed ones are created as their replies go out
		listed, err := adm.ListTopics(ctx)
		n := 0
		for _, name := range listed.Names() {
			if strings.HasPrefix(name, "locks.replies.") {
				n++
			}
		}
		return err == nil && n == 5
	}, 30*time.Second, 100*time.Millisecond)
}
