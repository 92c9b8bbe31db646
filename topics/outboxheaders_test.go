package topics_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func TestHeadersRoundTrip(t *testing.T) {
	for _, hs := range [][]topics.Header{
		nil,
		{{Key: "ce_id", Value: []byte("0193")}},
		{{Key: "", Value: nil}, {Key: "binary", Value: []byte{0, 0xff, '\n', 0x80}}, {Key: "ce_type", Value: []byte("lock.acquired")}},
	} {
		got, err := topics.DecodeHeaders(topics.EncodeHeaders(nil, hs))
		require.NoError(t, err)
		require.Equal(t, len(hs), len(got))
		for i := range hs {
			require.Equal(t, hs[i].Key, got[i].Key)
			require.Equal(t, string(hs[i].Value), string(got[i].Value))
		}
	}
}

func TestHeadersCorrupt(t *testing.T) {
	good := topics.EncodeHeaders(nil, []topics.Header{{Key: "k", Value: []byte("value")}})
	for _, b := range [][]byte{good[:3], good[:6], good[:len(good)-1], {0xff, 0xff, 0xff, 0xff, 'k'}} {
		_, err := topics.DecodeHeaders(b)
		require.ErrorContains(t, err, "corrupt headers")
	}
}
