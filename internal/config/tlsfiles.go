package config

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/omninode/lockworker/internal/secretfile"
)

// tlsFiles is a value loaded from files (a CA pool, a certificate and its
// key) and loaded again when their contents change: a CA bundle or client
// certificate renewed in place (cert-manager, Strimzi, a Kubernetes Secret's
// mount) is used from the next connection on, without a restart. Contents
// that do not load fail the connection, naming the file, rather than leave
// the old ones in use unseen (a CA removed by a renewal that does not
// parse would stay trusted).
type tlsFiles[T any] struct {
	what  string // the variables, for errors
	paths []string
	load  func(contents [][]byte) (T, error)

	mu       sync.Mutex
	contents [][]byte // as last loaded
	value    T
}

// maxTLSFileBytes bounds a TLS file: a CA bundle of every public root is
// about 200 KiB.
const maxTLSFileBytes = 1 << 20

// get returns the value of the files as they are now.
func (f *tlsFiles[T]) get() (T, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var none T
	contents := make([][]byte, len(f.paths))
	for i, p := range f.paths {
		b, err := secretfile.ReadAtMost(p, maxTLSFileBytes)
		if err != nil {
			return none, fmt.Errorf("%s: %s %w", f.what, p, err)
		}
		contents[i] = b
	}
	if f.contents != nil && slices.EqualFunc(contents, f.contents, bytes.Equal) {
		return f.value, nil
	}
	v, err := f.load(contents)
	if err != nil {
		return none, fmt.Errorf("%s: %s: %w", f.what, strings.Join(f.paths, ", "), err)
	}
	f.contents, f.value = contents, v
	return v, nil
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

// dialTLS dials a broker as kgo.DialTLSConfig does (tc cloned, the server
// name taken from the address when tc has none, a 10 s timeout), with the
// CA file's roots as they are at this dial (ca; nil: tc's own roots) and
// Go's own verification, which checks the name whether it is a host or an
// IP address.
func dialTLS(tc *tls.Config, ca *tlsFiles[*x509.CertPool]) func(ctx context.Context, network, host string) (net.Conn, error) {
	return func(ctx context.Context, network, host string) (net.Conn, error) {
		c := tc.Clone()
		if ca != nil {
			roots, err := ca.get()
			if err != nil {
				return nil, err
			}
			c.RootCAs = roots
		}
		if c.ServerName == "" {
			server, _, err := net.SplitHostPort(host)
			if err != nil {
				return nil, fmt.Errorf("unable to split host:port for dialing: %w", err)
			}
			c.ServerName = server
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: c}
		return d.DialContext(ctx, network, host)
	}
}

// dialTimeout is kgo's default dial timeout, which its own TLS dialer uses.
const dialTimeout = 10 * time.Second
