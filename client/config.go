package client

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// Defaults of Config.
const (
	DefaultReplyTimeout   = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
)

// EnvReplyTopicReplicationFactor is the environment variable of
// Config.ReplyTopicReplicationFactor.
const EnvReplyTopicReplicationFactor = "LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR"

// Config configures a Client. The zero value works next to
// `go run ./cmd/lockworker` on the same machine.
type Config struct {
	// Brokers are the seed brokers ("host:port"). Default: the comma-separated
	// KAFKA_BOOTSTRAP_SERVERS environment variable when set (the variable
	// lockworker reads), else 127.0.0.1:9092, lockworker's embedded
	// development broker. Ignored when Client is set.
	Brokers []string

	// KafkaOpts are extra options (TLS, SASL, logging) for the Kafka clients
	// built from Brokers. Default none. Ignored when Client is set. They may
	// not consume (kgo.ConsumeTopics, kgo.ConsumePartitions or
	// kgo.ConsumerGroup), as Client may not, nor set kgo.RecordPartitioner,
	// not even to a murmur2 one, which New cannot tell from another (New
	// fails with ErrInvalidConfig on either): kgo's default puts a command
	// in the partition its lock key hashes to, so a lock's commands share a
	// partition and are applied in the order sent (an abandoned acquire's
	// release after the acquire), as docs/design.md "Lock key" says.
	//
	// Before them, the SDK's clients take kgo.MetadataMinAge(time.Second)
	// and a kgo.RetryBackoffFn capped at 1 s, which KafkaOpts may replace.
	// kgo's defaults (5 s, and a backoff growing to 5 s) would hold a
	// command produced while the broker was down until up to 5 s after it
	// is back (kgo sends it once a metadata refresh succeeds, and spaces a
	// refresh MetadataMinAge after a failed one), and reach a broker that
	// is back up to 5 s late.
	//
	// The producer and the reply reader also take
	// kgo.RequestTimeoutOverhead(2 * time.Second), and the producer
	// kgo.ProduceRequestTimeout(2 * time.Second), which KafkaOpts may
	// replace: a connection that stops answering without closing (a NAT or
	// firewall dropped it) is given up within 3 s by the reader and 4 s by
	// the producer, where kgo's defaults took 11 s and 20 s, long enough to
	// lose a session of the default 10 s TTL with the brokers reachable.
	// Longer deadlines here make sessions and leases shorter than them
	// unsafe against such a connection.
	//
	// The clients that read the reply topic and the lock state topic (Watch,
	// Locks, Election.Observe) bound what one fetched record batch may
	// decompress to at 8 MiB (kgo.MaxDecompressBatchBytes; kgo's own
	// default is 1 GiB, inflated in memory): 8 times the largest batch the
	// workers write, of records of a few KiB each, so that a batch from
	// another producer to those topics cannot make a reader inflate a
	// gigabyte. Below it, a batch may decompress to at most 256 times its
	// compressed size (the records kgo makes of it counted), and a fetch
	// response is at most 256 KiB (kgo.FetchMaxBytes), so that a response
	// of many small batches inflates to at most 64 MiB. They use their own
	// decompressor (kgo.WithDecompressor) for that, which also refuses a
	// batch that cannot be decompressed (corrupt, which a broker that does
	// not decompress what it is produced passes on): kgo's would fetch it
	// again forever. KafkaOpts (or Client's options) come after these
	// bounds and may set others; a kgo.WithDecompressor there replaces the
	// SDK's, and with it the ratio bound and the skipping of corrupt
	// batches. A batch past the bounds, or corrupt, is skipped unread, and the
	// reader goes on past it: a reply in it is lost (its command is sent
	// again, and a logger given here is told), a watch tells OnFetchError
	// at once, and Locks returns the table with an error saying states
	// were left out.
	KafkaOpts []kgo.Opt

	// Client, when set, produces the commands and creates the reply topic
	// (unless ReadOnly), and its options (Client.Opts) are reused to build
	// the clients that read replies and the lock state topic. It must not
	// consume (no ConsumeTopics, ConsumePartitions or ConsumerGroup: New
	// fails with ErrInvalidConfig) since the SDK reads with its own
	// clients, without a group. Close does not close it. Several Clients
	// may be given one: when the commands topic is deleted and created
	// again, the first command of any of them that fails on it purges the
	// topic from the shared client, once for them all. Its partitioner
	// must put a record in the partition its key hashes to by murmur2, as
	// kgo's default does (or kgo.StickyKeyPartitioner(nil)): New cannot
	// check it (see KafkaOpts for why). New cannot change its options:
	// give it kgo.MetadataMinAge(time.Second) and a kgo.RetryBackoffFn
	// capped at 1 s, as the SDK's own clients have (see KafkaOpts), or a
	// command produced while the broker was down waits up to 5 s after it
	// is back; and kgo.RequestTimeoutOverhead(2 * time.Second) with
	// kgo.ProduceRequestTimeout(2 * time.Second), or a command sent on a
	// connection that stopped answering waits kgo's 20 s (see KafkaOpts).
	// The readers built from its options take the first two where it set
	// none, and the reply reader the overhead.
	Client *kgo.Client

	// Requester names this requester: replies come on
	// Topics.ReplyTopic(Requester), "locks.replies.<requester>", created
	// when missing. Default: the program's name (base of os.Args[0]) with
	// characters Kafka does not allow in topic names replaced by '-'.
	// Processes may share a requester name: each reads every reply on the
	// topic and keeps the answers to its own requests, so separate names
	// cost less reading when many processes are busy. With credentials
	// (Token, SigningKeyFile) it is the tokens' sub, so it must pass the
	// workers' rule for one (topics.SubjectProblem: 1 to 200 letters,
	// digits, '.', '_' or '-'): New refuses another.
	Requester string

	// Topics names the commands topic (Commands) and reply prefix
	// (ReplyPrefix) the workers use, the lifecycle topics for Subscriber
	// and the lock state topic (State) for Watch and Locks. Empty fields
	// take topics.DefaultNames().
	Topics topics.Names

	// Namespace of every lock this client touches. Default "" (none).
	Namespace string

	// LeaseDuration is the lease of an Acquire without WithLease. Default 0:
	// the worker's DEFAULT_LEASE_DURATION (30 s unless configured).
	LeaseDuration time.Duration

	// ReplyTimeout is how long the client waits for a reply before it sends
	// the command again, with the same request_id (the worker applies a
	// request_id once and answers every copy with the same outcome).
	// Default 5 s. At or past RequestTimeout, a command is sent once.
	ReplyTimeout time.Duration

	// RequestTimeout bounds a command (its sends and re-sends, not counting
	// an acquire's wait in the queue) when the caller's context has no
	// earlier deadline; past it the command fails with ErrNoReply, also
	// when it is shorter than ReplyTimeout. It is counted from the first
	// send, or for an acquire seen queued from the end of its wait (the
	// acquire's wait + 1 s after lock.queued was read). It also bounds
	// New's setup when New's context has no deadline: brokers that refuse
	// connections (restarting) are tried again until then. Default 30 s.
	RequestTimeout time.Duration

	// Token is the requester token every command carries when the workers
	// require authentication (AUTH_REQUIRED): a JWT whose subject is the
	// requester. Default: the LOCKWORKER_TOKEN environment variable, else
	// the contents of the file LOCKWORKER_TOKEN_FILE (at most 64 KiB; an
	// empty one is refused; its path is made absolute at New). That file is
	// read again when it changes (its file, size, mtime or change time,
	// symbolic links followed: a sidecar renewing it, as a Kubernetes
	// projected token or Vault agent does), so a long-running client takes
	// the new token; a file changed less than 2 s ago is taken once it has
	// settled, unless the token held expires within 2 s. A new token New would
	// refuse, or one naming another subject, is not taken, and the one
	// held serves until it expires, its ErrUnauthenticated then saying why.
	// The environment's
	// credentials (those two and LOCKWORKER_SIGNING_KEY_FILE) are read
	// only when Token and SigningKeyFile are both empty: either one set
	// turns all three off. Requester defaults to its subject, and must
	// equal it: the workers answer a requester only on its own reply
	// topic. It must have an exp, and be at most topics.MaxTokenBytes
	// (8 KiB, without a "Bearer " scheme), as the workers require: New
	// refuses another.
	Token string

	// SigningKeyFile, instead of Token, is a private key (PEM: Ed25519,
	// RSA or ECDSA) with which the client signs its own tokens (subject
	// Requester, valid for SignedTokenTTL). Its public half goes in the
	// workers' AUTH_REQUESTER_KEYS directory as <Requester>.pem: Requester
	// must be that file's name before .pem, for the workers verify a
	// token with the requester key of its sub. Its tokens never claim
	// admin. The file may instead hold an HMAC secret of at least 32 bytes
	// (never a PEM file), the workers' AUTH_HMAC_KEY_FILE: that is an
	// issuer secret, with which whoever holds it may sign as any requester,
	// admin included (SignAdmin), so only a token issuer should have it,
	// never a requester. Default: LOCKWORKER_SIGNING_KEY_FILE.
	SigningKeyFile string

	// SignAdmin makes the tokens the client signs with an HMAC secret
	// (SigningKeyFile) claim "admin": true, which a revoke needs from a
	// worker that requires tokens (without it: ErrForbidden, "its token has
	// no admin claim"). Only an issuer key may sign admin, and the HMAC
	// secret is the one kind of key the client can tell is an issuer's:
	// with a private key (PEM), which may be a requester's, it is ignored
	// and the tokens claim no admin, for the workers refuse a token a
	// requester key verifies that claims admin as a whole, UNAUTHENTICATED
	// and answered only in the dead-letter topic: every command, not only
	// revokes, would fail with ErrNoReply after RequestTimeout. To revoke
	// with an issuer's private key, have it sign a token with "admin": true
	// and give that as Token. Ignored with Token, whose claims are its
	// issuer's, and without credentials. Default false: a client that does
	// not revoke should not carry admin.
	SignAdmin bool

	// TokenAudience and TokenIssuer are the aud and iss of the tokens the
	// client signs (SigningKeyFile): set them to the workers'
	// AUTH_AUDIENCE and AUTH_ISSUER, which refuse a token without them.
	// At most MaxTokenClaimBytes each; ignored with Token, whose claims
	// are its issuer's. Default: the LOCKWORKER_TOKEN_AUDIENCE and
	// LOCKWORKER_TOKEN_ISSUER environment variables (trimmed of spaces and
	// newlines, as the workers trim theirs), else none (no aud, no iss).
	// Unlike Token and SigningKeyFile, each is taken from the environment
	// on its own: a Config value overrides its variable, an empty one
	// takes it, whether the signing key came from Config or the
	// environment.
	TokenAudience string
	TokenIssuer   string

	// ReplyTopicPartitions is the partition count of the reply topic when
	// New creates it. Default 1: one reader takes every partition anyway.
	ReplyTopicPartitions int32

	// ReplyTopicReplicationFactor is the replication factor of the reply
	// topic when New creates it: -1, the broker's
	// default.replication.factor (1 on a stock Apache Kafka, where one
	// broker's loss stops this client's replies), or 1..32767, at most the
	// number of brokers (a broker refuses more, and New fails). With 3 or
	// more New also sets the topic's min.insync.replicas=2, as the workers
	// do on theirs (kafkapubsub.TopicConfigs), unless the broker refuses
	// topic configs (POLICY_VIOLATION or INVALID_CONFIG: it is then asked
	// again without). The
	// workers' KAFKA_TOPIC_REPLICATION_FACTOR does not reach it: New
	// creates the topic before any command, so the workers' relay finds it
	// made. A topic that exists keeps its replicas. Default (0): the
	// LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR environment variable
	// (trimmed of spaces and newlines), else -1. Other values, here or in
	// the variable, are refused with ErrInvalidConfig.
	ReplyTopicReplicationFactor int16

	// ReadOnly makes a client that only reads: the lock state topic (Watch,
	// Locks, Election.Observe) and the lifecycle topics (Subscriber). New
	// neither creates nor reads a reply topic, so Kafka's Read on the topics
	// read is the only right it needs; ReplyTimeout, ReplyTopicPartitions
	// and ReplyTopicReplicationFactor (nor its variable) do not apply. No
	// token is sent, so none of the workers' rules for one is applied: its
	// size, its sub's form, its expiry (or an exp at all), and its claims'
	// shape. A static
	// token whose claims the workers refuse is taken with its claims unread:
	// it names no requester, so its sub is not compared with Requester.
	// New still refuses a token that is not a JWT (unless its claims are
	// JSON the workers refuse: taken unread, as above), a token whose
	// claims it reads naming a sub other than a Requester given, an empty
	// LOCKWORKER_TOKEN_FILE, a token and a signing key both given, and a
	// signing key it cannot read or use, or given with a TokenAudience or
	// TokenIssuer over MaxTokenClaimBytes. Every operation that sends a
	// command (Acquire, Query, NewSession, Campaign, Leader, Do...) fails
	// with ErrReadOnly before anything else is checked. Default false.
	ReadOnly bool
}

