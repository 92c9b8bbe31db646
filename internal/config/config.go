// Package config holds every setting of lockworker (docs/design.md,
// "Configuration" and "Topics") and reads them from the environment.
//
// Names are those of the original Python node where they exist, so its users
// can keep their deployment files. Durations are seconds in the environment
// (floats allowed, as in the original) and time.Duration here. An empty
// variable means "unset": the default applies.
//
// Config never leaks secrets through formatting: String, GoString, Redacted,
// MarshalJSON and MarshalZerologObject mask POSTGRES_PASSWORD, KAFKA_SASL_PASSWORD,
// INSPECT_TOKEN and the password and sslpassword inside DATABASE_URL, and
// FromEnv's errors never echo them. User names are not secrets: they are
// logged, which helps tell a wrong user from a wrong password.
//
// Of the service's packages it imports only topics (topic-name rules and the
// contract's defaults), so every command can load configuration without
// pulling in the rest of the service.
package config

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/topics"
)

// Config is lockworker's whole configuration. Build it with Default or
// FromEnv; the zero value is not usable.
type Config struct {
	// Postgres is the database connection.
	Postgres PostgresConfig

	// DefaultLeaseDuration (DEFAULT_LEASE_DURATION, default 30 s, 0.1..86400)
	// is the lease of an acquire that gives no lease_duration.
	DefaultLeaseDuration time.Duration
	// RequireFencingToken (REQUIRE_FENCING_TOKEN, default false): refuse an
	// extend without fencing_token, a release without it that would end a
	// lease (one withdrawing its owner's wait is applied), and an acquire
	// renewing its owner's lease (INVALID_REQUEST), so an owner id alone, which events
	// and /locks show, cannot end or keep a lease held outside a session
	// (a session's id and owner keep it alive or close it).
	RequireFencingToken bool
	// TokenFloorCheck (TOKEN_FLOOR_CHECK, default require): require, warn
	// or off. At start, before a withdrawn replica takes partitions again,
	// and when a partition's stored offset went back, the fencing token
	// sequence is checked against the newest records of the lock.acquired
	// topic and moved past them when PostgreSQL lost transactions
	// (docs/design.md "PostgreSQL lost transactions"), which needs Read and
	// Describe on that topic. require: Kafka failing the check fails the
	// start, holds the batch or keeps the replica withdrawn; warn: it is
	// logged at error level and the replica goes on; off: no check.
	TokenFloorCheck string
	// Auth is requester authentication; off by default.
	Auth AuthConfig
	// InspectToken (INSPECT_TOKEN, default empty: open;
	// MinInspectTokenBytes..MaxInspectTokenBytes of visible ASCII) is the bearer token that
	// /locks/*, /sessions/* and /health/locks require when set; the liveness
	// and readiness probes stay open. A secret: never logged.
	InspectToken string
	// CleanupInterval (CLEANUP_INTERVAL, default 60 s, 0.1..86400) is how often
	// old released/expired/revoked rows, outcomes and history are deleted.
	CleanupInterval time.Duration
	// AcquireRetryDelay (ACQUIRE_RETRY_DELAY, default 0.1 s, 0.001..5) is the
	// base of the exponential backoff when a batch transaction hits a
	// transient database error (the backoff is capped at 5 s).
	AcquireRetryDelay time.Duration

	// Kafka is how lockworker reaches Kafka.
	Kafka KafkaConfig
	// Topics names the topics lockworker reads and writes.
	Topics TopicsConfig

	// RelayMaxAttempts (RELAY_MAX_ATTEMPTS, default 5, 1..1000) is how many
	// times the relay tries a topic before parking its rows in the database.
	RelayMaxAttempts int
	// DeadLetterMaxBytes (DEAD_LETTER_MAX_BYTES, default 65536, 1024..900000)
	// bounds a dead-letter copy: the record's key, value and headers
	// together, and the key again, which the relay also writes as the
	// partition_key header. A larger record's copy is cut (headers say what
	// and how big it was), so the copy, with about 1 KiB of the worker's
	// own headers, fits the broker's record limit (Kafka's default is about
	// 1 MB) whatever a producer sent.
	DeadLetterMaxBytes int
	// RequestRetention (REQUEST_RETENTION, default 86400 s, 60..31536000) is
	// how long a request_id's outcome is kept for idempotency. Under a minute
	// would defeat producer retries, hence the floor.
	RequestRetention time.Duration
	// LockEventsRetention (LOCK_EVENTS_RETENTION, default 604800 s, 0 or
	// 60..315360000) is how long the lock_events history is kept. 0 keeps
	// none: no row is written (the lifecycle topics are then the only
	// history, without the extends) and the rows left from before are
	// pruned.
	LockEventsRetention time.Duration
	// CompactStoredEvents (COMPACT_STORED_EVENTS, default true) stores the
	// events and lock states waiting in the outbox and the requests'
	// outcomes compacted (docs/design.md, "outbox"): a fifth to a third of
	// the bytes.
	// Versions before it cannot read them: during a rolling upgrade from
	// such a version set it false until no replica of that version runs.
	// Every version since reads both forms. Going back to such a version
	// needs a restored database: it knows at most 12 migrations and
	// refuses a newer schema.
	CompactStoredEvents bool

	// VacuumEnabled (VACUUM_ENABLED, default true) runs the worker's vacuum
	// loop over its hot tables (locks, lock_waiters, outbox,
	// consumer_offsets, processed_requests): where autovacuum is off, or
	// past VacuumDeadRows where it runs, the worker vacuums them itself, so
	// hours of load do not bloat them (README "Table bloat"). Turn it off
	// where autovacuum is on and tuned and the DBA wants it alone.
	VacuumEnabled bool
	// VacuumInterval (VACUUM_INTERVAL, default 2 s, 0.1..3600) is how often
	// the loop reads the hot tables' dead rows.
	VacuumInterval time.Duration
	// VacuumDeadRows (VACUUM_DEAD_ROWS, default 10000, 100..1000000000) is
	// the dead rows of a hot table past which the worker vacuums it even
	// while autovacuum runs. With autovacuum off it vacuums sooner: once a
	// table's dead rows pass its live rows (and 1,000).
	VacuumDeadRows int

	// HTTPAddr (HTTP_ADDR, default ":8062", [host]:port with a numeric port
	// of 0..65535; 0 picks a free port) is the health and metrics listener.
	HTTPAddr string
	// LogLevel (LOG_LEVEL, default info): trace, debug, info, warn, error,
	// fatal, panic or disabled.
	LogLevel zerolog.Level
	// LogFormat (LOG_FORMAT, default json): json or console.
	LogFormat string
	// InstanceID (INSTANCE_ID, default "<hostname>-<pid>") names this replica
	// in logs and in the ce_source header ("lockworker/<instance>").
	InstanceID string

	// Embedded is the development broker started when
	// Kafka.BootstrapServers is empty.
	Embedded EmbeddedConfig
}

