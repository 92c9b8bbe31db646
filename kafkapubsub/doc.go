// Package kafkapubsub is a watermill [message.Publisher] and
// [message.Subscriber] on Kafka, built on franz-go (kgo).
//
// # Mapping between messages and records
//
// A published message becomes one record:
//
//   - Payload is the record value.
//   - UUID is the header [UUIDHeader].
//   - Every Metadata entry is a header of the same name and value, except
//     one named [UUIDHeader], which is not written: the header holds UUID.
//   - The Metadata entry named by KeyMetadata (default [DefaultKeyMetadata]),
//     when present, is also the record key; records with the same key land
//     on the same partition (kgo's default partitioner hashes keys the way
//     the Java client does). Without that entry the key is nil and kgo
//     spreads records over partitions.
//
// A consumed record becomes a message the other way round. A record key is
// exposed as Metadata[KeyMetadata]. A record without [UUIDHeader] (produced by
// a non-watermill client) gets the UUID "topic/partition/offset", which is
// stable across redeliveries. The record itself is available from the
// message's context through [RecordFromContext].
//
// # Delivery
//
// Delivery is at least once, with one exception: a record batch the
// subscriber cannot decompress within its bounds (past
// kgo.MaxDecompressBatchBytes or 256 times its compressed size, or
// corrupt) is skipped whole, and its messages are lost (see
// [Subscriber.Subscribe]). Each subscription hands out one message at a
// time and waits for its Ack or Nack before the next one, so messages of one
// partition arrive in order; there is no order across partitions. A Nack
// redelivers the same message (after NackRedeliveryDelay), unless its
// partition was revoked or lost meanwhile: it is then read again from the
// committed offset by whichever member gets the partition. In consumer group
// mode only acked offsets are committed, so a restart or rebalance may
// redeliver messages that were delivered but not yet committed. A
// subscription whose topic is deleted and created again reads the new
// topic from its start, where kgo by itself would fetch the deleted one,
// refused, for ever (see [Subscriber.Subscribe]).
//
// Publish returns once Kafka has acknowledged its messages or failed them.
// [Publisher.Close] waits for the calls in flight: with a client of its own
// at most CloseTimeout (default 30 s), then it closes the client and those
// calls fail with kgo.ErrClientClosed, though their messages may have been
// written; with a caller's Client until Kafka answers or the caller closes
// that client.
//
// # Exported names
//
// Every exported name is the adapter's public API, which stands on its
// own, except TopicConfigs, CreateTopics, ConfigsRefused, ConfigsText and
// LogTo: the topic creation and logging this module's client and worker
// share with the adapter, for this module only, which may change with any
// release. What the configs' docs say a created topic gets is the
// adapter's behaviour all the same.
package kafkapubsub
