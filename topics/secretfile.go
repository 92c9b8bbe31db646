package topics

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxSecretFileBytes bounds a secret's file (ReadSecretFile): a connection
// string, a token or a PEM key is far smaller.
const MaxSecretFileBytes = 64 << 10

// ReadSecretFile reads the secret file at path (the workers' name_FILE
// settings, an SDK's token or signing key file), at most
// MaxSecretFileBytes: a path that names something endless by mistake (a
// device, a FIFO, a log) fails rather than fill the memory. Its errors do
// not name path, in case the secret itself was set there by mistake.
func ReadSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot be opened: %w", pathless(err))
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFileBytes+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("cannot be read: %w", pathless(err))
	case len(b) > MaxSecretFileBytes:
		return nil, fmt.Errorf("is over %d bytes", MaxSecretFileBytes)
	}
	return b, nil
}

// pathless is err without the path an *os.PathError names.
func pathless(err error) error {
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}
