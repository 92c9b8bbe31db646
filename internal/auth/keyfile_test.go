package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
)

// signer signs tokens with a private key of a test.
type signer struct {
	m   jwt.SigningMethod
	key any
}

// verifiedBy loads file as AUTH_KEYS and returns which of signers'
// tokens it verifies, sorted.
func verifiedBy(t *testing.T, file []byte, signers map[string]signer) ([]string, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "k.pem")
	require.NoError(t, os.WriteFile(f, file, 0o600))
	v, err := NewVerifier(Config{KeysPath: f})
	if err != nil {
		return nil, err
	}
	defer v.Close()
	var ok []string
	for name, s := range signers {
		if _, err := v.Verify(sign(t, s.m, s.key, claims("a", time.Minute))); err == nil {
			ok = append(ok, name)
		}
	}
	slices.Sort(ok)
	return ok, nil
}

// indent puts prefix before every line of b.
func indent(b []byte, prefix string) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		out = append(append(out, prefix...), line...)
	}
	return out
}

// A block whose lines are indented (a key pasted from YAML), or after a
// UTF-8 byte-order mark (a file written by PowerShell 5.1 or old Notepad,
// and cat of such a file and another), loads as any other: pem.Decode
// passed over it, and its key was left out unsaid.
func TestKeyFileIndentedOrAfterAByteOrderMark(t *testing.T) {
	pub1, key1, _ := ed25519.GenerateKey(rand.Reader)
	pub2, key2, _ := ed25519.GenerateKey(rand.Reader)
	block1, block2 := pemBlock(t, pub1), pemBlock(t, pub2)
	const bom = "\xef\xbb\xbf"
	crlf := func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }
	signers := map[string]signer{"1": {jwt.SigningMethodEdDSA, key1}, "2": {jwt.SigningMethodEdDSA, key2}}
	for name, tc := range map[string]struct {
		file []byte
		want []string
	}{
		"a byte-order mark at the start":          {slices.Concat([]byte(bom), block1, block2), []string{"1", "2"}},
		"a byte-order mark at the start, CRLF":    {crlf(slices.Concat([]byte(bom), block1, block2)), []string{"1", "2"}},
		"a byte-order mark, one key":              {slices.Concat([]byte(bom), block1), []string{"1"}},
		"a byte-order mark before the second key": {slices.Concat(block1, []byte(bom), block2), []string{"1", "2"}},
		"the second key indented by two spaces":   {slices.Concat(block1, indent(block2, "  ")), []string{"1", "2"}},
		"only the second BEGIN line indented":     {slices.Concat(block1, []byte(" "), block2), []string{"1", "2"}},
		"every key indented by a tab, CRLF":       {crlf(slices.Concat(indent(block1, "\t"), indent(block2, "\t"))), []string{"1", "2"}},
		"a YAML literal block":                    {slices.Concat([]byte("keys: |\n"), indent(slices.Concat(block1, block2), "    ")), []string{"1", "2"}},
	} {
		got, err := verifiedBy(t, tc.file, signers)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}
}

