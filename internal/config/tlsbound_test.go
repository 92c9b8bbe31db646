package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The TLS files are read through a bound, as the secrets' files are: a
// setting naming a huge file by mistake is refused, not read whole at
// start and at every broker dial. A CA bundle of every public root
// (about 200 KiB) is well under it.
func TestKafkaTLSFilesBounded(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM := selfSigned(t)
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, b, 0o600))
		return path
	}
	bundle := write("bundle.pem", bytes.Repeat(certPEM, 256<<10/len(certPEM)+1))
	huge := write("huge.pem", append(bytes.Repeat(certPEM, maxTLSFileBytes/len(certPEM)), make([]byte, maxTLSFileBytes)...))
	cert, key := write("client.pem", certPEM), write("client-key.pem", keyPEM)

	c := Default()
	c.Kafka.BootstrapServers = []string{"k:9092"}
	c.Kafka.TLS = TLSConfig{Enabled: true, CAFile: bundle, CertFile: cert, KeyFile: key}
	_, err := c.KafkaOpts()
	require.NoError(t, err, "a large CA bundle")

	for _, tls := range []TLSConfig{
		{Enabled: true, CAFile: huge},
		{Enabled: true, CertFile: huge, KeyFile: key},
		{Enabled: true, CertFile: cert, KeyFile: huge},
	} {
		c.Kafka.TLS = tls
		_, err := c.KafkaOpts()
		assert.ErrorContains(t, err, fmt.Sprintf("%s is over %d bytes", huge, maxTLSFileBytes), "%+v", tls)
	}
}