// PostgresConfig is the database connection. URL wins over the other fields
// for connecting; MinConns and MaxConns apply either way (pool settings are
// not part of the URL, so plain pgx.Connect accepts it too, and a URL that
// sets pool_min_conns or pool_max_conns is refused rather than overridden).
type PostgresConfig struct {
	// URL (DATABASE_URL, default empty): a postgres:// or postgresql:// URL,
	// else a key=value connection string (the prefix decides, as in pgx).
	// When set, Host..Password are ignored. Printed with its password and
	// sslpassword masked.
	URL string
	// Host (POSTGRES_HOST, default 127.0.0.1).
	Host string
	// Port (POSTGRES_PORT, default 5432, 1..65535).
	Port int
	// Database (POSTGRES_DATABASE, default lockworker).
	Database string
	// User (POSTGRES_USER, default postgres).
	User string
	// Password (POSTGRES_PASSWORD, default empty, no control character).
	// Never printed.
	Password string
	// MinConns (POSTGRES_MIN_CONNECTIONS, default 1, 0..1000, <= MaxConns):
	// connections the pool keeps open, so the first batch after idle does not
	// pay for a connect; 0 keeps none.
	MinConns int32
	// MaxConns (POSTGRES_MAX_CONNECTIONS, default 10, 1..1000).
	MaxConns int32
	// AttemptTimeout (POSTGRES_ATTEMPT_TIMEOUT, default 15 s, 1..3600)
	// bounds each attempt of a transaction: one that has not committed by
	// then has its connection closed and is retried, with twice the bound
	// each time (store.Config.AttemptTimeout).
	AttemptTimeout time.Duration
	// UnreachableTimeout (POSTGRES_UNREACHABLE_TIMEOUT, default 15 s, 0 or
	// 3..3600) is how long PostgreSQL may leave a replica unanswered
	// before it gives its partitions to the other replicas, until it
	// answers again; 0 never does (worker.Config.UnreachableTimeout).
	UnreachableTimeout time.Duration
}

