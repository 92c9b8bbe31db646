package auth

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// FuzzKeyFile gives parse, which reads the key files at the verifier's
// start and at every reload, any bytes as an AUTH_KEYS file, a requester's
// <requester>.pem or the AUTH_HMAC_KEY_FILE. A file it accepts holds at
// least one key a token can be verified with, and parsed again gives the
// same keys; a refusal quotes no key material: a PEM file's errors quote
// at most 40 characters of a line (a label, a BEGIN line), never a run of
// its base64, and the HMAC file's none of the secret.
func FuzzKeyFile(f *testing.F) {
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(f, err)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(f, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(f, err)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(f, err)
	// A 512-bit modulus: rsa.GenerateKey makes none below 1024 bits.
	rsa512 := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 511), E: 65537}
	rsa512.N.Add(rsa512.N, big.NewInt(1))
	ed, rsaPEM, ec := pemBlock(f, edPub), pemBlock(f, &rsaKey.PublicKey), pemBlock(f, &ecKey.PublicKey)
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)})
	root, rootPEM := certificate(f, &ecKey.PublicKey, ecKey, nil, true)
	inter, interPEM := certificate(f, edPub, ecKey, root, true)
	_, leaf := certificate(f, &rsaKey.PublicKey, edKey, inter, false)
	_, self := certificate(f, edPub, edKey, nil, false)
	_, v1Root := v1Certificate(f, ecKey)
	private, err := x509.MarshalPKCS8PrivateKey(edKey)
	require.NoError(f, err)
	privatePEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private})
	const bom = "\xef\xbb\xbf"
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	for _, file := range [][]byte{
		ed, rsaPEM, ec, pkcs1, self, v1Root, leaf, pemBlock(f, &p224.PublicKey), pemBlock(f, rsa512),
		slices.Concat([]byte("# the issuers' keys\n"), ed, rsaPEM, ec, []byte("trailing text\n")),
		slices.Concat(leaf, interPEM, rootPEM),
		slices.Concat(rootPEM, interPEM, leaf),
		interPEM,
		slices.Concat(leaf, ed),
		crlf(slices.Concat([]byte(bom), ed, rsaPEM)),
		slices.Concat([]byte("keys: |\n"), indent(slices.Concat(ed, ec), "    ")),
		slices.Concat(ed, indent(pkcs1, "\t")),
		privatePEM,
		slices.Concat(ed, privatePEM),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}),
		ed[:len(ed)-20],
		slices.Concat([]byte("-----BEGIN here the keys\n"), ed),
		[]byte("not a key"),
		nil,
	} {
		f.Add(file, uint8(issuerKey))
		f.Add(file, uint8(requesterKey))
	}
	for _, file := range []string{strings.Repeat("s", 32), strings.Repeat("s", 31) + "\n", " " + strings.Repeat("k", 40) + "\r\n", string(ed), ""} {
		f.Add([]byte(file), uint8(hmacKey))
	}

	const path = "/keys/billing.pem" // a valid requester's file
	f.Fuzz(func(t *testing.T, file []byte, kind uint8) {
		files := []keyFile{{path, keyKind(kind % 3)}}
		ks, err := parse(files, [][]byte{file})
		again, errAgain := parse(files, [][]byte{file})
		require.Equal(t, err, errAgain, "parsed twice")
		if err != nil {
			quoted := strings.ReplaceAll(err.Error(), path, "")
			window := 41 // a PEM file's errors quote at most 40 characters
			if files[0].kind == hmacKey {
				window = 8
			}
			for i := 0; i+window <= len(quoted); i++ {
				w := quoted[i : i+window]
				require.False(t, bytes.Contains(file, []byte(w)), "the error %q quotes %q of the file", err, w)
			}
			return
		}
		require.Equal(t, ks, again, "parsed twice")
		require.Positive(t, ks.count())
		require.NotEmpty(t, ks.methods)
		for _, k := range slices.Concat(ks.issuers, ks.requesters["billing"]) {
			require.True(t, usable(k, ks.methods), "accepted a key no token can be verified with: %T %v", k, k)
		}
	})
}

// usable reports whether a token of one of methods could be verified with
// k: golang-jwt takes it, and a wrong signature fails as a wrong signature
// does, not as a key it cannot use.
func usable(k jwt.VerificationKey, methods []string) bool {
	if secret, ok := k.([]byte); ok {
		return len(secret) >= 32 && slices.Contains(methods, "HS256")
	}
	for _, name := range methods {
		m := jwt.GetSigningMethod(name)
		var sig []byte
		var wrong error
		switch key := k.(crypto.PublicKey).(type) {
		case ed25519.PublicKey:
			sig, wrong = make([]byte, ed25519.SignatureSize), jwt.ErrEd25519Verification
		case *rsa.PublicKey:
			sig, wrong = make([]byte, key.Size()), rsa.ErrVerification
		case *ecdsa.PublicKey:
			es, ok := m.(*jwt.SigningMethodECDSA)
			if !ok || es.CurveBits != key.Params().BitSize {
				continue // golang-jwt signs with a key of its curve only
			}
			sig, wrong = make([]byte, 2*es.KeySize), jwt.ErrECDSAVerification
		}
		if sig != nil && errors.Is(m.Verify("e30.e30", sig, k), wrong) {
			return true
		}
	}
	return false
}