// A block is read by what it holds, not by its label, as the prior
// release's parsers (golang-jwt's) read it: a public key, PKCS #1 or
// SubjectPublicKeyInfo, under any label ("RSA PUBLIC KEY" holding a
// SubjectPublicKeyInfo, "EC PUBLIC KEY"), and a certificate under any
// ("X509 CERTIFICATE", OpenSSL's old label), its chain then not loaded.
// What none of them reads fails the file, its label and why in the
// message.
func TestKeyFileLabels(t *testing.T) {
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	spki := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		require.NoError(t, err)
		return der
	}
	certDER := func(pub, key any) []byte {
		_, b := certificate(t, pub, key, nil, false)
		block, _ := pem.Decode(b)
		return block.Bytes
	}
	signers := map[string]signer{"ed": {jwt.SigningMethodEdDSA, edKey}, "rsa": {jwt.SigningMethodRS256, rsaKey}, "ec": {jwt.SigningMethodES256, ecKey}}
	bodies := []struct {
		name, key string
		der       []byte
	}{
		{"Ed25519 SubjectPublicKeyInfo", "ed", spki(edPub)},
		{"RSA SubjectPublicKeyInfo", "rsa", spki(&rsaKey.PublicKey)},
		{"ECDSA SubjectPublicKeyInfo", "ec", spki(&ecKey.PublicKey)},
		{"RSA PKCS #1", "rsa", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)},
		{"Ed25519 certificate", "ed", certDER(edPub, edKey)},
		{"RSA certificate", "rsa", certDER(&rsaKey.PublicKey, rsaKey)},
		{"ECDSA certificate", "ec", certDER(&ecKey.PublicKey, ecKey)},
	}
	for _, label := range []string{"PUBLIC KEY", "RSA PUBLIC KEY", "EC PUBLIC KEY", "CERTIFICATE", "X509 CERTIFICATE", "KEY"} {
		for _, body := range bodies {
			name := body.name + " as " + label
			file := pem.EncodeToMemory(&pem.Block{Type: label, Bytes: body.der})
			if body.name != "Ed25519 certificate" {
				_, edErr := jwt.ParseEdPublicKeyFromPEM(file)
				_, rsaErr := jwt.ParseRSAPublicKeyFromPEM(file)
				_, ecErr := jwt.ParseECPublicKeyFromPEM(file)
				require.True(t, edErr == nil || rsaErr == nil || ecErr == nil, "the prior release loaded %s", name)
			}
			got, err := verifiedBy(t, file, signers)
			require.NoError(t, err, name)
			require.Equal(t, []string{body.key}, got, name)
		}
	}

	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca, caPEM := certificate(t, &caKey.PublicKey, caKey, nil, true)
	_, leaf := certificate(t, &ecKey.PublicKey, caKey, ca, false)
	relabel := func(b []byte, label string) []byte {
		block, _ := pem.Decode(b)
		return pem.EncodeToMemory(&pem.Block{Type: label, Bytes: block.Bytes})
	}
	signers["ca"] = signer{jwt.SigningMethodES256, caKey}
	got, err := verifiedBy(t, slices.Concat(relabel(leaf, "X509 CERTIFICATE"), relabel(caPEM, "X509 CERTIFICATE")), signers)
	require.NoError(t, err)
	require.Equal(t, []string{"ec"}, got, "X509 CERTIFICATE: the chain is not loaded")
	got, err = verifiedBy(t, slices.Concat(relabel(leaf, "PUBLIC KEY"), caPEM), signers)
	require.NoError(t, err)
	require.Equal(t, []string{"ec"}, got, "a certificate labelled PUBLIC KEY is a certificate: its chain is not loaded")
	_, err = verifiedBy(t, slices.Concat(leaf, relabel(pemBlock(t, edPub), "CERTIFICATE")), signers)
	require.ErrorContains(t, err, "PEM block 2: public keys and certificates in one file", "a key labelled CERTIFICATE is a key")

	private, err := x509.MarshalPKCS8PrivateKey(edKey)
	require.NoError(t, err)
	aux := []byte{0x30, 0x00} // an empty trust record: OpenSSL's TRUSTED CERTIFICATE puts it after the certificate
	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"a private key":            {pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: private}), `PEM block 1: not a PEM public key of Ed25519, RSA or ECDSA: a "PRIVATE KEY" block`},
		"a TRUSTED CERTIFICATE":    {pem.EncodeToMemory(&pem.Block{Type: "TRUSTED CERTIFICATE", Bytes: slices.Concat(certDER(edPub, edKey), aux)}), `PEM block 1: not a PEM public key of Ed25519, RSA or ECDSA: a "TRUSTED CERTIFICATE" block that does not parse (x509: trailing data)`},
		"a damaged RSA PUBLIC KEY": {pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: []byte{0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x03}}), `PEM block 1: not a PEM public key of Ed25519, RSA or ECDSA: a "RSA PUBLIC KEY" block that does not parse (x509: `},
	} {
		_, err := verifiedBy(t, tc.file, signers)
		require.ErrorContains(t, err, tc.want, name)
	}
}

// v1Certificate is a self-signed X.509 v1 certificate of key, as some old
// roots are: no version field and no extensions, so no basicConstraints
// saying it is a CA (x509.CreateCertificate writes only v3).
func v1Certificate(t testing.TB, key *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	name, err := asn1.Marshal(pkix.Name{CommonName: "v1 root"}.ToRDNSequence())
	require.NoError(t, err)
	return v1Issued(t, &key.PublicKey, name, name, key)
}