// AuthConfig is requester authentication: every command carries a JWT in
// its authorization header, whose subject is the requester (see the design
// document, "Requesters").
type AuthConfig struct {
	// Required (AUTH_REQUIRED, default false) refuses every command without
	// a valid token (UNAUTHENTICATED, dead-lettered only).
	Required bool
	// Keys (AUTH_KEYS) is a PEM public key file, or a directory of *.pem
	// files (Ed25519, RSA, ECDSA), re-read when they change: the token
	// issuers' keys, whose tokens may name any requester and claim admin.
	// Never a requester's own key.
	Keys string
	// RequesterKeys (AUTH_REQUESTER_KEYS) is a directory of the public keys
	// of requesters that sign their own tokens, <requester>.pem each
	// (Ed25519, RSA, ECDSA), re-read when they change: a token one verifies
	// must name that requester and may not claim admin.
	RequesterKeys string
	// HMACKeyFile (AUTH_HMAC_KEY_FILE) holds a shared secret of at least 32
	// bytes (HS256/384/512), for small installs: an issuer key, so every
	// holder may sign as any requester.
	HMACKeyFile string
	// Audience and Issuer (AUTH_AUDIENCE, AUTH_ISSUER, default empty: not
	// checked) must be the token's aud and iss when set.
	Audience, Issuer string
}

// KafkaConfig is how lockworker reaches Kafka.
type KafkaConfig struct {
	// BootstrapServers (KAFKA_BOOTSTRAP_SERVERS, comma separated host[:port],
	// port 1..65535, default empty). Empty: lockworker starts the embedded development
	// broker (see Config.Embedded).
	BootstrapServers []string
	// ConsumerGroup (KAFKA_CONSUMER_GROUP, default lockworker).
	ConsumerGroup string

	// Failover (README "Failover"). A crashed replica's partitions stay
	// unanswered until the group notices: about SessionTimeout +
	// HeartbeatInterval with the classic protocol.

	// SessionTimeout (KAFKA_SESSION_TIMEOUT, default 6 s, 1..300, more than
	// 3 x KAFKA_HEARTBEAT_INTERVAL) is how long the group waits for a silent
	// member before giving its partitions to the others. 6 s is Apache
	// Kafka's classic group.min.session.timeout.ms, the shortest a default
	// broker accepts (a shorter one is refused at join: worker's
	// ErrSessionTimeout); longer rides out longer GC or VM pauses without a
	// false failover.
	SessionTimeout time.Duration
	// HeartbeatInterval (KAFKA_HEARTBEAT_INTERVAL, default 0.1 s,
	// 0.01..60) is how often a member heartbeats. The members learn of a
	// rebalance at their next heartbeat, once per round (a cooperative
	// handover takes two), so it adds to every failover: lockbench's
	// failover scenario measured the worst SIGTERM handover at 712 ms with
	// 0.1 s and 1,753 ms with 0.25 s. Ten small requests a second per member
	// cost the broker nothing measurable.
	HeartbeatInterval time.Duration
	// GroupProtocol (KAFKA_GROUP_PROTOCOL, default classic): classic (the
	// client-driven join/sync protocol, any Kafka) or consumer (KIP-848,
	// Kafka 4.0+: the broker assigns partitions and the session timeout and
	// heartbeat are the group's settings, consumer.session.timeout.ms and
	// consumer.heartbeat.interval.ms, which lockworker sets through the admin
	// API where the broker allows it and warns where it does not). classic
	// is the default because its timeout is the client's own, so the bound
	// above holds on any broker.
	GroupProtocol string
	// StaticMembership (KAFKA_STATIC_MEMBERSHIP, default false) joins as a
	// static member (group.instance.id = GroupInstanceID): a replica that
	// restarts within the session timeout gets its partitions back without
	// a rebalance of the others. A clean stop (SIGTERM) still leaves the
	// group at once, so its partitions move within a second.
	StaticMembership bool
	// GroupInstanceID is the static member's group.instance.id: INSTANCE_ID
	// when set, else the host name (the pod name in Kubernetes), which
	// unlike the default INSTANCE_ID survives a restart. Set by FromEnv when
	// StaticMembership is on.
	GroupInstanceID string

	// Compression (KAFKA_COMPRESSION, default snappy): snappy, none, gzip
	// or lz4, the codec of the record batches the relay writes (replies,
	// lifecycle events, lock states, dead-letter copies), which every
	// client reading them must decompress (kafkajs reads gzip alone
	// without a codec package of its own); kgo writes uncompressed a batch
	// the codec would not shrink. snappy is franz-go's default, what the
	// relay wrote before the setting; without compression it measured no
	// CPU difference at 16 clients (docs/performance.md). zstd is refused:
	// it compresses the lock.status of a lock whose many holders share their
	// owner_metadata past the 256-fold bound (fetchbound.Ratio) at which
	// the SDK's readers skip a batch as a decompression bomb (about
	// 370-fold for 146 such holders, where gzip reaches about 120 and lz4
	// about 140).
	Compression string

	// TLS secures connections to the brokers.
	TLS TLSConfig
	// SASL authenticates to the brokers.
	SASL SASLConfig
}

