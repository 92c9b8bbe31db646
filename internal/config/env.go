package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/omninode/lockworker/internal/secretfile"
	"github.com/omninode/lockworker/topics"
)

// FromEnv reads the configuration through getenv (os.Getenv in main; a map in
// tests), starting from Default. Every bad value is reported, not just the
// first, each naming its variable and (except secrets) the value:
//
//	DEFAULT_LEASE_DURATION: "abc" is not a number of seconds
//
// It applies every rule but those of the settings only lockworker's start
// uses, which WorkerFromEnv adds; ClientFromEnv reads and checks a Kafka
// client's settings only.
func FromEnv(getenv func(string) string) (Config, error) { return fromEnv(getenv, Config.validate) }

// ClientFromEnv is FromEnv reading and checking only the settings a Kafka
// client of the service uses (clientVariables), as lockctl does: the rest
// keep their defaults, unchecked, so a worker's setting it ignores, bad or
// a file not mounted where the client runs, cannot stop it, nor a default
// that depends on the host (INSTANCE_ID's host name).
func ClientFromEnv(getenv func(string) string) (Config, error) {
	return fromEnv(func(name string) string {
		if slices.Contains(clientVariables, name) {
			return getenv(name)
		}
		return ""
	}, Config.validateClient)
}

// clientVariables are the settings of KafkaOpts (the seed brokers, with the
// embedded broker's address in their stead, TLS, SASL) and of
// TopicsConfig.Names. A variable FromEnv reads is in it or is a worker's:
// TestClientVariables holds the list of the worker's.
var clientVariables = []string{
	"KAFKA_BOOTSTRAP_SERVERS", "EMBEDDED_KAFKA_ADDR",
	"KAFKA_TLS_ENABLED", "KAFKA_TLS_CA_FILE", "KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE", "KAFKA_TLS_INSECURE_SKIP_VERIFY",
	"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE",
	"KAFKA_TOPIC_COMMANDS", "KAFKA_TOPIC_LOCK_ACQUIRED", "KAFKA_TOPIC_LOCK_RELEASED", "KAFKA_TOPIC_LOCK_EXPIRED",
	"KAFKA_TOPIC_LOCK_REVOKED", "KAFKA_TOPIC_DEAD_LETTER", "KAFKA_TOPIC_LOCK_STATE", "REPLY_TOPIC_PREFIX",
}

// WorkerFromEnv is FromEnv for lockworker: it also applies the rules of
// the settings only lockworker's start uses (ValidateWorker), whose errors
// it reports with the others.
func WorkerFromEnv(getenv func(string) string) (Config, error) {
	return fromEnv(getenv, Config.validateWorker)
}

