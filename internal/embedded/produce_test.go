package embedded

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// roundTrip sends req on conn as any client would, bypassing a client's
// version negotiation, and reads its response.
func roundTrip(t *testing.T, conn net.Conn, req kmsg.Request) (kmsg.Response, error) {
	t.Helper()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("embedded-test"))
	if _, err := conn.Write(f.AppendRequest(nil, req, 1)); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	buf = buf[4:] // correlation ID
	if resp.IsFlexible() && req.Key() != int16(kmsg.ApiVersions) {
		require.Equal(t, byte(0), buf[0], "response header tags")
		buf = buf[1:]
	}
	return resp, resp.ReadFrom(buf)
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

func apiVersions(t *testing.T, addr string) *kmsg.ApiVersionsResponse {
	t.Helper()
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	req.ClientSoftwareName, req.ClientSoftwareVersion = "embedded-test", "1"
	resp, err := roundTrip(t, dial(t, addr), req)
	require.NoError(t, err)
	return resp.(*kmsg.ApiVersionsResponse)
}

// kfake's Produce v13 handler keys its answers by topic name, "" for a
// topic named by ID before it resolves the ID, so a second such topic
// indexes an empty slice, and the panic ends the process hosting the
// broker: two topics by IDs it does not know (a client that learned the
// IDs before the broker lost its data sends that), or two known ones with
// an invalid acks. The broker must refuse v13 (it advertises v12 at most)
// and stay up.
func TestProduceByTopicIDs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := start(t, ctx, t.TempDir(), map[string]Topic{"a": {Partitions: 1}, "b": {Partitions: 1}}, zerolog.Nop())

	for _, c := range []struct {
		acks int16
		ids  [][16]byte
	}{
		{-1, [][16]byte{{1}, {2}}},
		{2, [][16]byte{b.Cluster().TopicInfo("a").TopicID, b.Cluster().TopicInfo("b").TopicID}},
	} {
		req := kmsg.NewPtrProduceRequest()
		req.Version = 13
		req.Acks = c.acks
		req.TimeoutMillis = 1000
		for _, id := range c.ids {
			rt := kmsg.NewProduceRequestTopic()
			rt.TopicID = id
			rt.Partitions = append(rt.Partitions, kmsg.NewProduceRequestTopicPartition())
			req.Topics = append(req.Topics, rt)
		}
		// Refused as any unsupported version is, by closing the connection.
		_, err := roundTrip(t, dial(t, b.Addr()), req)
		require.Error(t, err)
	}

	// Still up; and it advertises what kfake does, but for Produce and
	// client telemetry (TestNoClientTelemetry).
	got := apiVersions(t, b.Addr())
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	require.NoError(t, err)
	defer c.Close()
	want := apiVersions(t, c.ListenAddrs()[0])
	want.ApiKeys = slices.DeleteFunc(want.ApiKeys, func(k kmsg.ApiVersionsResponseApiKey) bool {
		return k.ApiKey == int16(kmsg.GetTelemetrySubscriptions) || k.ApiKey == int16(kmsg.PushTelemetry)
	})
	for i, k := range want.ApiKeys {
		if k.ApiKey == int16(kmsg.Produce) {
			want.ApiKeys[i].MaxVersion = 12
		}
	}
	assert.Equal(t, want.ApiKeys, got.ApiKeys)
	assert.Equal(t, want.SupportedFeatures, got.SupportedFeatures)
	assert.Equal(t, want.FinalizedFeatures, got.FinalizedFeatures)
}

// A producer that learned the topics' IDs, then the broker restarts empty
// on the same address (cmd/devkafka without -dir) and recreates the
// topics under new IDs: the producer's next request names both topics.
func TestProducerWithTopicIDsOfALostBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := map[string]Topic{"a": {Partitions: 1}, "b": {Partitions: 1}}
	b, err := Start(ctx, Options{Addr: "127.0.0.1:0", Dir: t.TempDir(), Topics: topics})
	require.NoError(t, err)
	addr := b.Addr()
	// Lingering puts both topics' records in one request.
	cl := client(t, b, kgo.ProducerLinger(100*time.Millisecond))
	defer cl.Close()
	rs := func() []*kgo.Record {
		return []*kgo.Record{{Topic: "a", Value: []byte("1")}, {Topic: "b", Value: []byte("1")}}
	}
	require.NoError(t, cl.ProduceSync(ctx, rs()...).FirstErr())
	b.Close()

	b, err = Start(ctx, Options{Addr: addr, Dir: t.TempDir(), Topics: topics})
	require.NoError(t, err)
	defer b.Close()
	require.NoError(t, cl.ProduceSync(ctx, rs()...).FirstErr())
	assert.Len(t, consume(t, ctx, b, "a", 1), 1)
	assert.Len(t, consume(t, ctx, b, "b", 1), 1)
}