// TLSConfig secures connections to the brokers. The file settings require
// Enabled, so a half-written configuration fails at start instead of
// silently connecting in plain text.
type TLSConfig struct {
	// Enabled (KAFKA_TLS_ENABLED, default false).
	Enabled bool
	// CAFile (KAFKA_TLS_CA_FILE, default empty = system roots): PEM bundle.
	CAFile string
	// CertFile and KeyFile (KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE, default
	// empty): PEM client certificate and key for mutual TLS; both or neither.
	CertFile string
	KeyFile  string
	// InsecureSkipVerify (KAFKA_TLS_INSECURE_SKIP_VERIFY, default false)
	// accepts any server certificate. For tests only.
	InsecureSkipVerify bool
}

// SASLConfig authenticates to the brokers.
type SASLConfig struct {
	// Mechanism (KAFKA_SASL_MECHANISM, default empty = no SASL): PLAIN,
	// SCRAM-SHA-256 or SCRAM-SHA-512 (case-insensitive in the environment,
	// stored upper case).
	Mechanism string
	// Username (KAFKA_SASL_USERNAME, logged like POSTGRES_USER) and Password
	// (KAFKA_SASL_PASSWORD, no control character, never printed); both
	// required with a Mechanism.
	Username string
	Password string
}

// TopicsConfig names lockworker's topics (docs/design.md "Topics").
type TopicsConfig struct {
	// Commands (KAFKA_TOPIC_COMMANDS, default locks.commands).
	Commands string
	// LockAcquired, LockReleased, LockExpired, LockRevoked
	// (KAFKA_TOPIC_LOCK_ACQUIRED, KAFKA_TOPIC_LOCK_RELEASED,
	// KAFKA_TOPIC_LOCK_EXPIRED, KAFKA_TOPIC_LOCK_REVOKED, defaults
	// locks.lock.acquired.v1, locks.lock.released.v1, locks.lock.expired.v1,
	// locks.lock.revoked.v1).
	LockAcquired string
	LockReleased string
	LockExpired  string
	LockRevoked  string
	// DeadLetter (KAFKA_TOPIC_DEAD_LETTER, default locks.commands.dlq).
	DeadLetter string
	// LockState (KAFKA_TOPIC_LOCK_STATE, default locks.state.v1) is the
	// compacted lock state topic, created with COMMANDS_PARTITIONS
	// partitions and worker.StateTopicConfigs.
	LockState string
	// CommandsPartitions (COMMANDS_PARTITIONS, default 16,
	// 1..MaxCommandsPartitions) is used only when lockworker creates the
	// commands topic.
	CommandsPartitions int32
	// ReplicationFactor (KAFKA_TOPIC_REPLICATION_FACTOR, default -1, -1 or
	// 1..32767) is the replication factor of every topic the workers
	// create: the topics above, when missing at start, and the reply topics
	// the relay creates (AutoCreateReplyTopics). A requester that creates
	// its own reply topic (the Go SDK and lockctl do, before any command)
	// uses its own setting (client.Config.ReplyTopicReplicationFactor,
	// LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR) or the broker's
	// default.replication.factor. -1 is the broker's
	// default.replication.factor, which is 1 on a stock Apache Kafka: one
	// broker's loss then stops the service and can lose acknowledged
	// commands. Set 3 in production (a cluster of at least 3 brokers; the
	// broker refuses more replicas than brokers, and above 1 is refused
	// without KAFKA_BOOTSTRAP_SERVERS, as the embedded broker is one
	// broker). Topics that exist keep theirs: lockworker warns at start
	// when one of the topics above has a single replica on brokers of
	// KAFKA_BOOTSTRAP_SERVERS.
	ReplicationFactor int16
	// ReplyPrefix (REPLY_TOPIC_PREFIX, default "locks.replies.", at most 248
	// bytes, 49 with Auth.Required so that it and a requester name of up to
	// 200 bytes make a topic name) bounds every reply_to. None of the topics
	// above may start with it, or a requester could make the worker write
	// into them.
	ReplyPrefix string
	// AutoCreateReplyTopics (AUTO_CREATE_REPLY_TOPICS, default true): create a
	// reply_to topic the first time an event must go there.
	AutoCreateReplyTopics bool
	// MaxReplyTopics (MAX_REPLY_TOPICS, default 1000, 1..1000000) bounds the
	// topics under ReplyPrefix that commands can make lockworker create; a
	// command naming a missing reply topic beyond it is refused FORBIDDEN in
	// the dead-letter topic.
	MaxReplyTopics int
}

