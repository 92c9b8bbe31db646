package config

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/rs/zerolog"
)

// masked replaces a secret that is set; an empty secret stays empty so a
// reader can tell "no password" from "hidden password".
const masked = "***"

func mask(s string) string {
	if s == "" {
		return ""
	}
	return masked
}

// secretPaths are the settings that name a file holding a secret: the
// Kafka client's private key, and the HMAC issuer secret, which signs as
// any requester. (A secret's own NAME_FILE is never shown at all:
// parser.secret.)
func (c Config) secretPaths() []setting {
	return []setting{{"AUTH_HMAC_KEY_FILE", c.Auth.HMACKeyFile}, {"KAFKA_TLS_KEY_FILE", c.Kafka.TLS.KeyFile}}
}

// setting is a variable's name and value.
type setting struct{ name, value string }

// notAPath stands in logs and errors for the value of a secretPaths
// setting that does not look like a path.
const notAPath = "(value redacted: it looks like a key, not a path)"

// secretPath returns what logs and errors may show of value, the value of
// name, one of secretPaths: value when it looks like a path, else
// notAPath, with the error that refuses it. The secret itself pasted
// there by mistake (a Helm value, or a Kubernetes Secret given as env:
// rather than mounted) would otherwise be echoed in the start's config
// line and in every error naming the file. A value of minBareKeyBytes or
// more may be either (base64 has '/' too): it is taken only when a file
// of that name exists, and shown only when it has a '/' as well (a word
// alone names a file of the working directory, or is a key). A shorter
// one is no strong secret: shown, and refused later if no file has it.
func secretPath(name, value string) (string, error) {
	switch {
	case len(value) > maxPathBytes || strings.ContainsFunc(value, isControl) || strings.Contains(value, "-----BEGIN"):
	case len(value) < minBareKeyBytes:
		return value, nil
	default:
		if _, err := os.Stat(value); err == nil {
			if strings.ContainsRune(value, '/') {
				return value, nil
			}
			return notAPath, nil
		}
	}
	return notAPath, fmt.Errorf("%s is not a readable file path (value not shown: it may be a key pasted in place of its path)", name)
}

// maxPathBytes is longer than any path a deployment mounts a secret at.
const maxPathBytes = 1024

// minBareKeyBytes is the shortest value without a '/' that may be a pasted
// secret rather than a file in the working directory: an HMAC secret has
// at least 32 bytes, and an encoded key more.
const minBareKeyBytes = 32

