package config

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/secretfile"
	"github.com/omninode/lockworker/topics"
)

// env turns a map into a getenv.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := FromEnv(env(nil))
	require.NoError(t, err)
	assert.Equal(t, Default(), c)

	assert.Equal(t, PostgresConfig{Host: "127.0.0.1", Port: 5432, Database: "lockworker", User: "postgres", MinConns: 1, MaxConns: 10, AttemptTimeout: 15 * time.Second, UnreachableTimeout: 15 * time.Second}, c.Postgres)
	assert.Equal(t, 30*time.Second, c.DefaultLeaseDuration)
	assert.Equal(t, 60*time.Second, c.CleanupInterval)
	assert.Equal(t, 100*time.Millisecond, c.AcquireRetryDelay)
	assert.Empty(t, c.Kafka.BootstrapServers)
	assert.True(t, c.EmbeddedKafka())
	assert.Equal(t, "lockworker", c.Kafka.ConsumerGroup)
	assert.Equal(t, TLSConfig{}, c.Kafka.TLS)
	assert.Equal(t, SASLConfig{}, c.Kafka.SASL)
	assert.Equal(t, TopicsConfig{
		Commands:              "locks.commands",
		LockAcquired:          "locks.lock.acquired.v1",
		LockReleased:          "locks.lock.released.v1",
		LockExpired:           "locks.lock.expired.v1",
		LockRevoked:           "locks.lock.revoked.v1",
		DeadLetter:            "locks.commands.dlq",
		LockState:             "locks.state.v1",
		CommandsPartitions:    16,
		ReplicationFactor:     -1,
		ReplyPrefix:           "locks.replies.",
		AutoCreateReplyTopics: true,
		MaxReplyTopics:        1000,
	}, c.Topics)
	assert.Equal(t, 5, c.RelayMaxAttempts)
	assert.True(t, c.VacuumEnabled)
	assert.True(t, c.CompactStoredEvents)
	assert.Equal(t, 2*time.Second, c.VacuumInterval)
	assert.Equal(t, 10000, c.VacuumDeadRows)
	assert.Equal(t, 24*time.Hour, c.RequestRetention)
	assert.Equal(t, 7*24*time.Hour, c.LockEventsRetention)
	assert.Equal(t, ":8062", c.HTTPAddr)
	assert.Equal(t, zerolog.InfoLevel, c.LogLevel)
	assert.Equal(t, "json", c.LogFormat)
	assert.True(t, strings.HasSuffix(c.InstanceID, "-"+strconv.Itoa(os.Getpid())), c.InstanceID)
	assert.Equal(t, 6*time.Second, c.Kafka.SessionTimeout)
	assert.Equal(t, 100*time.Millisecond, c.Kafka.HeartbeatInterval)
	assert.Equal(t, "classic", c.Kafka.GroupProtocol)
	assert.Equal(t, "snappy", c.Kafka.Compression, "franz-go's default, what the relay wrote before the setting")
	assert.Equal(t, "require", c.TokenFloorCheck)
	assert.False(t, c.Kafka.StaticMembership)
	assert.Empty(t, c.Kafka.GroupInstanceID)
	assert.Equal(t, EmbeddedConfig{Addr: "127.0.0.1:9092", Dir: ".data/kafka", MinSessionTimeout: 6 * time.Second}, c.Embedded)
	assert.Equal(t, "postgres://postgres@127.0.0.1:5432/lockworker", c.PostgresURL())
	assert.NoError(t, c.Validate())
}

