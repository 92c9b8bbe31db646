package config

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
)

// tlsFiles is a value loaded from files (a CA pool, a certificate and its
// key) and loaded again when their contents change: a CA bundle or client
// certificate renewed in place (cert-manager, Strimzi, a Kubernetes Secret's
// mount) is used from the next connection on, without a restart. Contents
// that do not load (a key written before its certificate) leave the last
// good value in use, and are tried again at the next connection.
type tlsFiles[T any] struct {
	paths []string
	load  func(contents [][]byte) (T, error)

	mu       sync.Mutex
	contents [][]byte // as last loaded
	value    T
}

// get returns the value of the files as they are now, or the last good one
// when they cannot be read or loaded; an error only if none ever loaded.
func (f *tlsFiles[T]) get() (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	contents := make([][]byte, len(f.paths))
	var err error
	for i, p := range f.paths {
		if contents[i], err = os.ReadFile(p); err != nil {
			break
		}
	}
	if err == nil && f.contents != nil && equalContents(contents, f.contents) {
		return f.value, nil
	}
	var v T
	if err == nil {
		v, err = f.load(contents)
	}
	if err != nil {
		if f.contents != nil {
			return f.value, nil
		}
		return v, err
	}
	f.contents, f.value = contents, v
	return v, nil
}

func equalContents(a, b [][]byte) bool {
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func loadCA(contents [][]byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(contents[0]) {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}

func loadKeyPair(contents [][]byte) (*tls.Certificate, error) {
	pair, err := tls.X509KeyPair(contents[0], contents[1])
	return &pair, err
}

// verifyChain verifies the broker's certificate chain against roots, as
// crypto/tls would with RootCAs (its VerifyConnection example): Go's TLS
// has no callback that gives the roots per connection.
func verifyChain(roots *x509.CertPool, cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the broker sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: roots, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("tls: verifying the broker's certificate against KAFKA_TLS_CA_FILE: %w", err)
	}
	return nil
}