// v1Issued is an X.509 v1 certificate of key, named subject (DER), issued
// by issuer (DER), signed by signer: as `openssl x509 -req` without
// extensions writes a leaf.
func v1Issued(t testing.TB, key *ecdsa.PublicKey, subject, issuer []byte, signer *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	spki, err := x509.MarshalPKIXPublicKey(key)
	require.NoError(t, err)
	ecdsaWithSHA256 := pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}}
	type validity struct{ NotBefore, NotAfter time.Time }
	tbs, err := asn1.Marshal(struct {
		Serial          *big.Int
		Signature       pkix.AlgorithmIdentifier
		Issuer          asn1.RawValue
		Validity        validity
		Subject, PubKey asn1.RawValue
	}{big.NewInt(1), ecdsaWithSHA256, asn1.RawValue{FullBytes: issuer}, validity{time.Now().Add(-time.Hour).UTC(), time.Now().Add(time.Hour).UTC()},
		asn1.RawValue{FullBytes: subject}, asn1.RawValue{FullBytes: spki}})
	require.NoError(t, err)
	digest := sha256.Sum256(tbs)
	sig, err := ecdsa.SignASN1(rand.Reader, signer, digest[:])
	require.NoError(t, err)
	der, err := asn1.Marshal(struct {
		TBS       asn1.RawValue
		Algorithm pkix.AlgorithmIdentifier
		Signature asn1.BitString
	}{asn1.RawValue{FullBytes: tbs}, ecdsaWithSHA256, asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)}})
	require.NoError(t, err)
	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	require.Equal(t, 1, c.Version)
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// negativeSerial is certificate b with its serial, 1, made -1: x509 has
// refused to parse such a certificate since Go 1.23, and some old CA
// certificates have one.
func negativeSerial(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	serial := []byte{0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01} // version 3, then the serial's tag and length
	require.Equal(t, 1, bytes.Count(block.Bytes, append(serial, 0x01)))
	der := bytes.Replace(block.Bytes, append(serial, 0x01), append(serial, 0xff), 1)
	_, err := x509.ParseCertificate(der)
	require.ErrorContains(t, err, "negative serial number")
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A file of certificates loads its first, whatever it is when alone, and
// never the ones after it: its chain, whose keys' holders could sign any
// token. A first that may issue certificates (CA:TRUE, v1 or keyCertSign)
// with certificates after it, or a later certificate naming the first as
// its issuer (by name, so also through a link signed with SHA-1, whose
// signature x509 no longer checks), fails the file, as the first's own key would be a CA's. A later
// certificate that x509 cannot parse is passed over, not loaded either.
func TestKeyFileCertificateChains(t *testing.T) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	keys := map[string]*ecdsa.PrivateKey{}
	for _, name := range []string{"root", "inter", "inter2", "leaf", "leaf2", "leaf3", "other", "v1root", "v1leaf", "selfCA", "selfCA2", "self", "self2", "noBC", "noBCleaf", "plain", "plainLeaf", "v1leaf2"} {
		keys[name] = newKey()
	}
	cert := func(name string, parent *x509.Certificate, signer string, ca bool, edit ...func(*x509.Certificate)) (*x509.Certificate, []byte) {
		if parent == nil {
			signer = name
		}
		return certificate(t, &keys[name].PublicKey, keys[signer], parent, ca, edit...)
	}
	sha1 := func(c *x509.Certificate) { c.SignatureAlgorithm = x509.ECDSAWithSHA1 }
	root, rootPEM := cert("root", nil, "", true)
	inter, interPEM := cert("inter", root, "root", true)
	inter2, inter2PEM := cert("inter2", root, "root", true)
	_, leaf := cert("leaf", inter, "inter", false)
	_, leaf2 := cert("leaf2", inter, "inter", false)
	_, leaf3 := cert("leaf3", inter2, "inter2", false)
	_, otherRoot := cert("other", nil, "", true)
	v1Root, v1RootPEM := v1Certificate(t, keys["v1root"])
	v1LeafName, err := asn1.Marshal(pkix.Name{CommonName: "v1 leaf of inter"}.ToRDNSequence())
	require.NoError(t, err)
	_, v1LeafOfInter := v1Issued(t, &keys["v1leaf2"].PublicKey, v1LeafName, inter.RawSubject, keys["inter"])
	_, certSignLeaf := cert("leaf", inter, "inter", false, func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign })
	_, v1Leaf := cert("v1leaf", v1Root, "v1root", false)
	_, selfCA := cert("selfCA", nil, "", true) // as openssl req -x509 makes one
	_, selfCA2 := cert("selfCA2", nil, "", true)
	selfC, self := cert("self", nil, "", false)
	_, selfNamesake := cert("self2", nil, "", false, func(c *x509.Certificate) { c.Subject = selfC.Subject })
	_, self2 := cert("self2", nil, "", false)
	_, selfRenewed := cert("self", nil, "", false, func(c *x509.Certificate) { c.Subject = selfC.Subject })
	noBC, noBCPEM := cert("noBC", nil, "", true, func(c *x509.Certificate) { c.BasicConstraintsValid = false }) // keyCertSign, no basicConstraints
	_, noBCLeaf := cert("noBCleaf", noBC, "noBC", false)
	plain, plainPEM := cert("plain", nil, "", false) // an issuer whose certificate does not say so
	_, plainLeaf := cert("plainLeaf", plain, "plain", false)
	plainLeafSHA1C, plainLeafSHA1 := cert("plainLeaf", plain, "plain", false, sha1)
	require.Equal(t, x509.ECDSAWithSHA1, plainLeafSHA1C.SignatureAlgorithm)
	unparsed := negativeSerial(t, rootPEM)
	damaged := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 0x02, 0x01, 0x01}})
	signers := map[string]signer{}
	for name, key := range keys {
		signers[name] = signer{jwt.SigningMethodES256, key}
	}
	for name, tc := range map[string]struct {
		file []byte
		want []string
	}{
		"a full chain": {slices.Concat(leaf, interPEM, rootPEM), []string{"leaf"}},
		"a leaf and its chain, then another and its chain":    {slices.Concat(leaf, interPEM, rootPEM, leaf2, interPEM, rootPEM), []string{"leaf"}},
		"two leaves, then their chain":                        {slices.Concat(leaf, leaf2, interPEM), []string{"leaf"}},
		"a leaf, then a chain in reverse order":               {slices.Concat(leaf, rootPEM, interPEM), []string{"leaf"}},
		"a leaf and its v1 root":                              {slices.Concat(v1Leaf, v1RootPEM), []string{"v1leaf"}},
		"a leaf and its root without basicConstraints":        {slices.Concat(noBCLeaf, noBCPEM), []string{"noBCleaf"}},
		"a leaf and another hierarchy's root":                 {slices.Concat(leaf, otherRoot), []string{"leaf"}},
		"a self-signed certificate, then a CA:TRUE one":       {slices.Concat(self, selfCA), []string{"self"}},
		"a self-signed certificate, then another":             {slices.Concat(self, self2), []string{"self"}},
		"a self-signed certificate, then its renewal":         {slices.Concat(self, selfRenewed), []string{"self"}},
		"a lone self-signed CA:TRUE":                          {selfCA, []string{"selfCA"}},
		"a lone v1 certificate":                               {v1RootPEM, []string{"v1root"}},
		"a v1 leaf (openssl x509 -req), then its chain":       {slices.Concat(v1LeafOfInter, interPEM, rootPEM), []string{"v1leaf2"}},
		"a CA:FALSE leaf with keyCertSign, then its chain":    {slices.Concat(certSignLeaf, interPEM), []string{"leaf"}},
		"a self-signed certificate, then another of its name": {slices.Concat(self, selfNamesake), []string{"self"}},
		"a leaf, then a chain certificate x509 cannot read":   {slices.Concat(leaf, interPEM, unparsed), []string{"leaf"}},
		"a leaf, then a damaged certificate":                  {slices.Concat(leaf, damaged), []string{"leaf"}},
	} {
		got, err := verifiedBy(t, tc.file, signers)
		require.NoError(t, err, name)
		require.Equal(t, tc.want, got, name)
	}

	const caFirst = ": a certificate after block 1, which may issue certificates (CA:TRUE, X.509 v1 or keyCertSign): only a file's first certificate is loaded"
	const reversed = ": a certificate naming block 1 as its issuer: a chain in reverse order"
	for name, tc := range map[string]struct {
		file []byte
		want string
	}{
		"an intermediate and its root (no leaf)":                  {slices.Concat(interPEM, rootPEM), "PEM block 2" + caFirst},
		"a chain in reverse order":                                {slices.Concat(rootPEM, interPEM, leaf), "PEM block 2" + caFirst},
		"a CA bundle before the leaf":                             {slices.Concat(interPEM, rootPEM, leaf), "PEM block 2" + caFirst},
		"a leaf removed, its intermediate left, then another":     {slices.Concat(interPEM, leaf3, inter2PEM), "PEM block 2" + caFirst},
		"a self-signed CA:TRUE, then another":                     {slices.Concat(selfCA, selfCA2), "PEM block 2" + caFirst},
		"a v1 root, then its leaf":                                {slices.Concat(v1RootPEM, v1Leaf), "PEM block 2" + caFirst},
		"a root without basicConstraints, then its leaf":          {slices.Concat(noBCPEM, noBCLeaf), "PEM block 2" + caFirst},
		"a CA, then a certificate x509 cannot read":               {slices.Concat(interPEM, unparsed), "PEM block 2" + caFirst},
		"an issuer not marked CA, then its leaf":                  {slices.Concat(plainPEM, plainLeaf), "PEM block 2" + reversed},
		"an issuer not marked CA, then its leaf signed SHA-1":     {slices.Concat(plainPEM, plainLeafSHA1), "PEM block 2" + reversed},
		"an issuer not marked CA, a root, then the issuer's leaf": {slices.Concat(plainPEM, otherRoot, plainLeaf), "PEM block 3" + reversed},
		"a lone intermediate":                                     {interPEM, "PEM block 1: a CA certificate that is not self-signed"},
		"a damaged first certificate":                             {slices.Concat(damaged, leaf), `PEM block 1: not a PEM public key of Ed25519, RSA or ECDSA: a "CERTIFICATE" block that does not parse (x509: `},
	} {
		_, err := verifiedBy(t, tc.file, signers)
		require.ErrorContains(t, err, tc.want, name)
	}
}