func TestOverrides(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want func(*Config)
	}{
		{map[string]string{"DATABASE_URL": "postgres://u:p@db:6543/x?sslmode=require"}, func(c *Config) { c.Postgres.URL = "postgres://u:p@db:6543/x?sslmode=require" }},
		{map[string]string{"POSTGRES_HOST": "db.internal"}, func(c *Config) { c.Postgres.Host = "db.internal" }},
		{map[string]string{"POSTGRES_PORT": "5436"}, func(c *Config) { c.Postgres.Port = 5436 }},
		{map[string]string{"POSTGRES_DATABASE": "omninode_bridge"}, func(c *Config) { c.Postgres.Database = "omninode_bridge" }},
		{map[string]string{"POSTGRES_USER": "app"}, func(c *Config) { c.Postgres.User = "app" }},
		{map[string]string{"POSTGRES_PASSWORD": " s3cret "}, func(c *Config) { c.Postgres.Password = " s3cret " }}, // secrets are not trimmed
		{map[string]string{"POSTGRES_MIN_CONNECTIONS": "5"}, func(c *Config) { c.Postgres.MinConns = 5 }},
		{map[string]string{"POSTGRES_MIN_CONNECTIONS": "0"}, func(c *Config) { c.Postgres.MinConns = 0 }},
		{map[string]string{"POSTGRES_MAX_CONNECTIONS": "20"}, func(c *Config) { c.Postgres.MaxConns = 20 }},
		{map[string]string{"POSTGRES_ATTEMPT_TIMEOUT": "60"}, func(c *Config) { c.Postgres.AttemptTimeout = time.Minute }},
		{map[string]string{"POSTGRES_UNREACHABLE_TIMEOUT": "0"}, func(c *Config) { c.Postgres.UnreachableTimeout = 0 }},
		{map[string]string{"POSTGRES_UNREACHABLE_TIMEOUT": "30"}, func(c *Config) { c.Postgres.UnreachableTimeout = 30 * time.Second }},
		{map[string]string{"DEFAULT_LEASE_DURATION": "30.0"}, func(c *Config) {}},
		{map[string]string{"DEFAULT_LEASE_DURATION": "0.1"}, func(c *Config) { c.DefaultLeaseDuration = 100 * time.Millisecond }},
		{map[string]string{"DEFAULT_LEASE_DURATION": " 2.5 "}, func(c *Config) { c.DefaultLeaseDuration = 2500 * time.Millisecond }},
		{map[string]string{"CLEANUP_INTERVAL": "120"}, func(c *Config) { c.CleanupInterval = 2 * time.Minute }},
		{map[string]string{"COMPACT_STORED_EVENTS": "false"}, func(c *Config) { c.CompactStoredEvents = false }},
		{map[string]string{"ACQUIRE_RETRY_DELAY": "0.25"}, func(c *Config) { c.AcquireRetryDelay = 250 * time.Millisecond }},
		{map[string]string{"VACUUM_ENABLED": "false", "VACUUM_INTERVAL": "0.5", "VACUUM_DEAD_ROWS": "500"}, func(c *Config) {
			c.VacuumEnabled, c.VacuumInterval, c.VacuumDeadRows = false, 500*time.Millisecond, 500
		}},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093,,k3"}, func(c *Config) { c.Kafka.BootstrapServers = []string{"k1:9092", "k2:9093", "k3"} }},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "[::1]:9092"}, func(c *Config) { c.Kafka.BootstrapServers = []string{"[::1]:9092"} }},
		{map[string]string{"KAFKA_CONSUMER_GROUP": "lw-dev"}, func(c *Config) { c.Kafka.ConsumerGroup = "lw-dev" }},
		{map[string]string{"KAFKA_SESSION_TIMEOUT": "10", "KAFKA_HEARTBEAT_INTERVAL": "1"}, func(c *Config) {
			c.Kafka.SessionTimeout, c.Kafka.HeartbeatInterval = 10*time.Second, time.Second
		}},
		{map[string]string{"KAFKA_GROUP_PROTOCOL": "Consumer"}, func(c *Config) { c.Kafka.GroupProtocol = "consumer" }},
		{map[string]string{"KAFKA_COMPRESSION": "snappy"}, func(c *Config) {}},
		{map[string]string{"KAFKA_COMPRESSION": "none"}, func(c *Config) { c.Kafka.Compression = "none" }},
		{map[string]string{"KAFKA_COMPRESSION": " GZIP "}, func(c *Config) { c.Kafka.Compression = "gzip" }},
		{map[string]string{"KAFKA_COMPRESSION": "lz4"}, func(c *Config) { c.Kafka.Compression = "lz4" }},
		{map[string]string{"TOKEN_FLOOR_CHECK": "Warn"}, func(c *Config) { c.TokenFloorCheck = "warn" }},
		{map[string]string{"TOKEN_FLOOR_CHECK": "off"}, func(c *Config) { c.TokenFloorCheck = "off" }},
		{map[string]string{"TOKEN_FLOOR_CHECK": "require"}, func(c *Config) {}},
		{map[string]string{"KAFKA_STATIC_MEMBERSHIP": "true", "INSTANCE_ID": "lockworker-0"}, func(c *Config) {
			c.Kafka.StaticMembership, c.Kafka.GroupInstanceID, c.InstanceID = true, "lockworker-0", "lockworker-0"
		}},
		{map[string]string{"KAFKA_STATIC_MEMBERSHIP": "true"}, func(c *Config) {
			host, _ := os.Hostname() // stable across restarts, unlike the default INSTANCE_ID
			c.Kafka.StaticMembership, c.Kafka.GroupInstanceID = true, host
		}},
		{map[string]string{"EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT": "0.5"}, func(c *Config) { c.Embedded.MinSessionTimeout = 500 * time.Millisecond }},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CA_FILE": "/ca.pem", "KAFKA_TLS_CERT_FILE": "/c.pem", "KAFKA_TLS_KEY_FILE": "/k.pem", "KAFKA_TLS_INSECURE_SKIP_VERIFY": "1"}, func(c *Config) {
			c.Kafka.BootstrapServers = []string{"k:9092"}
			c.Kafka.TLS = TLSConfig{Enabled: true, CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem", InsecureSkipVerify: true}
		}},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "scram-sha-512", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"}, func(c *Config) {
			c.Kafka.BootstrapServers = []string{"k:9092"}
			c.Kafka.SASL = SASLConfig{Mechanism: "SCRAM-SHA-512", Username: "svc", Password: "pw"}
		}},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"}, func(c *Config) {
			c.Kafka.BootstrapServers = []string{"k:9092"}
			c.Kafka.SASL = SASLConfig{Mechanism: "PLAIN", Username: "svc", Password: "pw"}
		}},
		{map[string]string{"KAFKA_TOPIC_COMMANDS": "dev.locks.commands"}, func(c *Config) { c.Topics.Commands = "dev.locks.commands" }},
		{map[string]string{"KAFKA_TOPIC_LOCK_ACQUIRED": "dev.omninode-bridge.lock.acquired.v1"}, func(c *Config) { c.Topics.LockAcquired = "dev.omninode-bridge.lock.acquired.v1" }},
		{map[string]string{"KAFKA_TOPIC_LOCK_RELEASED": "dev.released"}, func(c *Config) { c.Topics.LockReleased = "dev.released" }},
		{map[string]string{"KAFKA_TOPIC_LOCK_EXPIRED": "dev.expired"}, func(c *Config) { c.Topics.LockExpired = "dev.expired" }},
		{map[string]string{"KAFKA_TOPIC_DEAD_LETTER": "dev.dlq"}, func(c *Config) { c.Topics.DeadLetter = "dev.dlq" }},
		{map[string]string{"COMMANDS_PARTITIONS": "64"}, func(c *Config) { c.Topics.CommandsPartitions = 64 }},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "3", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, func(c *Config) {
			c.Topics.ReplicationFactor, c.Kafka.BootstrapServers = 3, []string{"k:9092"}
		}},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "1"}, func(c *Config) { c.Topics.ReplicationFactor = 1 }},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "32767", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, func(c *Config) {
			c.Topics.ReplicationFactor, c.Kafka.BootstrapServers = 32767, []string{"k:9092"}
		}},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": " -1 "}, func(c *Config) { c.Topics.ReplicationFactor = -1 }},
		{map[string]string{"REPLY_TOPIC_PREFIX": "dev.replies."}, func(c *Config) { c.Topics.ReplyPrefix = "dev.replies." }},
		{map[string]string{"AUTO_CREATE_REPLY_TOPICS": "false"}, func(c *Config) { c.Topics.AutoCreateReplyTopics = false }},
		{map[string]string{"AUTO_CREATE_REPLY_TOPICS": "off"}, func(c *Config) { c.Topics.AutoCreateReplyTopics = false }},
		{map[string]string{"RELAY_MAX_ATTEMPTS": "9"}, func(c *Config) { c.RelayMaxAttempts = 9 }},
		{map[string]string{"DEAD_LETTER_MAX_BYTES": "900000"}, func(c *Config) { c.DeadLetterMaxBytes = 900000 }},
		{map[string]string{"REQUEST_RETENTION": "3600"}, func(c *Config) { c.RequestRetention = time.Hour }},
		{map[string]string{"LOCK_EVENTS_RETENTION": "86400"}, func(c *Config) { c.LockEventsRetention = 24 * time.Hour }},
		{map[string]string{"LOCK_EVENTS_RETENTION": "0"}, func(c *Config) { c.LockEventsRetention = 0 }},
		{map[string]string{"HTTP_ADDR": "127.0.0.1:9000"}, func(c *Config) { c.HTTPAddr = "127.0.0.1:9000" }},
		{map[string]string{"HTTP_ADDR": "127.0.0.1:0"}, func(c *Config) { c.HTTPAddr = "127.0.0.1:0" }}, // a free port
		{map[string]string{"HTTP_ADDR": "[::1]:65535"}, func(c *Config) { c.HTTPAddr = "[::1]:65535" }},
		{map[string]string{"LOG_LEVEL": "DEBUG"}, func(c *Config) { c.LogLevel = zerolog.DebugLevel }},
		{map[string]string{"LOG_LEVEL": "warning"}, func(c *Config) { c.LogLevel = zerolog.WarnLevel }},
		{map[string]string{"LOG_FORMAT": "Console"}, func(c *Config) { c.LogFormat = "console" }},
		{map[string]string{"INSTANCE_ID": "worker-a"}, func(c *Config) { c.InstanceID = "worker-a" }},
		{map[string]string{"EMBEDDED_KAFKA_ADDR": "0.0.0.0:19092"}, func(c *Config) { c.Embedded.Addr = "0.0.0.0:19092" }},
		{map[string]string{"EMBEDDED_KAFKA_DIR": "/var/lib/lockworker/kafka"}, func(c *Config) { c.Embedded.Dir = "/var/lib/lockworker/kafka" }},
		{map[string]string{"POSTGRES_HOST": "   "}, func(c *Config) {}}, // blank is unset
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			want := Default()
			tc.want(&want)
			got, err := FromEnv(env(tc.env))
			require.NoError(t, err)
			assert.Equal(t, want, got)
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DEFAULT_LEASE_DURATION": "abc"}, `DEFAULT_LEASE_DURATION: "abc" is not a number of seconds`},
		{map[string]string{"DEFAULT_LEASE_DURATION": "30s"}, `DEFAULT_LEASE_DURATION: "30s" is not a number of seconds`},
		{map[string]string{"DEFAULT_LEASE_DURATION": "NaN"}, `DEFAULT_LEASE_DURATION: "NaN" is not a number of seconds`},
		{map[string]string{"DEFAULT_LEASE_DURATION": "0"}, `DEFAULT_LEASE_DURATION: "0" is out of range 0.1..86400 seconds`},
		{map[string]string{"DEFAULT_LEASE_DURATION": "86401"}, `DEFAULT_LEASE_DURATION: "86401" is out of range`},
		{map[string]string{"CLEANUP_INTERVAL": "-1"}, `CLEANUP_INTERVAL: "-1" is out of range`},
		{map[string]string{"ACQUIRE_RETRY_DELAY": "6"}, `ACQUIRE_RETRY_DELAY: "6" is out of range 0.001..5 seconds`},
		{map[string]string{"REQUEST_RETENTION": "10"}, `REQUEST_RETENTION: "10" is out of range 60..31536000 seconds`},
		{map[string]string{"LOCK_EVENTS_RETENTION": "x"}, `LOCK_EVENTS_RETENTION: "x" is not a number of seconds`},
		{map[string]string{"LOCK_EVENTS_RETENTION": "30"}, `LOCK_EVENTS_RETENTION: "30s" must be 0 (no history) or at least 60 s`},
		{map[string]string{"POSTGRES_PORT": "54x"}, `POSTGRES_PORT: "54x" is not an integer`},
		{map[string]string{"POSTGRES_PORT": "70000"}, `POSTGRES_PORT: "70000" is out of range 1..65535`},
		{map[string]string{"POSTGRES_MAX_CONNECTIONS": "0"}, `POSTGRES_MAX_CONNECTIONS: "0" is out of range 1..1000`},
		{map[string]string{"POSTGRES_ATTEMPT_TIMEOUT": "0"}, `POSTGRES_ATTEMPT_TIMEOUT: "0" is out of range 1..3600`},
		{map[string]string{"POSTGRES_UNREACHABLE_TIMEOUT": "3601"}, `POSTGRES_UNREACHABLE_TIMEOUT: "3601" is out of range 0..3600`},
		{map[string]string{"POSTGRES_UNREACHABLE_TIMEOUT": "2.5"}, `POSTGRES_UNREACHABLE_TIMEOUT: "2.5s" must be 0 (never) or at least 3 s`},
		{map[string]string{"POSTGRES_UNREACHABLE_TIMEOUT": "1e-10"}, `POSTGRES_UNREACHABLE_TIMEOUT: "1e-10" is above 0 but below a nanosecond`},
		{map[string]string{"LOCK_EVENTS_RETENTION": "0.0000000004"}, `LOCK_EVENTS_RETENTION: "0.0000000004" is above 0 but below a nanosecond`},
		{map[string]string{"POSTGRES_MIN_CONNECTIONS": "20"}, `POSTGRES_MIN_CONNECTIONS: "20" is more than POSTGRES_MAX_CONNECTIONS (10)`},
		{map[string]string{"COMMANDS_PARTITIONS": "0"}, `COMMANDS_PARTITIONS: "0" is out of range 1..10000`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "0"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "0" is not -1 (the broker's default.replication.factor) or 1..32767`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "-2"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "-2" is not -1`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "32768"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "32768" is not -1`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "three"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "three" is not -1 (the broker's default.replication.factor) or 1..32767`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "3.0"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "3.0" is not -1 (the broker's default.replication.factor) or 1..32767`},
		{map[string]string{"RELAY_MAX_ATTEMPTS": "2.5"}, `RELAY_MAX_ATTEMPTS: "2.5" is not an integer`},
		{map[string]string{"DEAD_LETTER_MAX_BYTES": "1000000"}, `DEAD_LETTER_MAX_BYTES: "1000000" is out of range 1024..900000`},
		{map[string]string{"AUTO_CREATE_REPLY_TOPICS": "maybe"}, `AUTO_CREATE_REPLY_TOPICS: "maybe" is not a boolean`},
		{map[string]string{"VACUUM_ENABLED": "sometimes"}, `VACUUM_ENABLED: "sometimes" is not a boolean`},
		{map[string]string{"VACUUM_INTERVAL": "0"}, `VACUUM_INTERVAL: "0" is out of range 0.1..3600 seconds`},
		{map[string]string{"VACUUM_DEAD_ROWS": "10"}, `VACUUM_DEAD_ROWS: "10" is out of range 100..1000000000`},
		{map[string]string{"LOG_LEVEL": "loud"}, `LOG_LEVEL: "loud" is not one of`},
		{map[string]string{"LOG_FORMAT": "xml"}, `LOG_FORMAT: "xml" is not json or console`},
		{map[string]string{"HTTP_ADDR": "8062"}, `HTTP_ADDR: "8062" is not host:port`},
		{map[string]string{"EMBEDDED_KAFKA_ADDR": "localhost"}, `EMBEDDED_KAFKA_ADDR: "localhost" is not host:port`},
		// Every bad port is refused at start, not when first used.
		{map[string]string{"HTTP_ADDR": ":99999"}, `HTTP_ADDR: ":99999" is not host:port with a port of 0..65535`},
		{map[string]string{"HTTP_ADDR": ":http"}, `HTTP_ADDR: ":http" is not host:port`},
		{map[string]string{"HTTP_ADDR": "127.0.0.1:-1"}, `HTTP_ADDR: "127.0.0.1:-1" is not host:port`},
		{map[string]string{"EMBEDDED_KAFKA_ADDR": "127.0.0.1:65536"}, `EMBEDDED_KAFKA_ADDR: "127.0.0.1:65536" is not host:port`},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "kafka:0"}, `KAFKA_BOOTSTRAP_SERVERS: "kafka:0" has "kafka:0", which is not host[:port] with a port of 1..65535`},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:70000"}, `has "k2:70000", which is not host[:port]`},
		{map[string]string{"INSTANCE_ID": "a b"}, `INSTANCE_ID: "a b" must be 1..255 printable ASCII`},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k1:90x2"}, `KAFKA_BOOTSTRAP_SERVERS: "k1:90x2" has "k1:90x2", which is not host[:port]`},
		{map[string]string{"KAFKA_BOOTSTRAP_SERVERS": " , "}, `KAFKA_BOOTSTRAP_SERVERS: "," lists no broker`},
		{map[string]string{"KAFKA_TOPIC_COMMANDS": "locks commands"}, `KAFKA_TOPIC_COMMANDS: "locks commands" is not a valid Kafka topic name`},
		{map[string]string{"KAFKA_TOPIC_DEAD_LETTER": "locks.commands"}, `KAFKA_TOPIC_DEAD_LETTER: "locks.commands" is the same topic as KAFKA_TOPIC_COMMANDS`},
		{map[string]string{"REPLY_TOPIC_PREFIX": "locks."}, `KAFKA_TOPIC_COMMANDS: "locks.commands" starts with REPLY_TOPIC_PREFIX "locks."`},
		{map[string]string{"REPLY_TOPIC_PREFIX": "locks/replies/"}, `REPLY_TOPIC_PREFIX: "locks/replies/" is not a non-empty prefix`},
		{map[string]string{"KAFKA_TLS_CA_FILE": "/ca.pem", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, `KAFKA_TLS_CA_FILE: "/ca.pem" is set but KAFKA_TLS_ENABLED is not true`},
		{map[string]string{"KAFKA_TLS_ENABLED": "yes", "KAFKA_TLS_CERT_FILE": "/c.pem", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, `KAFKA_TLS_CERT_FILE: and KAFKA_TLS_KEY_FILE must be set together`},
		{map[string]string{"KAFKA_TLS_ENABLED": "true"}, `KAFKA_TLS_ENABLED: needs KAFKA_BOOTSTRAP_SERVERS`},
		{map[string]string{"KAFKA_TOPIC_REPLICATION_FACTOR": "2"}, `KAFKA_TOPIC_REPLICATION_FACTOR: "2" needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker is one broker`},
		{map[string]string{"KAFKA_SASL_MECHANISM": "GSSAPI", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, `KAFKA_SASL_MECHANISM: "GSSAPI" is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512`},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, `KAFKA_SASL_PASSWORD: is required with KAFKA_SASL_MECHANISM`},
		{map[string]string{"KAFKA_SASL_USERNAME": "u", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, `KAFKA_SASL_MECHANISM: is required with`},
		{map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, `KAFKA_SASL_MECHANISM: needs KAFKA_BOOTSTRAP_SERVERS`},
		{map[string]string{"KAFKA_SESSION_TIMEOUT": "0.5"}, `KAFKA_SESSION_TIMEOUT: "0.5" is out of range 1..300 seconds`},
		{map[string]string{"KAFKA_SESSION_TIMEOUT": "2", "KAFKA_HEARTBEAT_INTERVAL": "1"}, `KAFKA_HEARTBEAT_INTERVAL: "1s" must be positive and less than a third of KAFKA_SESSION_TIMEOUT (2s)`},
		{map[string]string{"KAFKA_HEARTBEAT_INTERVAL": "0"}, `KAFKA_HEARTBEAT_INTERVAL: "0" is out of range 0.01..60 seconds`},
		{map[string]string{"KAFKA_GROUP_PROTOCOL": "share"}, `KAFKA_GROUP_PROTOCOL: "share" is not classic or consumer`},
		{map[string]string{"KAFKA_COMPRESSION": "brotli"}, `KAFKA_COMPRESSION: "brotli" is not snappy, none, gzip or lz4`},
		{map[string]string{"KAFKA_COMPRESSION": "lz4-high"}, `KAFKA_COMPRESSION: "lz4-high" is not snappy, none, gzip or lz4`},
		{map[string]string{"KAFKA_COMPRESSION": "ZSTD"}, `KAFKA_COMPRESSION: "zstd" is refused: it can compress a lock.status reply more than 256-fold, and the SDK's readers skip such a batch as a decompression bomb; use snappy, none, gzip or lz4`},
		{map[string]string{"TOKEN_FLOOR_CHECK": "sometimes"}, `TOKEN_FLOOR_CHECK: "sometimes" is not require, warn or off`},
		{map[string]string{"KAFKA_STATIC_MEMBERSHIP": "sometimes"}, `KAFKA_STATIC_MEMBERSHIP: "sometimes" is not a boolean`},
		{map[string]string{"KAFKA_STATIC_MEMBERSHIP": "true", "INSTANCE_ID": "w:1"}, `KAFKA_STATIC_MEMBERSHIP: "w:1" needs a group.instance.id`},
		{map[string]string{"EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT": "0"}, `EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT: "0" is out of range 0.1..300 seconds`},
		{map[string]string{"DATABASE_URL": "mysql://root:hunter2@db/x"}, `DATABASE_URL: is neither a postgres:// URL nor a key=value connection string`},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			c, err := FromEnv(env(tc.env))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, Config{}, c)
			assert.NotContains(t, err.Error(), "hunter2")
		})
	}

	t.Run("every error is reported", func(t *testing.T) {
		_, err := FromEnv(env(map[string]string{"POSTGRES_PORT": "x", "LOG_FORMAT": "xml", "CLEANUP_INTERVAL": "0"}))
		require.Error(t, err)
		for _, name := range []string{"POSTGRES_PORT", "LOG_FORMAT", "CLEANUP_INTERVAL"} {
			assert.Contains(t, err.Error(), name+":")
		}
	})

	t.Run("Validate checks a Config built in code", func(t *testing.T) {
		c := Default()
		c.Topics.ReplyPrefix = ""
		c.Postgres.MinConns = 50
		c.Topics.ReplicationFactor = 3 // without BootstrapServers: the embedded broker
		err := c.Validate()
		require.Error(t, err)
		assert.Contains(t, err.Error(), "REPLY_TOPIC_PREFIX")
		assert.Contains(t, err.Error(), "POSTGRES_MIN_CONNECTIONS")
		assert.Contains(t, err.Error(), `KAFKA_TOPIC_REPLICATION_FACTOR: "3" needs KAFKA_BOOTSTRAP_SERVERS`)
	})

	t.Run("a session timeout the embedded broker would refuse", func(t *testing.T) {
		_, err := WorkerFromEnv(env(map[string]string{"KAFKA_SESSION_TIMEOUT": "3"}))
		require.ErrorContains(t, err, `KAFKA_SESSION_TIMEOUT: "3s" is less than EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT (6s)`)
		_, err = WorkerFromEnv(env(map[string]string{"KAFKA_SESSION_TIMEOUT": "5", "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT": "5.5", "LOG_FORMAT": "xml"}))
		require.ErrorContains(t, err, `KAFKA_SESSION_TIMEOUT: "5s" is less than EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT (5.5s)`)
		require.ErrorContains(t, err, "LOG_FORMAT", "reported with the other errors")
		c := Default()
		c.Kafka.SessionTimeout = 2 * time.Second
		require.ErrorContains(t, c.ValidateWorker(), "KAFKA_SESSION_TIMEOUT", "a Config built in code for the embedded broker")

		// A program that joins no consumer group (lockctl, devkafka) is
		// not refused for the worker's group setting.
		require.NoError(t, c.Validate())
		_, err = FromEnv(env(map[string]string{"KAFKA_SESSION_TIMEOUT": "3"}))
		require.NoError(t, err)

		for name, e := range map[string]map[string]string{
			"at the minimum":                           {"KAFKA_SESSION_TIMEOUT": "6"},
			"the minimum lowered":                      {"KAFKA_SESSION_TIMEOUT": "3", "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT": "3"},
			"another broker, whose minimum may differ": {"KAFKA_SESSION_TIMEOUT": "3", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"},
			// The group's timeout, which the embedded broker takes at any value.
			"the consumer protocol": {"KAFKA_SESSION_TIMEOUT": "3", "KAFKA_GROUP_PROTOCOL": "consumer"},
		} {
			_, err := WorkerFromEnv(env(e))
			require.NoError(t, err, name)
		}
		// A KAFKA_BOOTSTRAP_SERVERS that does not parse is reported as
		// such, not taken for the embedded broker.
		_, err = WorkerFromEnv(env(map[string]string{"KAFKA_SESSION_TIMEOUT": "3", "KAFKA_BOOTSTRAP_SERVERS": " , "}))
		require.ErrorContains(t, err, "KAFKA_BOOTSTRAP_SERVERS")
		require.NotContains(t, err.Error(), "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT")
	})

	t.Run("a bad KAFKA_BOOTSTRAP_SERVERS is not also a missing one", func(t *testing.T) {
		for _, brokers := range []string{"kafka:0", " , "} {
			_, err := FromEnv(env(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": brokers, "KAFKA_TLS_ENABLED": "true",
				"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p",
				"KAFKA_TOPIC_REPLICATION_FACTOR": "3"}))
			require.ErrorContains(t, err, "KAFKA_BOOTSTRAP_SERVERS: ", "%q", brokers)
			assert.NotContains(t, err.Error(), "needs KAFKA_BOOTSTRAP_SERVERS", "%q", brokers)
		}
	})

	t.Run("a password with a control character", func(t *testing.T) {
		kafka := map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}
		for _, pw := range []string{"hunter2\n", "hunter2\r\n", "hun\ter2", "hunter2\x7f"} {
			for name, e := range map[string]map[string]string{
				"POSTGRES_PASSWORD":   {"POSTGRES_PASSWORD": pw},
				"KAFKA_SASL_PASSWORD": {"KAFKA_SASL_PASSWORD": pw},
			} {
				for k, v := range kafka {
					e[k] = v
				}
				_, err := FromEnv(env(e))
				require.ErrorContains(t, err, name+": holds a control character", "%q", pw)
				assert.NotContains(t, err.Error(), "hunter2", "the secret is not repeated")
			}
		}
		c, err := FromEnv(env(map[string]string{"POSTGRES_PASSWORD": " pass word ", "KAFKA_SASL_PASSWORD": " pass word ",
			"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}))
		require.NoError(t, err, "spaces may be part of a password")
		assert.Equal(t, " pass word ", c.Postgres.Password)
		assert.Equal(t, " pass word ", c.Kafka.SASL.Password)
		// Not used beside DATABASE_URL, so not checked.
		_, err = FromEnv(env(map[string]string{"POSTGRES_PASSWORD": "x\n", "DATABASE_URL": "postgres://db/x"}))
		require.NoError(t, err)
	})

	t.Run("secrets from files", func(t *testing.T) {
		dir := t.TempDir()
		write := func(name, content string) string {
			path := filepath.Join(dir, name)
			require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
			return path
		}
		kafka := map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"}
		e := map[string]string{
			"DATABASE_URL_FILE":        write("db", "postgres://u:p@db/x\n"), // a line end, as editors and echo leave
			"KAFKA_SASL_PASSWORD_FILE": write("sasl", " pass word \r\n"),
			"INSPECT_TOKEN_FILE":       write("token", "s3cret-s3cret-16"),
		}
		maps.Copy(e, kafka)
		c, err := FromEnv(env(e))
		require.NoError(t, err)
		assert.Equal(t, "postgres://u:p@db/x", c.Postgres.URL)
		assert.Equal(t, " pass word ", c.Kafka.SASL.Password, "one line end less, spaces kept")
		assert.Equal(t, "s3cret-s3cret-16", c.InspectToken)

		_, err = FromEnv(env(map[string]string{"INSPECT_TOKEN": "s3cret-s3cret-16", "INSPECT_TOKEN_FILE": write("t2", "s3cret-s3cret-17")}))
		require.ErrorContains(t, err, "INSPECT_TOKEN_FILE: set together with INSPECT_TOKEN")
		assert.NotContains(t, err.Error(), "s3cret", "the secret is not repeated")
		_, err = FromEnv(env(map[string]string{"INSPECT_TOKEN_FILE": filepath.Join(dir, "missing")}))
		require.ErrorContains(t, err, "INSPECT_TOKEN_FILE: the file it names cannot be opened")
		// The secret itself set there by mistake is not echoed.
		_, err = FromEnv(env(map[string]string{"DATABASE_URL_FILE": "postgres://u:hunter2@db/x"}))
		require.ErrorContains(t, err, "DATABASE_URL_FILE: ")
		assert.NotContains(t, err.Error(), "hunter2")
		_, err = FromEnv(env(map[string]string{"INSPECT_TOKEN_FILE": write("big", strings.Repeat("s", secretfile.MaxBytes+1))}))
		require.ErrorContains(t, err, "INSPECT_TOKEN_FILE: ")
		require.ErrorContains(t, err, "is over 65536 bytes")
		// A control character inside is refused as from the variable.
		e = map[string]string{"POSTGRES_PASSWORD_FILE": write("pw", "hunter2\n\n")}
		maps.Copy(e, kafka)
		_, err = FromEnv(env(e))
		require.ErrorContains(t, err, "POSTGRES_PASSWORD: holds a control character")
	})

	t.Run("an INSPECT_TOKEN no header can carry", func(t *testing.T) {
		for _, token := range []string{"s3cret\n", " s3cret", "s3 cret", "s3cr\u00e9t"} {
			_, err := FromEnv(env(map[string]string{"INSPECT_TOKEN": token}))
			require.ErrorContains(t, err, "INSPECT_TOKEN: may hold only visible ASCII", "%q", token)
			assert.NotContains(t, err.Error(), "s3", "the secret is not repeated")
		}
		_, err := FromEnv(env(map[string]string{"INSPECT_TOKEN": "Zm9v-YmFy_~+/=Zm9v"}))
		require.NoError(t, err)
	})

	t.Run("a short INSPECT_TOKEN", func(t *testing.T) {
		for _, token := range []string{"CHANGE-ME", "s3cret", "s3cret-s3cret-1"} {
			_, err := FromEnv(env(map[string]string{"INSPECT_TOKEN": token}))
			require.ErrorContains(t, err, "INSPECT_TOKEN: is shorter than 16 bytes", "%q", token)
			assert.NotContains(t, err.Error(), token, "the secret is not repeated")
		}
		_, err := FromEnv(env(map[string]string{"INSPECT_TOKEN": "s3cret-s3cret-16"}))
		require.NoError(t, err)
	})

	t.Run("an INSPECT_TOKEN too long for the HTTP server's header limit", func(t *testing.T) {
		_, err := FromEnv(env(map[string]string{"INSPECT_TOKEN": strings.Repeat("s", 4097)}))
		require.ErrorContains(t, err, "INSPECT_TOKEN: is longer than 4096 bytes")
		_, err = FromEnv(env(map[string]string{"INSPECT_TOKEN": strings.Repeat("s", 4096)}))
		require.NoError(t, err)
	})
}

func TestPostgresURL(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string
		// what pgx makes of it: user, password, database, host, port
		user, password, database, host string
		port                           uint16
	}{
		{"defaults", nil, "postgres://postgres@127.0.0.1:5432/lockworker", "postgres", "", "lockworker", "127.0.0.1", 5432},
		{"DATABASE_URL wins", map[string]string{"DATABASE_URL": "postgres://a:b@h/d", "POSTGRES_HOST": "ignored"}, "postgres://a:b@h/d", "a", "b", "d", "h", 5432},
		{"key=value DATABASE_URL", map[string]string{"DATABASE_URL": "host=h user=u password=p dbname=d"}, "host=h user=u password=p dbname=d", "u", "p", "d", "h", 5432},
		{"password escaped", map[string]string{"POSTGRES_USER": "us@r", "POSTGRES_PASSWORD": "p@ss:w/rd?#% "}, "postgres://us%40r:p%40ss%3Aw%2Frd%3F%23%25%20@127.0.0.1:5432/lockworker", "us@r", "p@ss:w/rd?#% ", "lockworker", "127.0.0.1", 5432},
		{"database escaped", map[string]string{"POSTGRES_DATABASE": "my db/x?"}, "postgres://postgres@127.0.0.1:5432/my%20db%2Fx%3F", "postgres", "", "my db/x?", "127.0.0.1", 5432},
		{"IPv6 host", map[string]string{"POSTGRES_HOST": "::1", "POSTGRES_PORT": "5433"}, "postgres://postgres@[::1]:5433/lockworker", "postgres", "", "lockworker", "::1", 5433},
	}
	// pgx falls back to these for an empty password; keep the machine's out.
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(env(tc.env))
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.PostgresURL())

			pc, err := pgconn.ParseConfig(c.PostgresURL())
			require.NoError(t, err)
			assert.Equal(t, tc.user, pc.User)
			assert.Equal(t, tc.password, pc.Password)
			assert.Equal(t, tc.database, pc.Database)
			assert.Equal(t, tc.host, pc.Host)
			assert.Equal(t, tc.port, pc.Port)
		})
	}
}