// EmbeddedConfig is the development broker (package embedded).
type EmbeddedConfig struct {
	// Addr (EMBEDDED_KAFKA_ADDR, default 127.0.0.1:9092, port 0..65535) is
	// where it listens and what it advertises to clients.
	Addr string
	// Dir (EMBEDDED_KAFKA_DIR, default ".data/kafka", relative to the working
	// directory) keeps its topics and records across restarts.
	Dir string
	// MinSessionTimeout (EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT, default 6 s,
	// 0.1..300) is the broker's group.min.session.timeout.ms: 6 s like
	// Apache Kafka, so what works here works there.
	MinSessionTimeout time.Duration
}

// Defaults that other packages may want to name.
const (
	DefaultEmbeddedAddr = topics.DevelopmentBroker
	DefaultEmbeddedDir  = ".data/kafka"

	GroupProtocolClassic  = "classic"
	GroupProtocolConsumer = "consumer"

	// TOKEN_FLOOR_CHECK's values (Config.TokenFloorCheck).
	TokenFloorRequire = "require"
	TokenFloorWarn    = "warn"
	TokenFloorOff     = "off"

	// ApacheMinSessionTimeout is Apache Kafka's default
	// group.min.session.timeout.ms.
	ApacheMinSessionTimeout = 6 * time.Second

	// The embedded broker's group.min.session.timeout.ms is from
	// EmbeddedMinSessionTimeoutLow to EmbeddedMinSessionTimeoutHigh
	// (EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT, devkafka's -min-session-timeout):
	// above kfake's group.max.session.timeout.ms, 5 minutes, it would
	// refuse every group's join.
	EmbeddedMinSessionTimeoutLow  = 100 * time.Millisecond
	EmbeddedMinSessionTimeoutHigh = 5 * time.Minute
)

// MaxCommandsPartitions bounds COMMANDS_PARTITIONS (and devkafka's
// -partitions): a typo of a few digits more must not have a broker
// allocate partitions until it runs out of memory.
const MaxCommandsPartitions = 10000

// DefaultReplicationFactor is KAFKA_TOPIC_REPLICATION_FACTOR's default: the
// broker's default.replication.factor, as CreateTopics spells it.
const DefaultReplicationFactor = -1

// DefaultHTTPAddr is HTTP_ADDR's default.
const DefaultHTTPAddr = ":8062"