// A requester keyed by a certificate rotates through public keys: a
// certificate appended to its file is not loaded, as only a file's first
// certificate is, and the file gives its old and new keys instead until
// the old one goes.
func TestRequesterCertificateRotation(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	ca, caPEM := certificate(t, &caKey.PublicKey, caKey, nil, true)
	oldKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, oldCert := certificate(t, &oldKey.PublicKey, caKey, ca, false)
	newKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	_, newCert := certificate(t, &newKey.PublicKey, caKey, ca, false)
	dir := t.TempDir()
	f := filepath.Join(dir, "billing.pem")
	require.NoError(t, os.WriteFile(f, slices.Concat(oldCert, caPEM), 0o600))
	v, reloads := reloadedByTest(t, Config{RequesterKeysPath: dir})
	verify := func(key *ecdsa.PrivateKey) error {
		_, err := v.Verify(sign(t, jwt.SigningMethodES256, key, claims("billing", time.Minute)))
		return err
	}
	for _, tc := range []struct {
		name     string
		file     []byte
		verified []*ecdsa.PrivateKey
		refused  []*ecdsa.PrivateKey
	}{
		{"the new certificate and its chain appended", slices.Concat(oldCert, caPEM, newCert, caPEM), []*ecdsa.PrivateKey{oldKey}, []*ecdsa.PrivateKey{newKey, caKey}},
		{"the old and new public keys", slices.Concat(pemBlock(t, &oldKey.PublicKey), pemBlock(t, &newKey.PublicKey)), []*ecdsa.PrivateKey{oldKey, newKey}, []*ecdsa.PrivateKey{caKey}},
		{"the new certificate and its chain", slices.Concat(newCert, caPEM), []*ecdsa.PrivateKey{newKey}, []*ecdsa.PrivateKey{oldKey, caKey}},
	} {
		require.NoError(t, os.WriteFile(f+".new", tc.file, 0o600))
		require.NoError(t, os.Rename(f+".new", f))
		v.meta = "" // read at once, not 2 s after the write
		v.reload()
		require.NoError(t, <-reloads, tc.name)
		for _, k := range tc.verified {
			require.NoError(t, verify(k), tc.name)
		}
		for _, k := range tc.refused {
			require.ErrorIs(t, verify(k), ErrUnauthenticated, tc.name)
		}
	}
}