// TestDatabaseURLSplitAsPgxSplitsIt holds DATABASE_URL's checks and
// redaction to pgx's own parser: what pgx accepts is accepted, and the
// password pgx reads is what Redacted masks.
func TestDatabaseURLSplitAsPgxSplitsIt(t *testing.T) {
	t.Setenv("PGPASSWORD", "")
	t.Setenv("PGPASSFILE", filepath.Join(t.TempDir(), "none"))
	for _, dsn := range []string{
		// "://" inside a key=value string is a value, not a scheme.
		"host=db user=u dbname=x password=a://s3cr3t",
		`host=db password=abc\ s3cr3t`,
		`host=db password='a b\' s3cr3t' dbname=x`,
		"host=db password=   s3cr3t dbname=x",
		"host=db password='s3cr3t'dbname=x",
		"postgresql://h1:5432,h2:5433/x?password=s3cr3t",
		"postgres://[::1]:5432/x?password=s3cr3t&",
	} {
		pc, err := pgconn.ParseConfig(dsn)
		require.NoError(t, err, "pgx refuses %s", dsn)
		c, err := FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.NoError(t, err, "pgx accepts %s", dsn)
		assert.Contains(t, pc.Password, "s3cr3t", dsn)
		assert.NotContains(t, c.Redacted()["DATABASE_URL"], "s3cr3t", dsn)
	}
	// pgx takes these, reading part of the password as a host, a database
	// or a user name, which it then logs and dials: refused (a '@' in a
	// database name cannot be told from them).
	for _, dsn := range []string{
		"postgres://app:/s3cr3t@db.internal/locks",
		"postgres://app:8080/s3cr3t@db/x",
		"postgres://app:p@s3cr3t@db/x",
		"postgres://app:p@ss/s3cr3t@db/x",
		"postgres://app:1?s3cr3t#@db/x",
		"postgres://db.internal?user=app&password=s3cr3t@x",
		"postgres://db.internal:5432?user=app&password=s3cr3t@x",
		"postgres://db.internal?user=app&password=a:s3cr3t@x",
		"postgres://db.internal/s3cr3t@locks",
	} {
		_, err := pgconn.ParseConfig(dsn)
		require.NoError(t, err, "pgx refuses %s", dsn)
		_, err = FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.ErrorContains(t, err, "DATABASE_URL: is a URL pgx would read otherwise than meant", dsn)
		assert.NotContains(t, err.Error(), "s3cr3t")
		assert.NotContains(t, redactDatabaseURL(dsn), "s3cr3t", dsn)
	}
	// After a path, the query is the query: its password is masked.
	_, err := FromEnv(env(map[string]string{"DATABASE_URL": "postgres://db.internal/x?user=app&password=s3cr3t@x"}))
	require.NoError(t, err)
	assert.Equal(t, "postgres://db.internal/x?user=app&password=***", redactDatabaseURL("postgres://db.internal/x?user=app&password=s3cr3t@x"))
	for dsn, want := range map[string]string{
		"host=db password='s3cr3t":          "is neither a postgres:// URL nor a key=value connection string",
		"host=db password=s3cr3t dangling":  "is neither a postgres:// URL nor a key=value connection string",
		"mysql://root:s3cr3t@db/x":          "is neither a postgres:// URL nor a key=value connection string",
		"postgres://db/x?password":          "is a URL with a query parameter that is not one key=value",
		"postgres://db/x?password=a=s3cr3t": "is a URL with a query parameter that is not one key=value",
		"postgres://[::1/x":                 "is a URL whose user name, password, host, port or database name pgx cannot read",
		"postgres://db:0/x":                 "is a URL whose user name, password, host, port or database name pgx cannot read",
		// A '/' in an unescaped password ends pgx's userinfo: "app" is a
		// host and "pa" its port.
		"postgres://app:pa/s3cr3t@db.internal:5432/locks": "is a URL pgx would read otherwise than meant",
	} {
		_, err := pgconn.ParseConfig(dsn)
		require.Error(t, err, "pgx accepts %s", dsn)
		_, err = FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.ErrorContains(t, err, "DATABASE_URL: "+want, dsn)
		assert.NotContains(t, err.Error(), "s3cr3t")
	}
	_, err = FromEnv(env(map[string]string{"DATABASE_URL": "postgres://db/x?"}))
	require.NoError(t, err, "an empty query")
	// A line end left from the file a secret was made of: pgx would take
	// it into the database name, and store.Open would create that database.
	_, err = FromEnv(env(map[string]string{"DATABASE_URL": "postgres://u:s3cr3t@db/x\n"}))
	require.ErrorContains(t, err, "DATABASE_URL: holds a control character")
	assert.NotContains(t, err.Error(), "s3cr3t")
	_, err = FromEnv(env(map[string]string{"DATABASE_URL": "host=db password=s3cr3t\n"}))
	require.NoError(t, err, "white space to pgx in a key=value string")
	// pgx takes "jdbc:postgresql://db/x?user" for a runtime parameter's
	// name; it is a URL of the wrong scheme.
	_, err = FromEnv(env(map[string]string{"DATABASE_URL": "jdbc:postgresql://db/x?user=u&password=s3cr3t"}))
	require.ErrorContains(t, err, "DATABASE_URL: is neither")
}