// Default returns the configuration with every default of docs/design.md
// ("Configuration").
// InstanceID is derived from the host name and process id.
func Default() Config {
	return Config{
		Postgres: PostgresConfig{
			Host:     "127.0.0.1",
			Port:     5432,
			Database: "lockworker",
			User:     "postgres",
			MinConns: 1,
			MaxConns: 10, AttemptTimeout: 15 * time.Second, UnreachableTimeout: 15 * time.Second,
		},
		DefaultLeaseDuration: topics.DefaultLeaseDuration,
		TokenFloorCheck:      TokenFloorRequire,
		CleanupInterval:      60 * time.Second,
		AcquireRetryDelay:    100 * time.Millisecond,
		Kafka: KafkaConfig{
			ConsumerGroup:     "lockworker",
			SessionTimeout:    ApacheMinSessionTimeout,
			HeartbeatInterval: 100 * time.Millisecond,
			GroupProtocol:     GroupProtocolClassic,
			Compression:       "snappy",
		},
		Topics: TopicsConfig{
			Commands:              "locks.commands",
			LockAcquired:          "locks.lock.acquired.v1",
			LockReleased:          "locks.lock.released.v1",
			LockExpired:           "locks.lock.expired.v1",
			LockRevoked:           "locks.lock.revoked.v1",
			DeadLetter:            "locks.commands.dlq",
			LockState:             "locks.state.v1",
			CommandsPartitions:    16,
			ReplicationFactor:     DefaultReplicationFactor,
			ReplyPrefix:           "locks.replies.",
			AutoCreateReplyTopics: true,
			MaxReplyTopics:        1000,
		},
		RelayMaxAttempts:    5,
		DeadLetterMaxBytes:  64 << 10,
		RequestRetention:    24 * time.Hour,
		LockEventsRetention: 7 * 24 * time.Hour,
		CompactStoredEvents: true,
		VacuumEnabled:       true,
		VacuumInterval:      2 * time.Second,
		VacuumDeadRows:      10000,
		HTTPAddr:            DefaultHTTPAddr,
		LogLevel:            zerolog.InfoLevel,
		LogFormat:           "json",
		InstanceID:          defaultInstanceID(),
		Embedded: EmbeddedConfig{
			Addr:              DefaultEmbeddedAddr,
			Dir:               DefaultEmbeddedDir,
			MinSessionTimeout: ApacheMinSessionTimeout,
		},
	}
}

// defaultInstanceID is the host name and the pid, the host name's bytes
// INSTANCE_ID cannot hold (spaces, non-ASCII letters: "büro pc") made '_',
// so that a default is never refused. (A group.instance.id, which must be
// the same member's only, is not made so: KAFKA_STATIC_MEMBERSHIP asks
// for INSTANCE_ID instead.)
func defaultInstanceID() string {
	host := []byte(hostname())
	for i, c := range host {
		if c <= ' ' || c > '~' {
			host[i] = '_'
		}
	}
	return string(host) + "-" + strconv.Itoa(os.Getpid())
}

// osHostname is os.Hostname; tests give a host name INSTANCE_ID's
// default cannot take.
var osHostname = os.Hostname

func hostname() string {
	host, err := osHostname()
	if err != nil || host == "" {
		host = "lockworker"
	}
	return host
}

// EmbeddedKafka reports whether lockworker must start the embedded broker:
// KAFKA_BOOTSTRAP_SERVERS is unset.
func (c Config) EmbeddedKafka() bool { return len(c.Kafka.BootstrapServers) == 0 }

// String prints the configuration with secrets masked, so a stray %v in a
// log line cannot leak a password.
func (c Config) String() string { return formatRedacted("config.Config", c.Redacted()) }

// GoString is String for %#v, which would otherwise print the raw fields.
func (c Config) GoString() string { return c.String() }

// MarshalJSON is Redacted's JSON, so that json.Marshal (and zerolog's
// Interface) cannot leak a secret either.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.Redacted()) }

// String masks the password (the struct is printable on its own).
func (p PostgresConfig) String() string {
	return fmt.Sprintf("config.PostgresConfig{url=%s min_conns=%d max_conns=%d}",
		p.redactedURL(), p.MinConns, p.MaxConns)
}

// GoString is String for %#v.
func (p PostgresConfig) GoString() string { return p.String() }

// MarshalJSON masks the password, as String.
func (p PostgresConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"url": p.redactedURL(), "min_conns": p.MinConns, "max_conns": p.MaxConns})
}

// String masks the password.
func (s SASLConfig) String() string {
	return fmt.Sprintf("config.SASLConfig{mechanism=%s username=%s password=%s}",
		s.Mechanism, s.Username, mask(s.Password))
}

// GoString is String for %#v.
func (s SASLConfig) GoString() string { return s.String() }

// MarshalJSON masks the password, as String.
func (s SASLConfig) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"mechanism": s.Mechanism, "username": s.Username, "password": mask(s.Password)})
}

// Names is the topics as the worker and the SDK name them.
func (t TopicsConfig) Names() topics.Names {
	return topics.Names{Commands: t.Commands, Acquired: t.LockAcquired, Released: t.LockReleased, Expired: t.LockExpired,
		Revoked: t.LockRevoked, State: t.LockState, DeadLetter: t.DeadLetter, ReplyPrefix: t.ReplyPrefix}
}
