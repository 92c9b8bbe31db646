package outbox

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
)

// Parkable reports whether a Publish error means the topic itself cannot be
// written, so retrying soon will not help and its rows may be parked.
// Everything else (dial errors, timeouts, a leader moving, a closed
// publisher) is taken to mean Kafka is unavailable for now: those errors are
// retried without limit and never park.
//
// kgo wraps the last broker error into its record timeout error, so a
// timeout whose cause was, say, UNKNOWN_TOPIC_OR_PARTITION is parkable too.
func Parkable(err error) bool {
	var ke *kerr.Error
	if !errors.As(err, &ke) {
		return false
	}
	switch ke {
	case kerr.TopicAuthorizationFailed,
		kerr.ClusterAuthorizationFailed, // creating the topic was refused
		kerr.UnknownTopicOrPartition,    // missing and not (or not yet) created
		kerr.InvalidTopicException,
		kerr.PolicyViolation,
		kerr.InvalidPartitions,
		kerr.InvalidReplicationFactor,
		kerr.MessageTooLarge,
		kerr.RecordListTooLarge,
		kerr.InvalidRecord,
		kerr.CorruptMessage:
		return true
	}
	return false
}