func TestRedaction(t *testing.T) {
	const pgSecret, urlSecret, saslSecret = "pg-hunter2", "url-hunter2", "sasl-hunter2"
	cases := []struct {
		name    string
		env     map[string]string
		secret  string
		wantURL string // DATABASE_URL in Redacted()
	}{
		{"POSTGRES_PASSWORD", map[string]string{"POSTGRES_PASSWORD": pgSecret}, pgSecret, ""},
		{"DATABASE_URL userinfo", map[string]string{"DATABASE_URL": "postgres://app:" + urlSecret + "@db:5432/x?sslmode=require"}, urlSecret, "postgres://app:***@db:5432/x?sslmode=require"},
		{"DATABASE_URL query", map[string]string{"DATABASE_URL": "postgresql://db/x?user=app&password=" + urlSecret}, urlSecret, "postgresql://db/x?user=app&password=***"},
		// sslpassword decrypts the client key; pgx reads it from the query
		// and from a keyword.
		{"DATABASE_URL sslpassword query", map[string]string{"DATABASE_URL": "postgres://u@db:5432/x?sslmode=verify-full&sslkey=/k.pem&sslpassword=" + urlSecret}, urlSecret, "postgres://u@db:5432/x?sslmode=verify-full&sslkey=/k.pem&sslpassword=***"},
		{"DATABASE_URL key=value sslpassword", map[string]string{"DATABASE_URL": "host=db user=u dbname=x sslkey=/k.pem sslpassword=" + urlSecret}, urlSecret, "host=db user=u dbname=x sslkey=/k.pem sslpassword=***"},
		// pgx decodes a query key before matching it.
		{"DATABASE_URL escaped query key", map[string]string{"DATABASE_URL": "postgres://db/x?pass%77ord=" + urlSecret}, urlSecret, "postgres://db/x?pass%77ord=***"},
		{"DATABASE_URL key=value", map[string]string{"DATABASE_URL": "host=db password=" + urlSecret + " dbname=x"}, urlSecret, "host=db password=*** dbname=x"},
		{"DATABASE_URL key=value quoted", map[string]string{"DATABASE_URL": "host=db password='" + urlSecret + " \\' x' dbname=x"}, urlSecret, "host=db password=*** dbname=x"},
		// A backslash escapes a space into an unquoted value.
		{"DATABASE_URL key=value escaped space", map[string]string{"DATABASE_URL": `host=db password=abc\ ` + urlSecret + ` dbname=x`}, urlSecret, "host=db password=*** dbname=x"},
		// The value starts after the spaces that follow '='.
		{"DATABASE_URL key=value spaces after =", map[string]string{"DATABASE_URL": "host=db password = " + urlSecret + " dbname=x"}, urlSecret, "host=db password = *** dbname=x"},
		{"KAFKA_SASL_PASSWORD", map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": saslSecret}, saslSecret, ""},
		{"INSPECT_TOKEN", map[string]string{"INSPECT_TOKEN": "inspect-hunter2-hunter2"}, "inspect-hunter2-hunter2", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := FromEnv(env(tc.env))
			require.NoError(t, err)

			r := c.Redacted()
			assert.Equal(t, tc.wantURL, r["DATABASE_URL"])
			var zl bytes.Buffer
			zlog := zerolog.New(&zl)
			zlog.Info().Object("config", c).Msg("")
			zlog.Info().Interface("config", c).Interface("postgres", c.Postgres).Interface("kafka", c.Kafka).Msg("")
			asJSON, err := json.Marshal(map[string]any{"config": c, "postgres": c.Postgres, "kafka": c.Kafka, "sasl": c.Kafka.SASL})
			require.NoError(t, err)
			outputs := map[string]string{
				"Redacted":      fmt.Sprint(r),
				"%v":            fmt.Sprintf("%v", c),
				"%+v":           fmt.Sprintf("%+v", c),
				"%#v":           fmt.Sprintf("%#v", c),
				"%v Postgres":   fmt.Sprintf("%v", c.Postgres),
				"%#v Postgres":  fmt.Sprintf("%#v", c.Postgres),
				"%+v Kafka":     fmt.Sprintf("%+v", c.Kafka),
				"%#v Kafka":     fmt.Sprintf("%#v", c.Kafka),
				"%v &Config":    fmt.Sprintf("%v", &c),
				"zerolog":       zl.String(),
				"json":          string(asJSON),
				"String":        c.String(),
				"PostgresURL()": c.PostgresURL(), // must still carry the secret
			}
			for name, out := range outputs {
				if name == "PostgresURL()" {
					if strings.HasPrefix(tc.name, "POSTGRES") || strings.HasPrefix(tc.name, "DATABASE") {
						assert.Contains(t, out, tc.secret, "PostgresURL must keep the password")
					}
					continue
				}
				assert.NotContains(t, out, tc.secret, name)
			}
			assert.Contains(t, zl.String(), `"POSTGRES_MAX_CONNECTIONS":10`)
		})
	}

	t.Run("the SASL user name is logged", func(t *testing.T) {
		// A name, not a secret, as POSTGRES_USER: read trimmed and shown.
		c, err := FromEnv(env(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": " svc ", "KAFKA_SASL_PASSWORD": "pw"}))
		require.NoError(t, err)
		assert.Equal(t, "svc", c.Kafka.SASL.Username)
		assert.Equal(t, "svc", c.Redacted()["KAFKA_SASL_USERNAME"])
		assert.Equal(t, "***", c.Redacted()["KAFKA_SASL_PASSWORD"])
	})

	t.Run("masked values are visible as set", func(t *testing.T) {
		c, err := FromEnv(env(map[string]string{"POSTGRES_PASSWORD": "x"}))
		require.NoError(t, err)
		assert.Equal(t, "***", c.Redacted()["POSTGRES_PASSWORD"])
		assert.Equal(t, "", c.Redacted()["KAFKA_SASL_PASSWORD"])
		assert.Contains(t, c.Postgres.String(), "postgres://postgres:***@127.0.0.1:5432/lockworker")
	})

	t.Run("Redacted names every variable", func(t *testing.T) {
		r := Default().Redacted()
		asked := map[string]bool{}
		_, err := FromEnv(func(name string) string { asked[name] = true; return "" })
		require.NoError(t, err)
		for name := range asked {
			if secret, ok := strings.CutSuffix(name, "_FILE"); ok && asked[secret] {
				delete(asked, name) // a secret's file: the secret is shown (masked)
			}
		}
		for name := range asked {
			assert.Contains(t, r, name, "FromEnv reads it, Redacted must show it")
		}
		assert.Len(t, r, len(asked))
		assert.Equal(t, 30.0, r["DEFAULT_LEASE_DURATION"])
		assert.Equal(t, "info", r["LOG_LEVEL"])
	})
}

// TestKafkaOpts connects to kfake clusters with each SASL mechanism over TLS,
// so the options are proven against a broker, not just built.
func TestKafkaOpts(t *testing.T) {
	dir := t.TempDir()
	caFile, serverTLS := writeTestCA(t, dir)

	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		t.Run(mech, func(t *testing.T) {
			t.Parallel()
			cluster, err := kfake.NewCluster(
				kfake.NumBrokers(1),
				kfake.EnableSASL(),
				kfake.Superuser(mech, "svc", "right-password"),
				kfake.TLS(serverTLS),
			)
			require.NoError(t, err)
			defer cluster.Close()

			base := map[string]string{
				"KAFKA_BOOTSTRAP_SERVERS": cluster.ListenAddrs()[0],
				"KAFKA_TLS_ENABLED":       "true",
				"KAFKA_TLS_CA_FILE":       caFile,
				"KAFKA_SASL_MECHANISM":    strings.ToLower(mech),
				"KAFKA_SASL_USERNAME":     "svc",
				"KAFKA_SASL_PASSWORD":     "right-password",
			}
			assert.NoError(t, ping(t, base))

			wrong := copyMap(base)
			wrong["KAFKA_SASL_PASSWORD"] = "wrong-password"
			assert.Error(t, ping(t, wrong), "a wrong password must fail")

			noCA := copyMap(base)
			delete(noCA, "KAFKA_TLS_CA_FILE")
			assert.Error(t, ping(t, noCA), "an unknown CA must fail")

			skip := copyMap(noCA)
			skip["KAFKA_TLS_INSECURE_SKIP_VERIFY"] = "true"
			assert.NoError(t, ping(t, skip))
		})
	}

	t.Run("embedded seed", func(t *testing.T) {
		opts, err := Default().KafkaOpts()
		require.NoError(t, err)
		cl, err := kgo.NewClient(opts...)
		require.NoError(t, err)
		defer cl.Close()
		assert.Equal(t, []string{"127.0.0.1:9092"}, cl.OptValue(kgo.SeedBrokers))
	})

	t.Run("unreadable files", func(t *testing.T) {
		c := Default()
		c.Kafka.BootstrapServers = []string{"k:9092"}
		c.Kafka.TLS = TLSConfig{Enabled: true, CAFile: filepath.Join(dir, "missing.pem")}
		_, err := c.KafkaOpts()
		assert.ErrorContains(t, err, "KAFKA_TLS_CA_FILE")

		c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: caFile, KeyFile: "missing.pem"}
		_, err = c.KafkaOpts()
		assert.ErrorContains(t, err, "KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE")
		c.Kafka.TLS = TLSConfig{Enabled: true, CertFile: caFile, KeyFile: filepath.Join(dir, "missing.pem")}
		_, err = c.KafkaOpts()
		assert.ErrorContains(t, err, "KAFKA_TLS_KEY_FILE is not a readable file path (value not shown", "a long value that names no file may be a key")
	})
}