// A key x509 reads but no token could be verified with fails the file
// rather than load unsaid: an RSA key crypto/rsa refuses (under 1024 bits,
// an even modulus), an ECDSA key of a curve no ES method takes.
func TestKeyFileUnusableKeys(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	odd := new(big.Int).Add(new(big.Int).Lsh(big.NewInt(1), 511), big.NewInt(1))
	even := new(big.Int).Lsh(big.NewInt(1), 2047)
	for name, tc := range map[string]struct {
		key  any
		want string
	}{
		"a P-224 key":               {&p224.PublicKey, "PEM block 1: an ECDSA key of curve P-224, not P-256, P-384 or P-521 (ES256, ES384, ES512): no token could be verified with it"},
		"a 512-bit RSA key":         {&rsa.PublicKey{N: odd, E: 65537}, "PEM block 1: an RSA key that crypto/rsa refuses (crypto/rsa: 512-bit keys are insecure"},
		"an RSA key's even modulus": {&rsa.PublicKey{N: even, E: 65537}, "PEM block 1: an RSA key that crypto/rsa refuses (crypto/rsa: public modulus is even): no token could be verified with it"},
	} {
		_, err := verifiedBy(t, pemBlock(t, tc.key), nil)
		require.ErrorContains(t, err, tc.want, name)
	}
}
