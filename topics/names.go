package topics

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Names holds the topic names lockworker uses. Every field is configurable;
// DefaultNames gives the contract's defaults.
type Names struct {
	// Commands is where requesters produce Commands. Default "locks.commands".
	Commands string
	// Acquired, Released and Expired are the lifecycle topics. Defaults
	// "locks.lock.acquired.v1", "locks.lock.released.v1", "locks.lock.expired.v1".
	Acquired string
	Released string
	Expired  string
	// Revoked is the lifecycle topic of lock.revoked. Default
	// "locks.lock.revoked.v1".
	Revoked string
	// State is the compacted lock state topic: a LockState per committed
	// change of a lock, keyed by LockKey. Default "locks.state.v1"; ""
	// publishes none.
	State string
	// DeadLetter receives copies of records that could not be applied.
	// Default "locks.commands.dlq".
	DeadLetter string
	// ReplyPrefix bounds every reply_to: a command whose reply_to does not
	// start with it is refused, so no requester can make the worker write into
	// another topic. Default "locks.replies.".
	ReplyPrefix string
}

// DefaultNames returns the contract's default topic names.
func DefaultNames() Names {
	return Names{
		Commands:    "locks.commands",
		Acquired:    "locks.lock.acquired.v1",
		Released:    "locks.lock.released.v1",
		Expired:     "locks.lock.expired.v1",
		Revoked:     "locks.lock.revoked.v1",
		State:       "locks.state.v1",
		DeadLetter:  "locks.commands.dlq",
		ReplyPrefix: "locks.replies.",
	}
}

// ReplyTopic is the conventional reply topic of a requester.
func (n Names) ReplyTopic(requester string) string { return n.ReplyPrefix + requester }

// Lifecycle returns the lifecycle topic an event type is published to, or ""
// when that type has none.
func (n Names) Lifecycle(eventType string) string {
	switch eventType {
	case TypeAcquired:
		return n.Acquired
	case TypeReleased:
		return n.Released
	case TypeExpired:
		return n.Expired
	case TypeRevoked:
		return n.Revoked
	}
	return ""
}

// ScopedOwner is owner as the worker sees it under authentication: scoped
// by the requester, "<requester>:<owner>", unless it carries that scope
// already (an owner_id read back from an event and sent again).
func ScopedOwner(requester, owner string) string {
	if strings.HasPrefix(owner, requester+":") {
		return owner
	}
	return requester + ":" + owner
}

// LockKey is the record key of a lock's commands and events: lock_name, or
// namespace + "/" + lock_name when a namespace is given. It is not unique:
// a namespace and a lock name may both hold "/", so ("a", "b/c"),
// ("a/b", "c") and ("", "a/b/c") share the key "a/b/c". Readers take the
// lock from a record's value, not its key.
func LockKey(namespace, lockName string) string {
	if namespace == "" {
		return lockName
	}
	return namespace + "/" + lockName
}

// SessionKey is the record key of a session's commands and events.
func SessionKey(sessionID string) string { return "session:" + sessionID }

// ValidTopicName reports whether s is a legal Kafka topic name.
func ValidTopicName(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ReplicationFactorRange says what ParseReplicationFactor accepts, as the
// workers' and the SDK's refusals word it.
const ReplicationFactorRange = "is not -1 (the broker's default.replication.factor) or 1..32767"

// ParseReplicationFactor reads the replication factor of the topics a
// process creates: v is -1 (the broker's default) or 1..32767 (Kafka's
// int16); 0 would ask for topics without a replica. ok is false otherwise.
func ParseReplicationFactor(v string) (n int16, ok bool) {
	i, err := strconv.Atoi(v)
	if err != nil || i != -1 && (i < 1 || i > math.MaxInt16) {
		return 0, false
	}
	return int16(i), true
}

// EnvReplicationFactor reads the environment variable name's value v, a
// topic replication factor (the workers' KAFKA_TOPIC_REPLICATION_FACTOR,
// the SDK's LOCKWORKER_REPLY_TOPIC_REPLICATION_FACTOR): trimmed, empty is
// not set (the caller's default), else ParseReplicationFactor, refused as
// `NAME: "v" ` + ReplicationFactorRange.
func EnvReplicationFactor(name, v string) (n int16, set bool, err error) {
	if v = strings.TrimSpace(v); v == "" {
		return 0, false, nil
	}
	n, ok := ParseReplicationFactor(v)
	if !ok {
		return 0, false, fmt.Errorf("%s: %q %s", name, v, ReplicationFactorRange)
	}
	return n, true, nil
}