func ping(t *testing.T, m map[string]string) error {
	t.Helper()
	c, err := FromEnv(env(m))
	require.NoError(t, err)
	opts, err := c.KafkaOpts()
	require.NoError(t, err)
	return pingWith(t, opts)
}

// pingWith pings with a new client, and so a new connection, of opts.
func pingWith(t *testing.T, opts []kgo.Opt) error {
	t.Helper()
	cl, err := kgo.NewClient(append(opts, kgo.RetryTimeout(2*time.Second))...)
	require.NoError(t, err)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Ping(ctx)
}

// A CA file or client certificate renewed in place is used from the next
// connection on, without building the options again (a restart); one that
// does not load fails the connection, naming the file, rather than leave
// the old one trusted unseen.
func TestKafkaTLSFilesReloaded(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	oldCA, oldServer := selfSigned(t)
	newCA, newServer := selfSigned(t)
	clientCA, clientKey := selfSigned(t)
	strangerCert, strangerKey := selfSigned(t)
	clients := x509.NewCertPool()
	require.True(t, clients.AppendCertsFromPEM(clientCA))
	broker := func(certPEM, keyPEM []byte) string {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		require.NoError(t, err)
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair},
			ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients, MinVersion: tls.VersionTLS12}))
		require.NoError(t, err)
		t.Cleanup(c.Close)
		return c.ListenAddrs()[0]
	}
	oldBroker, newBroker := broker(oldCA, oldServer), broker(newCA, newServer)
	write := func(path string, b []byte) { require.NoError(t, os.WriteFile(path, b, 0o600)) }
	write(caFile, oldCA)
	write(certFile, strangerCert)
	write(keyFile, strangerKey)

	c := Default()
	c.Kafka.BootstrapServers = []string{oldBroker}
	c.Kafka.TLS = TLSConfig{Enabled: true, CAFile: caFile, CertFile: certFile, KeyFile: keyFile}
	opts, err := c.KafkaOpts()
	require.NoError(t, err)
	require.Error(t, pingWith(t, opts), "a client certificate the broker does not trust")
	write(certFile, clientCA)
	write(keyFile, clientKey)
	require.NoError(t, pingWith(t, opts), "the renewed client certificate")

	write(caFile, newCA)
	require.Error(t, pingWith(t, opts), "the old broker's certificate, no longer trusted")
	opts = append(opts, kgo.SeedBrokers(newBroker))
	require.NoError(t, pingWith(t, opts), "the new broker's, by the renewed CA file")
	_, port, err := net.SplitHostPort(newBroker)
	require.NoError(t, err)
	require.ErrorContains(t, pingWith(t, append(opts, kgo.SeedBrokers("localhost:"+port))), "localhost",
		"the host name is checked too: the certificate names 127.0.0.1 only")

	write(caFile, []byte("half written"))
	require.ErrorContains(t, pingWith(t, opts), "KAFKA_TLS_CA_FILE")
	write(caFile, newCA)
	write(keyFile, strangerKey) // no longer the certificate's
	require.ErrorContains(t, pingWith(t, opts), "KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE")
}