func (cfg Config) withDefaults() Config {
	if len(cfg.Brokers) == 0 && cfg.Client == nil {
		cfg.Brokers = defaultBrokers()
	}
	if cfg.Requester == "" {
		cfg.Requester = sanitize(filepath.Base(os.Args[0]))
	}
	def := topics.DefaultNames()
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	fill(&cfg.Topics.Commands, def.Commands)
	fill(&cfg.Topics.Acquired, def.Acquired)
	fill(&cfg.Topics.Released, def.Released)
	fill(&cfg.Topics.Expired, def.Expired)
	fill(&cfg.Topics.Revoked, def.Revoked)
	fill(&cfg.Topics.DeadLetter, def.DeadLetter)
	fill(&cfg.Topics.State, def.State)
	fill(&cfg.Topics.ReplyPrefix, def.ReplyPrefix)
	if cfg.ReplyTimeout <= 0 {
		cfg.ReplyTimeout = DefaultReplyTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.ReplyTopicPartitions <= 0 {
		cfg.ReplyTopicPartitions = 1
	}
	return cfg
}

// replyReplicationFactor is Config.ReplyTopicReplicationFactor, else its
// environment variable, else -1 (the broker's default.replication.factor):
// -1 or 1..32767, as the workers' KAFKA_TOPIC_REPLICATION_FACTOR.
func replyReplicationFactor(cfg Config) (int16, error) {
	if rf := cfg.ReplyTopicReplicationFactor; rf != 0 {
		if rf < -1 {
			return 0, fmt.Errorf("ReplyTopicReplicationFactor %d %s", rf, topics.ReplicationFactorRange)
		}
		return rf, nil
	}
	n, set, err := topics.EnvReplicationFactor(EnvReplyTopicReplicationFactor, os.Getenv(EnvReplyTopicReplicationFactor))
	if err != nil || set {
		return n, err
	}
	return -1, nil
}

// defaultBrokers follows lockworker's own convention, so a client and the
// worker it talks to find the same broker without configuration.
func defaultBrokers() []string {
	var bs []string
	for _, b := range strings.Split(os.Getenv("KAFKA_BOOTSTRAP_SERVERS"), ",") {
		if b = strings.TrimSpace(b); b != "" {
			bs = append(bs, b)
		}
	}
	if len(bs) == 0 {
		bs = []string{topics.DevelopmentBroker}
	}
	return bs
}

// sanitize maps s to Kafka topic characters.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) == 0 || string(b) == "." || string(b) == ".." {
		return "client"
	}
	return string(b)
}