// Redacted returns every setting keyed by its environment variable, secrets
// masked, durations in seconds: safe to log or serve on a debug endpoint.
// With DATABASE_URL set, the POSTGRES_* connection settings it overrides
// are left out.
func (c Config) Redacted() map[string]any {
	pg, k, t := c.Postgres, c.Kafka, c.Topics
	databaseURL := ""
	if pg.URL != "" {
		databaseURL = redactDatabaseURL(pg.URL)
	}
	m := map[string]any{
		"DATABASE_URL":                       databaseURL,
		"POSTGRES_HOST":                      pg.Host,
		"POSTGRES_PORT":                      pg.Port,
		"POSTGRES_DATABASE":                  pg.Database,
		"POSTGRES_USER":                      pg.User,
		"POSTGRES_PASSWORD":                  mask(pg.Password),
		"POSTGRES_MIN_CONNECTIONS":           pg.MinConns,
		"POSTGRES_MAX_CONNECTIONS":           pg.MaxConns,
		"POSTGRES_ATTEMPT_TIMEOUT":           pg.AttemptTimeout.Seconds(),
		"POSTGRES_UNREACHABLE_TIMEOUT":       pg.UnreachableTimeout.Seconds(),
		"DEFAULT_LEASE_DURATION":             c.DefaultLeaseDuration.Seconds(),
		"REQUIRE_FENCING_TOKEN":              c.RequireFencingToken,
		"TOKEN_FLOOR_CHECK":                  c.TokenFloorCheck,
		"AUTH_REQUIRED":                      c.Auth.Required,
		"AUTH_KEYS":                          c.Auth.Keys,
		"AUTH_REQUESTER_KEYS":                c.Auth.RequesterKeys,
		"AUTH_AUDIENCE":                      c.Auth.Audience,
		"AUTH_ISSUER":                        c.Auth.Issuer,
		"INSPECT_TOKEN":                      mask(c.InspectToken),
		"CLEANUP_INTERVAL":                   c.CleanupInterval.Seconds(),
		"ACQUIRE_RETRY_DELAY":                c.AcquireRetryDelay.Seconds(),
		"KAFKA_BOOTSTRAP_SERVERS":            strings.Join(k.BootstrapServers, ","),
		"KAFKA_CONSUMER_GROUP":               k.ConsumerGroup,
		"KAFKA_SESSION_TIMEOUT":              k.SessionTimeout.Seconds(),
		"KAFKA_HEARTBEAT_INTERVAL":           k.HeartbeatInterval.Seconds(),
		"KAFKA_GROUP_PROTOCOL":               k.GroupProtocol,
		"KAFKA_STATIC_MEMBERSHIP":            k.StaticMembership,
		"KAFKA_COMPRESSION":                  k.Compression,
		"KAFKA_TLS_ENABLED":                  k.TLS.Enabled,
		"KAFKA_TLS_CA_FILE":                  k.TLS.CAFile,
		"KAFKA_TLS_CERT_FILE":                k.TLS.CertFile,
		"KAFKA_TLS_INSECURE_SKIP_VERIFY":     k.TLS.InsecureSkipVerify,
		"KAFKA_SASL_MECHANISM":               k.SASL.Mechanism,
		"KAFKA_SASL_USERNAME":                k.SASL.Username,
		"KAFKA_SASL_PASSWORD":                mask(k.SASL.Password),
		"KAFKA_TOPIC_COMMANDS":               t.Commands,
		"KAFKA_TOPIC_LOCK_ACQUIRED":          t.LockAcquired,
		"KAFKA_TOPIC_LOCK_RELEASED":          t.LockReleased,
		"KAFKA_TOPIC_LOCK_EXPIRED":           t.LockExpired,
		"KAFKA_TOPIC_LOCK_REVOKED":           t.LockRevoked,
		"KAFKA_TOPIC_DEAD_LETTER":            t.DeadLetter,
		"KAFKA_TOPIC_LOCK_STATE":             t.LockState,
		"COMMANDS_PARTITIONS":                t.CommandsPartitions,
		"KAFKA_TOPIC_REPLICATION_FACTOR":     t.ReplicationFactor,
		"REPLY_TOPIC_PREFIX":                 t.ReplyPrefix,
		"AUTO_CREATE_REPLY_TOPICS":           t.AutoCreateReplyTopics,
		"MAX_REPLY_TOPICS":                   t.MaxReplyTopics,
		"RELAY_MAX_ATTEMPTS":                 c.RelayMaxAttempts,
		"DEAD_LETTER_MAX_BYTES":              c.DeadLetterMaxBytes,
		"REQUEST_RETENTION":                  c.RequestRetention.Seconds(),
		"LOCK_EVENTS_RETENTION":              c.LockEventsRetention.Seconds(),
		"COMPACT_STORED_EVENTS":              c.CompactStoredEvents,
		"VACUUM_ENABLED":                     c.VacuumEnabled,
		"VACUUM_INTERVAL":                    c.VacuumInterval.Seconds(),
		"VACUUM_DEAD_ROWS":                   c.VacuumDeadRows,
		"HTTP_ADDR":                          c.HTTPAddr,
		"LOG_LEVEL":                          c.LogLevel.String(),
		"LOG_FORMAT":                         c.LogFormat,
		"INSTANCE_ID":                        c.InstanceID,
		"EMBEDDED_KAFKA_ADDR":                c.Embedded.Addr,
		"EMBEDDED_KAFKA_DIR":                 c.Embedded.Dir,
		"EMBEDDED_KAFKA_MIN_SESSION_TIMEOUT": c.Embedded.MinSessionTimeout.Seconds(),
	}
	for _, p := range c.secretPaths() {
		m[p.name], _ = secretPath(p.name, p.value)
	}
	if pg.URL != "" {
		// DATABASE_URL wins over these: shown, their defaults would name
		// a database the replica does not use.
		for _, k := range []string{"POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DATABASE", "POSTGRES_USER", "POSTGRES_PASSWORD"} {
			delete(m, k)
		}
	}
	return m
}

// MarshalZerologObject logs the redacted settings:
// log.Info().Object("config", cfg).Msg("starting").
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	m := c.Redacted()
	for _, k := range sortedKeys(m) {
		switch v := m[k].(type) {
		case string:
			e.Str(k, v)
		case int:
			e.Int(k, v)
		case int32:
			e.Int32(k, v)
		case bool:
			e.Bool(k, v)
		case float64:
			e.Float64(k, v)
		default:
			e.Interface(k, v)
		}
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func formatRedacted(name string, m map[string]any) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, k := range sortedKeys(m) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k)
		b.WriteByte('=')
		if s, ok := m[k].(string); ok {
			b.WriteString(strconv.Quote(s))
		} else {
			fmt.Fprint(&b, m[k])
		}
	}
	b.WriteByte('}')
	return b.String()
}