// A broker reached by IP address must hold a certificate for that address,
// as Go's own verification has it (no SNI is sent for an IP, so a check of
// the name sent would check nothing).
func TestKafkaTLSChecksTheBrokersIP(t *testing.T) {
	dir := t.TempDir()
	caPEM, keyPEM := selfSigned(t, "127.0.0.2")
	pair, err := tls.X509KeyPair(caPEM, keyPEM)
	require.NoError(t, err)
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}))
	require.NoError(t, err)
	defer c.Close()
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, caPEM, 0o600))
	err = ping(t, map[string]string{"KAFKA_BOOTSTRAP_SERVERS": c.ListenAddrs()[0], "KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CA_FILE": caFile})
	require.ErrorContains(t, err, "127.0.0.1", "a certificate for 127.0.0.2 only")
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// writeTestCA writes a self-signed certificate for 127.0.0.1 as the CA file
// and returns the server side TLS config using it.
func writeTestCA(t *testing.T, dir string) (string, *tls.Config) {
	t.Helper()
	certPEM, keyPEM := selfSigned(t)
	caFile := filepath.Join(dir, "ca.pem")
	require.NoError(t, os.WriteFile(caFile, certPEM, 0o600))
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	return caFile, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// selfSigned returns a new self-signed CA certificate for 127.0.0.1 (or
// ip), good for a server and a client, and its key, in PEM.
func selfSigned(t *testing.T, ip ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	addr := "127.0.0.1"
	if len(ip) > 0 {
		addr = ip[0]
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "lockworker test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP(addr)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

func TestAuthSettings(t *testing.T) {
	c, err := FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_KEYS": "/etc/lockworker/keys", "AUTH_AUDIENCE": "lockworker"}))
	require.NoError(t, err)
	assert.Equal(t, AuthConfig{Required: true, Keys: "/etc/lockworker/keys", Audience: "lockworker"}, c.Auth)
	_, err = FromEnv(env(map[string]string{"AUTH_REQUIRED": "true"}))
	require.ErrorContains(t, err, "AUTH_REQUIRED: needs AUTH_KEYS, AUTH_REQUESTER_KEYS or AUTH_HMAC_KEY_FILE")
	_, err = FromEnv(env(map[string]string{"AUTH_KEYS": "/k"}))
	require.ErrorContains(t, err, `AUTH_KEYS: "/k" is set but AUTH_REQUIRED is not true`)

	// Requester keys alone are enough. (AUTH_KEYS as AUTH_REQUESTER_KEYS
	// too is refused by the verifier, internal/auth, as keys in two files.)
	c, err = FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_REQUESTER_KEYS": "/etc/lockworker/requester-keys"}))
	require.NoError(t, err)
	assert.Equal(t, AuthConfig{Required: true, RequesterKeys: "/etc/lockworker/requester-keys"}, c.Auth)
	_, err = FromEnv(env(map[string]string{"AUTH_REQUESTER_KEYS": "/r"}))
	require.ErrorContains(t, err, `AUTH_REQUESTER_KEYS: "/r" is set but AUTH_REQUIRED is not true`)
	_, err = FromEnv(env(map[string]string{"AUTH_REQUIRED": "true", "AUTH_KEYS": "/etc/lockworker/keys", "AUTH_REQUESTER_KEYS": "/etc/lockworker/keys/requesters"}))
	require.NoError(t, err, "a directory beneath AUTH_KEYS is another: AUTH_KEYS reads only its own *.pem")
}

// With AUTH_REQUIRED a requester's only reply topic is REPLY_TOPIC_PREFIX +
// its token's sub: a prefix too long for the longest sub is refused at
// start, not found out token by token.
func TestReplyPrefixLeavesRoomForTheRequester(t *testing.T) {
	longest := strings.Repeat("p", 249-topics.MaxSubjectBytes-1) + "."
	tooLong := "p" + longest
	withAuth := map[string]string{"AUTH_REQUIRED": "true", "AUTH_KEYS": "/k", "REPLY_TOPIC_PREFIX": longest}

	c, err := FromEnv(env(withAuth))
	require.NoError(t, err)
	require.True(t, topics.ValidTopicName(c.Topics.ReplyPrefix+strings.Repeat("s", topics.MaxSubjectBytes)))

	withAuth["REPLY_TOPIC_PREFIX"] = tooLong
	_, err = FromEnv(env(withAuth))
	require.ErrorContains(t, err, `REPLY_TOPIC_PREFIX: "`+tooLong+`" is longer than 49 bytes: with AUTH_REQUIRED`)

	_, err = FromEnv(env(map[string]string{"REPLY_TOPIC_PREFIX": tooLong}))
	require.NoError(t, err, "without AUTH_REQUIRED a reply_to is any topic under the prefix")
}

// The pool's sizes come from POSTGRES_MIN_CONNECTIONS and
// POSTGRES_MAX_CONNECTIONS, which store.Open sets whatever the connection
// string says: a DATABASE_URL that sets them too is refused, not overridden
// in silence. pgxpool's other settings (pool_max_conn_lifetime...) apply.
func TestDatabaseURLPoolSizes(t *testing.T) {
	for _, dsn := range []string{
		"postgres://db/x?sslmode=disable&pool_max_conns=50",
		"postgres://db/x?pool%5Fmin%5Fconns=2",
		"host=db dbname=x pool_max_conns=50",
	} {
		_, err := FromEnv(env(map[string]string{"DATABASE_URL": dsn}))
		require.ErrorContains(t, err, "DATABASE_URL: sets pool_m", dsn)
		require.ErrorContains(t, err, "set POSTGRES_M", dsn)
	}
	_, err := FromEnv(env(map[string]string{"DATABASE_URL": "postgres://db/x?pool_max_conn_lifetime=1h"}))
	require.NoError(t, err)
}

// A child process given a secret by its variable does not also get the
// parent's file of it, which together would be refused.
func TestChildEnv(t *testing.T) {
	env := ChildEnv([]string{"PATH=/bin", "DATABASE_URL_FILE=/run/db", "INSPECT_TOKEN_FILE=/run/t"}, "DATABASE_URL=postgres://x", "LOG_LEVEL=warn")
	assert.Equal(t, []string{"PATH=/bin", "INSPECT_TOKEN_FILE=/run/t", "DATABASE_URL=postgres://x", "LOG_LEVEL=warn"}, env)
}

// Every variable FromEnv reads is a Kafka client's (clientVariables,
// which ClientFromEnv reads) or one of the worker's below: a new one must
// be put in one of the two, so lockctl cannot miss a setting of its
// connection or topics.
func TestClientVariables(t *testing.T) {
	read := map[string]bool{}
	_, err := FromEnv(func(name string) string { read[name] = true; return "" })
	require.NoError(t, err)
	for _, name := range clientVariables {
		assert.True(t, read[name], "%s is in clientVariables, but FromEnv does not read it", name)
		delete(read, name)
	}
	worker := []string{
		"DATABASE_URL", "DATABASE_URL_FILE", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER",
		"POSTGRES_PASSWORD", "POSTGRES_PASSWORD_FILE", "POSTGRES_MIN_CONNECTIONS", "POSTGRES_MAX_CONNECTIONS",
		"POSTGRES_ATTEMPT_TIMEOUT", "POSTGRES_UNREACHABLE_TIMEOUT",
		"DEFAULT_LEASE_DURATION", "REQUIRE_FENCING_TOKEN", "TOKEN_FLOOR_CHECK",
		"AUTH_REQUIRED", "AUTH_KEYS", "AUTH_REQUESTER_KEYS", "AUTH_HMAC_KEY_FILE", "AUTH_AUDIENCE", "AUTH_ISSUER",
		"INSPECT_TOKEN", "INSPECT_TOKEN_FILE", "CLEANUP_INTERVAL", "ACQUIRE_RETRY_DELAY",
		// The consumer group's: a client joins none.
		"KAFKA_CONSUMER_GROUP", "KAFKA_SESSION_TIMEOUT", "KAFKA_HEARTBEAT_INTERVAL", "KAFKA_GROUP_PROTOCOL",
		"KAFKA_STATIC_MEMBERSHIP",
		// The relay's producer: a client's commands are its own.
		"KAFKA_COMPRESSION",
		// Of the topics the workers create; a client creates its reply
		// topic with its own setting.
		"COMMANDS_PARTITIONS", "KAFKA_TOPIC_REPLICATION_FACTOR", "AUTO_CREATE_REPLY_TOPICS", "MAX_REPLY_TOPICS",
		"RELAY_MAX_ATTEMPTS", "DEAD_LETTER_MAX_BYTES", "REQUEST_RETENTION", "LOCK_EVENTS_RETENTION", "COMPACT_STORED_EVENTS",
		"VACUUM_ENABLED", "VACUUM_INTERVAL", "VACUUM_DEAD_ROWS",
		"HTTP_ADDR", "LOG_LEVEL", "LOG_FORMAT", "INSTANCE_ID", "EMBEDDED_KAFKA_DIR", "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT",
	}
	assert.ElementsMatch(t, worker, slices.Collect(maps.Keys(read)),
		"FromEnv reads a variable that is neither in clientVariables nor the worker's: a Kafka client's connection or topics setting goes in clientVariables")
}

// ClientFromEnv reads the client's settings as FromEnv does, its errors
// included, and no other: the worker's, bad, do not stop it.
func TestClientFromEnv(t *testing.T) {
	password := filepath.Join(t.TempDir(), "sasl-password")
	require.NoError(t, os.WriteFile(password, []byte("s3cret\n"), 0o600))
	client := map[string]string{
		"KAFKA_BOOTSTRAP_SERVERS": "k1:9093,k2", "EMBEDDED_KAFKA_ADDR": "127.0.0.1:19092",
		"KAFKA_TLS_ENABLED": "true", "KAFKA_TLS_CA_FILE": "/etc/ca.pem", "KAFKA_TLS_CERT_FILE": "/etc/c.pem",
		"KAFKA_TLS_KEY_FILE": "/etc/k.pem", "KAFKA_TLS_INSECURE_SKIP_VERIFY": "true",
		"KAFKA_SASL_MECHANISM": "plain", "KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD_FILE": password,
		"KAFKA_TOPIC_COMMANDS": "c", "KAFKA_TOPIC_LOCK_ACQUIRED": "a", "KAFKA_TOPIC_LOCK_RELEASED": "r",
		"KAFKA_TOPIC_LOCK_EXPIRED": "e", "KAFKA_TOPIC_LOCK_REVOKED": "v", "KAFKA_TOPIC_DEAD_LETTER": "d",
		"KAFKA_TOPIC_LOCK_STATE": "s", "REPLY_TOPIC_PREFIX": "replies.",
	}
	want, err := FromEnv(env(client))
	require.NoError(t, err)
	workers := copyMap(client)
	maps.Copy(workers, map[string]string{
		"DEFAULT_LEASE_DURATION": "abc", "INSPECT_TOKEN": "CHANGE-ME", "HTTP_ADDR": "bogus",
		"KAFKA_SESSION_TIMEOUT": "soon", "DATABASE_URL_FILE": "/nonexistent/db-url",
		// A prefix this long is refused with AUTH_REQUIRED: the
		// worker's rule, of the requester names its tokens may give.
		"AUTH_REQUIRED": "true", "REPLY_TOPIC_PREFIX": strings.Repeat("r", 100) + ".",
	})
	got, err := ClientFromEnv(env(workers))
	require.NoError(t, err)
	assert.Equal(t, want.Kafka.BootstrapServers, got.Kafka.BootstrapServers)
	assert.Equal(t, want.Embedded.Addr, got.Embedded.Addr)
	assert.Equal(t, want.Kafka.TLS, got.Kafka.TLS)
	assert.Equal(t, SASLConfig{Mechanism: "PLAIN", Username: "svc", Password: "s3cret"}, got.Kafka.SASL)
	want.Topics.ReplyPrefix = workers["REPLY_TOPIC_PREFIX"]
	assert.Equal(t, want.Topics.Names(), got.Topics.Names())
	assert.Equal(t, Default().DefaultLeaseDuration, got.DefaultLeaseDuration, "the worker's settings are their defaults")

	bad := map[string]string{"KAFKA_TLS_ENABLED": "maybe", "KAFKA_TOPIC_COMMANDS": "no spaces", "KAFKA_BOOTSTRAP_SERVERS": "k:70000"}
	_, wantErr := FromEnv(env(bad))
	require.Error(t, wantErr)
	_, err = ClientFromEnv(env(bad))
	assert.EqualError(t, err, wantErr.Error())
}

// stubHostname has hostname() return name until the test ends.
func stubHostname(t *testing.T, name string) {
	old := osHostname
	osHostname = func() (string, error) { return name, nil }
	t.Cleanup(func() { osHostname = old })
}

// INSTANCE_ID's default is the host name and the pid: on a host whose name
// an INSTANCE_ID cannot hold (a space, a non-ASCII letter), the default
// stands '_' for each such byte, so neither lockworker nor lockctl is
// refused for a value nobody gave.
func TestClientFromEnvHostname(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for host, want := range map[string]string{"büro-pc": "b__ro-pc-" + pid, "my pc": "my_pc-" + pid, "web-3": "web-3-" + pid} {
		stubHostname(t, host)
		c, err := ClientFromEnv(env(map[string]string{"KAFKA_BOOTSTRAP_SERVERS": "k1:9093"}))
		require.NoError(t, err, host)
		assert.Equal(t, []string{"k1:9093"}, c.Kafka.BootstrapServers, host)

		c, err = WorkerFromEnv(env(nil))
		require.NoError(t, err, host)
		assert.Equal(t, want, c.InstanceID, host)
		c, err = WorkerFromEnv(env(map[string]string{"INSTANCE_ID": "worker-1"}))
		require.NoError(t, err, host)
		assert.Equal(t, "worker-1", c.InstanceID, host)
	}
}

// ClientFromEnv's rules read the client's settings only: a Config whose
// every other field is bad, as a worker's default depending on the host
// could be, passes them, while the worker's rules refuse each field.
func TestValidateClientReadsClientSettingsOnly(t *testing.T) {
	d := Default()
	c := Config{
		Postgres: PostgresConfig{MinConns: 2, UnreachableTimeout: time.Second},
		Auth:     AuthConfig{Required: true, HMACKeyFile: "-----BEGIN PRIVATE KEY-----"},
		Kafka: KafkaConfig{BootstrapServers: d.Kafka.BootstrapServers, TLS: d.Kafka.TLS, SASL: d.Kafka.SASL,
			StaticMembership: true, GroupInstanceID: "büro pc"},
		Topics: TopicsConfig{Commands: d.Topics.Commands, LockAcquired: d.Topics.LockAcquired, LockReleased: d.Topics.LockReleased,
			LockExpired: d.Topics.LockExpired, LockRevoked: d.Topics.LockRevoked, DeadLetter: d.Topics.DeadLetter, LockState: d.Topics.LockState,
			// Valid, but too long with AUTH_REQUIRED.
			ReplyPrefix:       strings.Repeat("r", 100) + ".",
			ReplicationFactor: 3},
		LockEventsRetention: time.Second,
		InspectToken:        "CHANGE-ME",
		InstanceID:          "büro-pc-1",
		Embedded:            EmbeddedConfig{Addr: d.Embedded.Addr},
	}
	assert.Empty(t, c.validateClient(false))

	var refused []string
	for _, err := range c.validateWorker(false) {
		name, _, _ := strings.Cut(err.Error(), ":")
		name, _, _ = strings.Cut(name, " ")
		refused = append(refused, name)
	}
	assert.ElementsMatch(t, []string{"POSTGRES_HOST", "POSTGRES_DATABASE", "POSTGRES_MIN_CONNECTIONS", "POSTGRES_UNREACHABLE_TIMEOUT",
		"AUTH_HMAC_KEY_FILE", "TOKEN_FLOOR_CHECK", "LOCK_EVENTS_RETENTION",
		"KAFKA_CONSUMER_GROUP", "KAFKA_SESSION_TIMEOUT", "KAFKA_HEARTBEAT_INTERVAL", "KAFKA_GROUP_PROTOCOL", "KAFKA_STATIC_MEMBERSHIP",
		"KAFKA_COMPRESSION", "KAFKA_TOPIC_REPLICATION_FACTOR", "REPLY_TOPIC_PREFIX", "COMMANDS_PARTITIONS", "INSPECT_TOKEN",
		"HTTP_ADDR", "LOG_FORMAT", "INSTANCE_ID", "EMBEDDED_KAFKA_DIR", "EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT"}, refused)
}

// With DATABASE_URL set, the POSTGRES_* connection settings it overrides
// are not logged: their defaults would name a database not in use.
func TestRedactedLeavesOutOverriddenPostgresSettings(t *testing.T) {
	c, err := FromEnv(env(map[string]string{"DATABASE_URL": "postgres://app@db:5432/orders"}))
	require.NoError(t, err)
	r := c.Redacted()
	for _, k := range []string{"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_PASSWORD"} {
		assert.NotContains(t, r, k)
	}
	assert.Equal(t, "postgres://app@db:5432/orders", r["DATABASE_URL"])
	assert.Contains(t, r, "POSTGRES_MAX_CONNECTIONS", "the pool's size still comes from POSTGRES_*")

	c, err = FromEnv(env(nil))
	require.NoError(t, err)
	assert.Equal(t, "lockworker", c.Redacted()["POSTGRES_DATABASE"])
}
