package outbox

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Failure is what a failed Publish means for its rows.
type Failure int

const (
	// KafkaAway: Kafka is unreachable or slow (dial errors, timeouts, a
	// leader moving, a closed publisher, anything not below), refuses
	// the record's timestamp (INVALID_TIMESTAMP: the record's CreateTime,
	// this process's clock, lies outside the broker's
	// log.message.timestamp.before/after.max.ms, and the same row is taken
	// once the clock is right), or refuses to create the topic with its
	// replicas (INVALID_REPLICATION_FACTOR: fewer brokers are up than the
	// factor, ReasonReplicas). Retried without counting; not parked but
	// for ReasonReplicas, refused on end for ParkFor (see there).
	KafkaAway Failure = iota
	// TopicRefused: the topic cannot be written (not authorized, does not
	// exist and could not be created: a name, partition count, config or
	// request Kafka refuses, a policy, none of which a wait changes; a
	// creation refused only its configs was asked again without them,
	// kafkapubsub.CreateTopics). Counted per row; after MaxAttempts the
	// topic's waiting rows are parked for ParkFor.
	TopicRefused
	// RecordRefused: Kafka will never take this record (too large,
	// invalid), or the row cannot become a record. The row is parked for
	// good at once, and the rows after it go on.
	RecordRefused
)

// Classify says what err, from Publish, means, and names the reason: the
// Kafka error's name (MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED, ...),
// UNREADABLE_HEADERS for a row whose headers (or compacted value) cannot
// be decoded; for KafkaAway, "" or what the operator should look at
// (ReasonClock, ReasonReplicas). For an error covering several records (a
// *kafkapubsub.PublishError), the first refusal found wins: ask per record
// when it matters.
//
// kgo wraps the last broker error into its record timeout error, so a
// timeout whose cause was, say, UNKNOWN_TOPIC_OR_PARTITION is TopicRefused.
func Classify(err error) (Failure, string) {
	if errors.Is(err, errBadRow) {
		return RecordRefused, ReasonBadRow
	}
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return KafkaAway, ""
	}
	switch ke {
	case kerr.TopicAuthorizationFailed, // writing the topic was refused
		kerr.ClusterAuthorizationFailed,
		kerr.UnknownTopicOrPartition, // missing and not (or not yet) created
		kerr.InvalidTopicException,
		kerr.PolicyViolation,
		kerr.InvalidConfig, // refused even without the configs asked
		kerr.InvalidReplicaAssignment,
		kerr.InvalidRequest,
		kerr.InvalidPartitions: // the count asked for, which no wait changes
		return TopicRefused, ke.Message
	case kerr.MessageTooLarge,
		kerr.RecordListTooLarge,
		kerr.InvalidRecord,
		kerr.CorruptMessage,
		kerr.UnsupportedCompressionType:
		return RecordRefused, ke.Message
	case kerr.InvalidTimestamp:
		return KafkaAway, ReasonClock
	case kerr.InvalidReplicationFactor:
		return KafkaAway, ReasonReplicas
	}
	return KafkaAway, ""
}

// errBadRow marks a row that can never become a message (corrupt headers).
var errBadRow = errors.New("outbox row cannot be published")

// ReasonBadRow is Classify's reason for a row that can never become a
// record.
const ReasonBadRow = "UNREADABLE_HEADERS"

// ReasonClock is Classify's reason for a record whose timestamp the broker
// refuses: the relay retries it and logs this with each retry.
const ReasonClock = "INVALID_TIMESTAMP: check this replica's clock"

// ReasonReplicas is Classify's reason for a topic's creation refused
// INVALID_REPLICATION_FACTOR: the brokers up are fewer than the replicas
// asked for, as while one of three restarts with the factor 3 that
// production wants. The relay retries it as when Kafka is away, and logs
// this with each retry, but pauses no partition for it (Kafka answered).
// A topic refused so with no other outcome for ParkFor (10 min) has a
// factor above the brokers the cluster has at all, a configuration mistake
// which only the operator ends: its rows are parked for ParkFor, park
// reason INVALID_REPLICATION_FACTOR, so /health counts them and the
// creation is not tried while the park lasts. When it ends the topic
// starts over, retried with backoff up to RetryMax for another ParkFor
// before it is parked again: ParkFor of retries, ParkFor parked, until
// the factor is lowered.
const ReasonReplicas = "INVALID_REPLICATION_FACTOR: fewer brokers are up than the topic's replication factor (KAFKA_TOPIC_REPLICATION_FACTOR); retried until they are, so lower it if the cluster has fewer brokers"