// fromEnv parses the variables, then applies rules (validate, or
// validateClient or validateWorker) to the result.
func fromEnv(getenv func(string) string, rules func(c Config, bootstrapSet bool) []error) (Config, error) {
	c := Default()
	p := &parser{getenv: getenv}

	pg := &c.Postgres
	p.secret("DATABASE_URL", &pg.URL)
	p.str("POSTGRES_HOST", &pg.Host)
	p.integer("POSTGRES_PORT", &pg.Port, 1, 65535)
	p.str("POSTGRES_DATABASE", &pg.Database)
	p.str("POSTGRES_USER", &pg.User)
	p.secret("POSTGRES_PASSWORD", &pg.Password)
	p.int32("POSTGRES_MIN_CONNECTIONS", &pg.MinConns, 0, 1000)
	p.int32("POSTGRES_MAX_CONNECTIONS", &pg.MaxConns, 1, 1000)
	p.seconds("POSTGRES_ATTEMPT_TIMEOUT", &pg.AttemptTimeout, 1, 3600)
	p.seconds("POSTGRES_UNREACHABLE_TIMEOUT", &pg.UnreachableTimeout, 0, 3600)

	p.seconds("DEFAULT_LEASE_DURATION", &c.DefaultLeaseDuration, 0.1, 86400)
	p.boolean("REQUIRE_FENCING_TOKEN", &c.RequireFencingToken)
	if v := strings.TrimSpace(getenv("TOKEN_FLOOR_CHECK")); v != "" {
		c.TokenFloorCheck = strings.ToLower(v)
	}
	p.boolean("AUTH_REQUIRED", &c.Auth.Required)
	p.str("AUTH_KEYS", &c.Auth.Keys)
	p.str("AUTH_REQUESTER_KEYS", &c.Auth.RequesterKeys)
	p.str("AUTH_HMAC_KEY_FILE", &c.Auth.HMACKeyFile)
	p.str("AUTH_AUDIENCE", &c.Auth.Audience)
	p.str("AUTH_ISSUER", &c.Auth.Issuer)
	p.secret("INSPECT_TOKEN", &c.InspectToken)
	p.seconds("CLEANUP_INTERVAL", &c.CleanupInterval, 0.1, 86400)
	p.seconds("ACQUIRE_RETRY_DELAY", &c.AcquireRetryDelay, 0.001, 5)

	k := &c.Kafka
	bootstrapSet := false
	if v := strings.TrimSpace(getenv("KAFKA_BOOTSTRAP_SERVERS")); v != "" {
		bootstrapSet = true
		k.BootstrapServers = p.brokers("KAFKA_BOOTSTRAP_SERVERS", v)
	}
	p.str("KAFKA_CONSUMER_GROUP", &k.ConsumerGroup)
	p.seconds("KAFKA_SESSION_TIMEOUT", &k.SessionTimeout, 1, 300)
	p.seconds("KAFKA_HEARTBEAT_INTERVAL", &k.HeartbeatInterval, 0.01, 60)
	if v := strings.TrimSpace(getenv("KAFKA_GROUP_PROTOCOL")); v != "" {
		k.GroupProtocol = strings.ToLower(v)
	}
	if v := strings.TrimSpace(getenv("KAFKA_COMPRESSION")); v != "" {
		k.Compression = strings.ToLower(v)
	}
	p.boolean("KAFKA_STATIC_MEMBERSHIP", &k.StaticMembership)
	if k.StaticMembership {
		k.GroupInstanceID = strings.TrimSpace(getenv("INSTANCE_ID"))
		if k.GroupInstanceID == "" {
			k.GroupInstanceID = hostname()
		}
	}
	p.boolean("KAFKA_TLS_ENABLED", &k.TLS.Enabled)
	p.str("KAFKA_TLS_CA_FILE", &k.TLS.CAFile)
	p.str("KAFKA_TLS_CERT_FILE", &k.TLS.CertFile)
	p.str("KAFKA_TLS_KEY_FILE", &k.TLS.KeyFile)
	p.boolean("KAFKA_TLS_INSECURE_SKIP_VERIFY", &k.TLS.InsecureSkipVerify)
	p.str("KAFKA_SASL_MECHANISM", &k.SASL.Mechanism)
	k.SASL.Mechanism = strings.ToUpper(k.SASL.Mechanism)
	p.str("KAFKA_SASL_USERNAME", &k.SASL.Username)
	p.secret("KAFKA_SASL_PASSWORD", &k.SASL.Password)

	t := &c.Topics
	p.str("KAFKA_TOPIC_COMMANDS", &t.Commands)
	p.str("KAFKA_TOPIC_LOCK_ACQUIRED", &t.LockAcquired)
	p.str("KAFKA_TOPIC_LOCK_RELEASED", &t.LockReleased)
	p.str("KAFKA_TOPIC_LOCK_EXPIRED", &t.LockExpired)
	p.str("KAFKA_TOPIC_LOCK_REVOKED", &t.LockRevoked)
	p.str("KAFKA_TOPIC_DEAD_LETTER", &t.DeadLetter)
	p.str("KAFKA_TOPIC_LOCK_STATE", &t.LockState)
	p.int32("COMMANDS_PARTITIONS", &t.CommandsPartitions, 1, MaxCommandsPartitions)
	p.replicationFactor("KAFKA_TOPIC_REPLICATION_FACTOR", &t.ReplicationFactor)
	p.str("REPLY_TOPIC_PREFIX", &t.ReplyPrefix)
	p.boolean("AUTO_CREATE_REPLY_TOPICS", &t.AutoCreateReplyTopics)
	p.integer("MAX_REPLY_TOPICS", &t.MaxReplyTopics, 1, 1000000)

	p.integer("RELAY_MAX_ATTEMPTS", &c.RelayMaxAttempts, 1, 1000)
	p.integer("DEAD_LETTER_MAX_BYTES", &c.DeadLetterMaxBytes, 1024, 900000)
	p.seconds("REQUEST_RETENTION", &c.RequestRetention, 60, 365*86400)
	p.seconds("LOCK_EVENTS_RETENTION", &c.LockEventsRetention, 0, 10*365*86400)
	p.boolean("COMPACT_STORED_EVENTS", &c.CompactStoredEvents)

	p.boolean("VACUUM_ENABLED", &c.VacuumEnabled)
	p.seconds("VACUUM_INTERVAL", &c.VacuumInterval, 0.1, 3600)
	p.integer("VACUUM_DEAD_ROWS", &c.VacuumDeadRows, 100, 1000000000)

	p.str("HTTP_ADDR", &c.HTTPAddr)
	if v := strings.TrimSpace(getenv("LOG_LEVEL")); v != "" {
		if lvl, ok := parseLevel(v); ok {
			c.LogLevel = lvl
		} else {
			p.fail("LOG_LEVEL", v, "is not one of trace, debug, info, warn, error, fatal, panic, disabled")
		}
	}
	if v := strings.TrimSpace(getenv("LOG_FORMAT")); v != "" {
		switch f := strings.ToLower(v); f {
		case "json", "console":
			c.LogFormat = f
		default:
			p.fail("LOG_FORMAT", v, "is not json or console")
		}
	}
	p.str("INSTANCE_ID", &c.InstanceID)
	p.str("EMBEDDED_KAFKA_ADDR", &c.Embedded.Addr)
	p.str("EMBEDDED_KAFKA_DIR", &c.Embedded.Dir)
	p.seconds("EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT", &c.Embedded.MinSessionTimeout, EmbeddedMinSessionTimeoutLow.Seconds(), EmbeddedMinSessionTimeoutHigh.Seconds())

	p.errs = append(p.errs, rules(c, bootstrapSet)...)
	if err := errors.Join(p.errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks a Config built in code with the rules that span fields or
// do not depend on parsing (FromEnv applies them too). The range of each
// number and duration is checked only while FromEnv parses it: a Config
// built in code must keep to the ranges its fields' comments give. Errors
// name the environment variable of the bad setting.
func (c Config) Validate() error { return errors.Join(c.validate(false)...) }

// ValidateWorker is Validate with the rules of the settings only
// lockworker's start uses (WorkerFromEnv applies them too): a program that
// reads the environment but joins no consumer group must not be refused
// for them.
func (c Config) ValidateWorker() error { return errors.Join(c.validateWorker(false)...) }

// validateWorker is ValidateWorker's checks: validate's and its own
// (bootstrapSet: as validate's).
func (c Config) validateWorker(bootstrapSet bool) []error {
	errs := c.validate(bootstrapSet)
	k := c.Kafka
	// The embedded broker's group.min.session.timeout.ms is known here:
	// its join would be refused only once the service had started. The
	// consumer protocol's timeout is the group's, which it takes at any
	// value; another broker's minimum is not known.
	if c.embeddedBroker(bootstrapSet) && k.GroupProtocol == GroupProtocolClassic && k.SessionTimeout < c.Embedded.MinSessionTimeout {
		errs = append(errs, varError("KAFKA_SESSION_TIMEOUT", k.SessionTimeout.String(), fmt.Sprintf(
			"is less than EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT (%s), the embedded broker's group.min.session.timeout.ms, so it would refuse the consumer group's join: raise KAFKA_SESSION_TIMEOUT or lower EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT",
			c.Embedded.MinSessionTimeout)))
	}
	return errs
}

// validate is Validate's checks, which FromEnv runs after parsing: the
// client's (validateClient) and those of the settings only the workers read.
// bootstrapSet says KAFKA_BOOTSTRAP_SERVERS was set, so empty BootstrapServers
// mean it did not parse (reported already), not the embedded broker.
func (c Config) validate(bootstrapSet bool) []error {
	v := checks{errs: c.validateClient(bootstrapSet)}

	pg := c.Postgres
	if pg.URL != "" {
		if err := checkConnString(pg.URL); err != nil {
			v.failNoValue("DATABASE_URL", "%v", err)
		}
	} else {
		if pg.Host == "" {
			v.failNoValue("POSTGRES_HOST", "is empty")
		}
		if pg.Database == "" {
			v.failNoValue("POSTGRES_DATABASE", "is empty")
		}
		if strings.ContainsFunc(pg.Password, isControl) {
			v.failNoValue("POSTGRES_PASSWORD", controlInSecret)
		}
	}
	if pg.MinConns > pg.MaxConns {
		v.fail("POSTGRES_MIN_CONNECTIONS", strconv.Itoa(int(pg.MinConns)),
			"is more than POSTGRES_MAX_CONNECTIONS (%d)", pg.MaxConns)
	}
	// A probe a second, each given up to 2 s: a shorter bound would have
	// a replica give its partitions up between two probes.
	if d := pg.UnreachableTimeout; d > 0 && d < 3*time.Second {
		v.fail("POSTGRES_UNREACHABLE_TIMEOUT", d.String(), "must be 0 (never) or at least 3 s")
	}

	a := c.Auth
	hmacKeyFile := v.secretPath("AUTH_HMAC_KEY_FILE", a.HMACKeyFile)
	if a.Required && a.Keys == "" && a.RequesterKeys == "" && a.HMACKeyFile == "" {
		v.failNoValue("AUTH_REQUIRED", "needs AUTH_KEYS, AUTH_REQUESTER_KEYS or AUTH_HMAC_KEY_FILE")
	}
	if !a.Required {
		for _, f := range []struct{ name, v string }{{"AUTH_KEYS", a.Keys}, {"AUTH_REQUESTER_KEYS", a.RequesterKeys}, {"AUTH_HMAC_KEY_FILE", hmacKeyFile},
			{"AUTH_AUDIENCE", a.Audience}, {"AUTH_ISSUER", a.Issuer}} {
			if f.v != "" {
				v.fail(f.name, f.v, "is set but AUTH_REQUIRED is not true")
			}
		}
	}

	switch c.TokenFloorCheck {
	case TokenFloorRequire, TokenFloorWarn, TokenFloorOff:
	default:
		v.fail("TOKEN_FLOOR_CHECK", c.TokenFloorCheck, "is not require, warn or off")
	}

	if d := c.LockEventsRetention; d > 0 && d < time.Minute {
		v.fail("LOCK_EVENTS_RETENTION", d.String(), "must be 0 (no history) or at least 60 s")
	}

	k := c.Kafka
	if k.ConsumerGroup == "" {
		v.failNoValue("KAFKA_CONSUMER_GROUP", "is empty")
	}
	if k.SessionTimeout < time.Second {
		v.fail("KAFKA_SESSION_TIMEOUT", k.SessionTimeout.String(), "is less than 1 s")
	}
	if k.HeartbeatInterval <= 0 || 3*k.HeartbeatInterval >= k.SessionTimeout {
		// Kafka's own advice: heartbeat at most a third of the session, so
		// one lost heartbeat does not end it.
		v.fail("KAFKA_HEARTBEAT_INTERVAL", k.HeartbeatInterval.String(),
			"must be positive and less than a third of KAFKA_SESSION_TIMEOUT (%s)", k.SessionTimeout)
	}
	if k.GroupProtocol != GroupProtocolClassic && k.GroupProtocol != GroupProtocolConsumer {
		v.fail("KAFKA_GROUP_PROTOCOL", k.GroupProtocol, "is not classic or consumer")
	}
	const codecs = "snappy, none, gzip or lz4"
	switch _, ok := compressionCodecs[k.Compression]; {
	case ok:
	case k.Compression == "zstd":
		v.fail("KAFKA_COMPRESSION", k.Compression, "is refused: it can compress a lock.status reply more than 256-fold, and the SDK's readers skip such a batch as a decompression bomb; use "+codecs)
	default:
		v.fail("KAFKA_COMPRESSION", k.Compression, "is not "+codecs)
	}
	// Kafka's rule for a group.instance.id (its Java client's
	// JoinGroupRequest.validateGroupInstanceId) is a topic name's.
	if k.StaticMembership && !topics.ValidTopicName(k.GroupInstanceID) {
		v.fail("KAFKA_STATIC_MEMBERSHIP", k.GroupInstanceID, "needs a group.instance.id (INSTANCE_ID, else the host name) of 1..249 letters, digits, '.', '_' and '-', as Kafka's clients accept")
	}
	// One broker holds one replica: creating a topic would fail at start
	// (INVALID_REPLICATION_FACTOR), or later park the replies to a
	// requester whose reply topic the relay creates.
	if rf := c.Topics.ReplicationFactor; rf > 1 && c.embeddedBroker(bootstrapSet) {
		v.fail("KAFKA_TOPIC_REPLICATION_FACTOR", strconv.Itoa(int(rf)), "needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker is one broker, so topics can have only one replica: use -1 or 1)")
	}

	t := c.Topics
	// A bad prefix is validateClient's to report.
	if a.Required && validReplyPrefix(t.ReplyPrefix) && len(t.ReplyPrefix)+topics.MaxSubjectBytes > 249 {
		// Refused here rather than token by token: every requester with a
		// long enough name would otherwise have no usable reply topic.
		v.fail("REPLY_TOPIC_PREFIX", t.ReplyPrefix, "is longer than %d bytes: with AUTH_REQUIRED a reply topic is the prefix and the token's sub (up to %d bytes), at most 249 bytes in all",
			249-topics.MaxSubjectBytes, topics.MaxSubjectBytes)
	}
	if t.CommandsPartitions < 1 {
		v.fail("COMMANDS_PARTITIONS", strconv.Itoa(int(t.CommandsPartitions)), "is less than 1")
	}
	// A bearer token travels in a header, which carries no white space at
	// its ends (HTTP trims it) and no control bytes: such a token could
	// never be presented, and every inspection would be refused.
	if strings.ContainsFunc(c.InspectToken, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		v.failNoValue("INSPECT_TOKEN", "may hold only visible ASCII characters, no spaces (a trailing newline from a secret file?)")
	} else if c.InspectToken != "" && len(c.InspectToken) < MinInspectTokenBytes {
		// A placeholder ("CHANGE-ME") or a word would guard with something
		// guessable what only its bearers see: the inspection endpoints
		// (/locks/*, /sessions/*, /health/locks) and, on /locks, the
		// owner_metadata and the waiters' request_ids. Owner ids and
		// fencing tokens are no secret it keeps: the lifecycle events
		// carry them too.
		v.failNoValue("INSPECT_TOKEN", "is shorter than %d bytes: use a random one, e.g. openssl rand -hex 32", MinInspectTokenBytes)
	} else if len(c.InspectToken) > MaxInspectTokenBytes {
		// The HTTP server reads at most 16 KiB of headers.
		v.failNoValue("INSPECT_TOKEN", "is longer than %d bytes", MaxInspectTokenBytes)
	}

	if err := checkHTTPAddr(c.HTTPAddr); err != nil {
		v.errs = append(v.errs, err)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		v.fail("LOG_FORMAT", c.LogFormat, "is not json or console")
	}
	if !validInstanceID(c.InstanceID) {
		v.fail("INSTANCE_ID", c.InstanceID, "must be 1..255 printable ASCII characters without spaces")
	}
	if c.Embedded.Dir == "" {
		v.failNoValue("EMBEDDED_KAFKA_DIR", "is empty")
	}
	if c.Embedded.MinSessionTimeout <= 0 {
		v.fail("EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT", c.Embedded.MinSessionTimeout.String(), "is not positive")
	}
	return v.errs
}

// validateClient is the checks of the settings a Kafka client of the
// service reads (clientVariables), which read no other field: ClientFromEnv
// applies only them (bootstrapSet: as validate's).
func (c Config) validateClient(bootstrapSet bool) []error {
	var v checks
	k := c.Kafka
	keyFile := v.secretPath("KAFKA_TLS_KEY_FILE", k.TLS.KeyFile)
	if !k.TLS.Enabled {
		for _, f := range []struct{ name, v string }{
			{"KAFKA_TLS_CA_FILE", k.TLS.CAFile},
			{"KAFKA_TLS_CERT_FILE", k.TLS.CertFile},
			{"KAFKA_TLS_KEY_FILE", keyFile},
		} {
			if f.v != "" {
				v.fail(f.name, f.v, "is set but KAFKA_TLS_ENABLED is not true")
			}
		}
		if k.TLS.InsecureSkipVerify {
			v.fail("KAFKA_TLS_INSECURE_SKIP_VERIFY", "true", "is set but KAFKA_TLS_ENABLED is not true")
		}
	}
	if (k.TLS.CertFile == "") != (k.TLS.KeyFile == "") {
		v.failNoValue("KAFKA_TLS_CERT_FILE", "and KAFKA_TLS_KEY_FILE must be set together")
	}
	if k.SASL.Mechanism != "" {
		switch m := strings.ToUpper(k.SASL.Mechanism); m {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		default:
			v.fail("KAFKA_SASL_MECHANISM", k.SASL.Mechanism, "is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
		if k.SASL.Username == "" {
			v.failNoValue("KAFKA_SASL_USERNAME", "is required with KAFKA_SASL_MECHANISM")
		}
		if k.SASL.Password == "" {
			v.failNoValue("KAFKA_SASL_PASSWORD", "is required with KAFKA_SASL_MECHANISM")
		} else if strings.ContainsFunc(k.SASL.Password, isControl) {
			v.failNoValue("KAFKA_SASL_PASSWORD", controlInSecret)
		}
	} else if k.SASL.Username != "" || k.SASL.Password != "" {
		v.failNoValue("KAFKA_SASL_MECHANISM", "is required with KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD")
	}
	if c.embeddedBroker(bootstrapSet) {
		// The embedded broker has neither; accepting them would hide a
		// forgotten KAFKA_BOOTSTRAP_SERVERS.
		if k.TLS.Enabled {
			v.failNoValue("KAFKA_TLS_ENABLED", "needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker has no TLS)")
		}
		if k.SASL.Mechanism != "" {
			v.failNoValue("KAFKA_SASL_MECHANISM", "needs KAFKA_BOOTSTRAP_SERVERS (the embedded broker has no SASL)")
		}
	}

	t := c.Topics
	named := []struct{ name, v string }{
		{"KAFKA_TOPIC_COMMANDS", t.Commands},
		{"KAFKA_TOPIC_LOCK_ACQUIRED", t.LockAcquired},
		{"KAFKA_TOPIC_LOCK_RELEASED", t.LockReleased},
		{"KAFKA_TOPIC_LOCK_EXPIRED", t.LockExpired},
		{"KAFKA_TOPIC_LOCK_REVOKED", t.LockRevoked},
		{"KAFKA_TOPIC_DEAD_LETTER", t.DeadLetter},
		{"KAFKA_TOPIC_LOCK_STATE", t.LockState},
	}
	seen := map[string]string{}
	for _, n := range named {
		switch {
		case !topics.ValidTopicName(n.v):
			v.fail(n.name, n.v, "is not a valid Kafka topic name (1..249 of [a-zA-Z0-9._-])")
		case seen[n.v] != "":
			v.fail(n.name, n.v, "is the same topic as %s", seen[n.v])
		case t.ReplyPrefix != "" && strings.HasPrefix(n.v, t.ReplyPrefix):
			// Otherwise a command's reply_to could name this topic.
			v.fail(n.name, n.v, "starts with REPLY_TOPIC_PREFIX %q, so requesters could write into it", t.ReplyPrefix)
		}
		seen[n.v] = n.name
	}
	if !validReplyPrefix(t.ReplyPrefix) {
		v.fail("REPLY_TOPIC_PREFIX", t.ReplyPrefix, "is not a non-empty prefix of valid Kafka topic names")
	}
	if !validHostPort(c.Embedded.Addr, 0) {
		v.fail("EMBEDDED_KAFKA_ADDR", c.Embedded.Addr, "is not host:port with a port of 0..65535 (e.g. 127.0.0.1:9092)")
	}
	return v.errs
}

// embeddedBroker reports that the configuration is the embedded broker's:
// no KAFKA_BOOTSTRAP_SERVERS (bootstrapSet: as validate's).
func (c Config) embeddedBroker(bootstrapSet bool) bool {
	return len(c.Kafka.BootstrapServers) == 0 && !bootstrapSet
}

// validReplyPrefix reports whether p begins valid topic names.
func validReplyPrefix(p string) bool {
	return p != "" && len(p) < 249 && topics.ValidTopicName(p+"x")
}

// checks collects the errors of a validation.
type checks struct{ errs []error }

func (v *checks) fail(name, value, format string, args ...any) {
	v.errs = append(v.errs, varError(name, value, fmt.Sprintf(format, args...)))
}

func (v *checks) failNoValue(name, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// secretPath checks name, one of secretPaths, and returns what errors may
// show of its value: a secret where its file's path belongs is refused,
// never quoted.
func (v *checks) secretPath(name, value string) string {
	shown, err := secretPath(name, value)
	if err != nil {
		v.errs = append(v.errs, err)
	}
	return shown
}

// HTTPAddrFromEnv is HTTP_ADDR as FromEnv reads and checks it (trimmed;
// DefaultHTTPAddr when unset or blank), without the rest of the
// configuration: cmd/healthcheck asks the port lockworker listens on.
func HTTPAddrFromEnv(getenv func(string) string) (string, error) {
	addr := DefaultHTTPAddr
	p := &parser{getenv: getenv}
	p.str("HTTP_ADDR", &addr)
	if err := checkHTTPAddr(addr); err != nil {
		return "", err
	}
	return addr, nil
}

// checkHTTPAddr checks HTTP_ADDR. Port 0 listens on a free port
// (Manager.HTTPAddr says which): tests use it. The host may be empty: every
// interface.
func checkHTTPAddr(addr string) error {
	if host, _, err := net.SplitHostPort(addr); err != nil || strings.ContainsAny(host, " /") || !validPort(addr, 0) {
		return varError("HTTP_ADDR", addr, "is not host:port with a port of 0..65535 (e.g. :8062)")
	}
	return nil
}

// MinInspectTokenBytes and MaxInspectTokenBytes bound INSPECT_TOKEN.
const (
	MinInspectTokenBytes = 16
	MaxInspectTokenBytes = 4096
)

// controlInSecret refuses a password holding a control character. Passwords
// are sent as they are, so a line end from the file a secret was made of
// would fail every login with the server's bare "authentication failed".
// Spaces stay allowed: a password may hold them.
const controlInSecret = "holds a control character (a trailing newline from a secret file?); value not shown"

// isControl reports an ASCII control character (C0 or DEL).
func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

func validInstanceID(s string) bool {
	return s != "" && len(s) <= 255 && strings.IndexFunc(s, func(r rune) bool { return r <= ' ' || r > '~' }) < 0
}

// parser reads variables through getenv and collects every error, so one run
// reports all mistakes.
type parser struct {
	getenv func(string) string
	errs   []error
}

func varError(name, value, reason string) error {
	return fmt.Errorf("%s: %q %s", name, value, reason)
}

func (p *parser) fail(name, value, reason string) {
	p.errs = append(p.errs, varError(name, value, reason))
}

// str sets *dst to the trimmed value when the variable is set.
func (p *parser) str(name string, dst *string) {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		*dst = v
	}
}

// secret sets *dst to the raw value: spaces may be part of a password. Or
// it reads the file that name_FILE names (a mounted Kubernetes or Docker
// secret, which the process environment then does not show), less one
// line end at its end; both set is an error, and so is a file left empty
// by that: unlike an empty variable, it cannot mean unset, as setting
// name_FILE asks for the secret (an empty INSPECT_TOKEN would open the
// inspection endpoints to anyone, an empty DATABASE_URL fall back to the
// POSTGRES_* settings). No error quotes the secret.
func (p *parser) secret(name string, dst *string) {
	v, path := p.getenv(name), p.getenv(name+"_FILE")
	switch {
	case v != "" && path != "":
		p.errs = append(p.errs, fmt.Errorf("%s_FILE: set together with %s: set one of them", name, name))
	case path != "":
		b, err := secretfile.Read(path)
		if err != nil {
			// Without the path: a secret set there by mistake is not
			// echoed.
			p.errs = append(p.errs, fmt.Errorf("%s_FILE: the file it names %w", name, err))
			return
		}
		secret := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if secret == "" {
			p.errs = append(p.errs, fmt.Errorf("%s_FILE: the file it names is empty (for no %s, leave %s_FILE unset)", name, name, name))
			return
		}
		*dst = secret
	case v != "":
		*dst = v
	}
}

// ChildEnv is base (os.Environ's form) for a child process, with
// overrides (NAME=value) set: a NAME_FILE of base whose NAME an override
// sets is dropped, as the two together are refused (secret). (An override
// of a NAME_FILE leaves base's NAME: no caller gives a secret so.)
func ChildEnv(base []string, overrides ...string) []string {
	set := map[string]bool{}
	for _, o := range overrides {
		name, _, _ := strings.Cut(o, "=")
		set[name+"_FILE"] = true
	}
	env := make([]string, 0, len(base)+len(overrides))
	for _, kv := range base {
		if name, _, _ := strings.Cut(kv, "="); !set[name] {
			env = append(env, kv)
		}
	}
	return append(env, overrides...)
}

func (p *parser) integer(name string, dst *int, lo, hi int) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		p.fail(name, v, "is not an integer")
	case n < lo || n > hi:
		p.fail(name, v, fmt.Sprintf("is out of range %d..%d", lo, hi))
	default:
		*dst = n
	}
}

func (p *parser) int32(name string, dst *int32, lo, hi int) {
	n := int(*dst)
	p.integer(name, &n, lo, hi)
	*dst = int32(n) // in range: lo..hi fit int32
}

// replicationFactor reads a topic replication factor
// (topics.EnvReplicationFactor).
func (p *parser) replicationFactor(name string, dst *int16) {
	n, set, err := topics.EnvReplicationFactor(name, p.getenv(name))
	switch {
	case err != nil:
		p.errs = append(p.errs, err)
	case set:
		*dst = n
	}
}

func (p *parser) seconds(name string, dst *time.Duration, lo, hi float64) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	f, err := strconv.ParseFloat(v, 64)
	switch {
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		p.fail(name, v, "is not a number of seconds")
	case f < lo || f > hi:
		p.fail(name, v, "is out of range "+strconv.FormatFloat(lo, 'f', -1, 64)+".."+strconv.FormatFloat(hi, 'f', -1, 64)+" seconds")
	case f > 0 && math.Round(f*float64(time.Second)) == 0:
		// It would round to 0, which some settings take as "off".
		p.fail(name, v, "is above 0 but below a nanosecond")
	default:
		// Rounded: 0.1*1e9 is not exactly 1e8 in binary floating point.
		*dst = time.Duration(math.Round(f * float64(time.Second)))
	}
}

func (p *parser) boolean(name string, dst *bool) {
	v := strings.TrimSpace(p.getenv(name))
	if v == "" {
		return
	}
	switch strings.ToLower(v) {
	case "1", "t", "true", "yes", "y", "on":
		*dst = true
	case "0", "f", "false", "no", "n", "off":
		*dst = false
	default:
		p.fail(name, v, "is not a boolean (true/false, 1/0, yes/no, on/off)")
	}
}

// brokers splits a comma-separated host[:port] list; kgo defaults a missing
// port to 9092.
func (p *parser) brokers(name, v string) []string {
	var out []string
	for _, b := range strings.Split(v, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		hp := b
		if !strings.Contains(b, ":") || (strings.HasPrefix(b, "[") && strings.HasSuffix(b, "]")) {
			hp = net.JoinHostPort(strings.Trim(b, "[]"), "9092")
		}
		if !validHostPort(hp, 1) {
			p.fail(name, v, fmt.Sprintf("has %q, which is not host[:port] with a port of 1..65535", b))
			return nil
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		p.fail(name, v, "lists no broker")
	}
	return out
}

// validHostPort reports whether s is host:port with a host and a port
// number of minPort..65535.
func validHostPort(s string, minPort int) bool {
	host, _, err := net.SplitHostPort(s)
	return err == nil && host != "" && !strings.ContainsAny(host, " /") && validPort(s, minPort)
}

// validPort reports whether s's port is a number of minPort..65535: a
// service name ("http") would not survive as a URL's port.
func validPort(s string, minPort int) bool {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= minPort && n <= 65535
}

func parseLevel(s string) (zerolog.Level, bool) {
	switch strings.ToLower(s) {
	case "trace":
		return zerolog.TraceLevel, true
	case "debug":
		return zerolog.DebugLevel, true
	case "info":
		return zerolog.InfoLevel, true
	case "warn", "warning":
		return zerolog.WarnLevel, true
	case "error":
		return zerolog.ErrorLevel, true
	case "fatal":
		return zerolog.FatalLevel, true
	case "panic":
		return zerolog.PanicLevel, true
	case "disabled", "off", "none":
		return zerolog.Disabled, true
	}
	return 0, false
}
