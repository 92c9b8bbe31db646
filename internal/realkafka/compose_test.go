package realkafka

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The containers are the compose file's services: Kafka's image and KRaft
// settings as the file has them, only its host listener advertised at the
// port Docker maps. Runs without Docker.
func TestComposeServices(t *testing.T) {
	svcs, err := composeServices(context.Background())
	require.NoError(t, err)
	kafka, pg := svcs["kafka"], svcs["postgres"]
	require.True(t, strings.HasPrefix(kafka.Image, "apache/kafka:"), kafka.Image)
	require.NotEmpty(t, pg.Image)
	require.NotEmpty(t, kafka.Hostname, "KAFKA_CONTROLLER_QUORUM_VOTERS names the host")
	env := environment(kafka)
	require.Contains(t, env["KAFKA_PROCESS_ROLES"], "controller", "KRaft")
	require.NotEmpty(t, environment(pg)["POSTGRES_PASSWORD"], "defaults are interpolated")

	port, err := hostListener(kafka)
	require.NoError(t, err)
	adv, err := advertise(env["KAFKA_ADVERTISED_LISTENERS"], port, "192.0.2.7:49153")
	require.NoError(t, err)
	require.Contains(t, strings.Split(adv, ","), "HOST://192.0.2.7:49153")
	require.Contains(t, strings.Split(adv, ","), "PLAINTEXT://"+kafka.Hostname+":9092", "the inter-broker listener stays")
	require.Len(t, strings.Split(adv, ","), len(strings.Split(env["KAFKA_ADVERTISED_LISTENERS"], ",")))
}

func TestAdvertiseNoListener(t *testing.T) {
	_, err := advertise("PLAINTEXT://kafka:9092", 29092, "localhost:1")
	require.ErrorContains(t, err, "no listener on port 29092")
}
