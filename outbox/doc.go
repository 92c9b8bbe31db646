// Package outbox is the relay: it publishes the rows that handlers wrote to
// the outbox table, per partition of the commands topic and in id order, and
// deletes each row once Kafka has acknowledged it.
//
// # Running it
//
// A worker calls [Relay.Run] once per owned commands partition (cancel its
// context on revocation, and let the partition go once Run has returned). Every transaction that writes outbox rows for a
// partition takes a [Slot] with [Relay.Reserve] after its last lock and
// before COMMIT, and resolves it after: [Slot.Fill] with the rows it
// committed (their ids and created_at), [Slot.Dirty] when it rolled back, or [Slot.Abandon] when it
// may still commit (a COMMIT without an answer). Run publishes
// the filled slots' rows from memory, in slot order, without reading them
// back; the table is their durable copy (handoff.go has the rules, and
// docs/design.md "The outbox and the relay" the marks other replicas leave).
// Run reads the table when it starts (rows left by a previous owner), on
// every pass until every transaction of the server that had an id at its
// start, or when a slot was abandoned, has ended (one may hold a slot of
// the previous run, here or on the previous owner, and left no mark, or be
// the abandoned slot's): the first read takes an id of its own, and the
// wait ends when a later snapshot's xmin is past it; a wait longer than
// 10 s is logged, with the oldest transaction still running. Run also
// reads every PollInterval (the fallback), at a dirty slot, when a topic's
// backoff ends, after a failed publish, and after [Relay.Wake] (tests).
// While a topic backs off or is parked, passes go on publishing the other
// topics' rows handed over and leave its own in the table, behind its
// earlier rows, for the read after the backoff or park (the end of a park
// is found by the PollInterval read).
// [Relay.DrainOnce] reads and publishes what is there now, for tests.
// Waking happens in process, never through LISTEN/NOTIFY, which
// serialized commits (see handlers.Batch.Flush).
//
// A pass that reads the table is one round trip to PostgreSQL: it deletes
// the rows the previous passes got acknowledged and the partition's marks
// (but one a writer still holds, which it skips rather than wait for, and
// a later read takes), and selects the next batch, in one implicit
// transaction. Acknowledged rows
// wait for that pass up to Config.DeleteDelay (1 s, the default poll
// interval, so that the periodic read deletes them), then are deleted in
// bulk on their own, as they are when the partition stops.
//
// Each partition's passes are its own, but their queries are shared: passes
// that select (or delete) while another pass's query runs are served
// together by the next one, so reads of many partitions at once cost one
// query, not one per partition (merge.go).
//
// # Records
//
// One row becomes one record: value = row value, key = row key (a NULL key
// gives a nil key), headers = the row's headers. Through the watermill
// publisher the record also carries the publisher's UUID header (set to the
// row's ce_id header, or, for rows without one (most dead-letter copies,
// markers, state records), a UUIDv5 of the row's id and created_at, so a
// row published again carries the same) and a header named like the key metadata holding the
// key. A row's own header of either name (a producer's, which a dead-letter
// copy keeps) goes out as original_<name>, so that it sets neither. Headers
// with the same name collapse into one, the last (watermill metadata is a
// map): the worker writes none (a dead-letter copy keeps the first of each
// name and says truncated: headers).
//
// # Guarantees
//
// Delivery is at least once: a row is deleted only after Kafka acknowledged
// it, so a crash, a lost partition, a failed DELETE, a Publish that failed
// half way or one still unanswered HandOverWait after Run's context ended
// publishes some rows again. Consumers dedupe on ce_id.
//
// Order, within one commands partition:
//
//   - By default a batch's topics are published at once, for throughput:
//     only the per-topic order below holds. With Config.OrderAcrossTopics,
//     while every topic is writable, rows are acknowledged in id order across
//     all topics: consecutive rows of one topic go in one Publish call, and
//     the next call starts only after the previous one returned.
//   - Always, for rows of the same topic: a row is published only after every
//     earlier row of that topic was acknowledged or parked for good (the
//     first copy of each record lands in id order; a retry may repeat a
//     suffix). A failing topic holds back its own later rows, parked or
//     not, and nothing else; a row parked for good holds back nothing.
//     One exception: when a call fails in part (a record refused for good,
//     a Kafka partition of the topic without a leader or refused), the
//     rows of it that Kafka wrote are acknowledged, and may have landed
//     before earlier rows of other keys that failed, which go after them.
//     Rarely one lands before an earlier row of its own key (it entered
//     kgo's buffer after that row failed): it is published again after
//     that row, so the key's last record is still its last row.
//   - Rows of other topics overtake the rows of a failing or parked topic.
//
// Partitions are independent; ids follow commit order only within one.
//
// # Failures
//
// A failed Publish is one of three kinds (see [Classify]); the publisher
// says which messages failed and why (kafkapubsub.PublishError). Whatever
// the kind, the rows Kafka wrote are acknowledged (but one written after an
// earlier row of its key failed), and only the others are retried, counted
// or parked:
//
//   - Kafka refuses the record for good: too large (MESSAGE_TOO_LARGE,
//     RECORD_LIST_TOO_LARGE, whether the client or the broker refuses it),
//     invalid (INVALID_RECORD, CORRUPT_MESSAGE, ...), or the row's headers
//     (or compacted value) cannot be decoded (UNREADABLE_HEADERS). The
//     failed rows are published again in halves, in id order, and a
//     refused half is split again (a broker refuses a whole produce batch
//     for one record too large, so only alone does a row show whether it
//     is the culprit), and a row
//     refused alone is parked at once, for good: parked_until 'infinity',
//     park_reason the error's name, last_error the message. It is never
//     tried again and holds nothing back: the rows after it, of its topic
//     too, go on. An operator inspects and re-drives or deletes it (README
//     runbook).
//   - The topic cannot be written: not authorized, does not exist and could
//     not be created. The failed rows get attempts+1 and last_error, and
//     the topic is retried after a backoff (RetryBase doubling up to
//     RetryMax) while other topics flow. When a row reaches MaxAttempts,
//     every waiting row of that topic in the partition is parked for ParkFor
//     (database clock; park_reason the error's name; 5,000 rows per
//     statement: a park cut short has parked the oldest, which hold the
//     rest back as a park does); newer rows of the
//     topic wait behind them, and all are retried, in id order,
//     when the park ends. One failure after that parks them again. Each read
//     of the table finds there which topics are parked, so a park an
//     operator ends (README runbook) is over at the relay's next read. A
//     parked row is out of the index the reads walk (outbox_waiting): a
//     parked backlog costs them nothing. The rows its topic gets during
//     the park are parked by the reads too, until the same time (those
//     among the oldest waiting rows), and when the park ends the reads put
//     its rows back; 1,000 rows a read's statement, its partitions sharing
//     them, the topic left out until the last is back. /health's parked
//     count includes the rows parked so.
//   - Kafka is unreachable or slow (dial errors, timeouts, anything else),
//     or refuses the record's timestamp (INVALID_TIMESTAMP: this process's
//     clock, kgo's CreateTime, is outside the broker's window; the retry
//     warning says to check it), or refuses to create a reply topic with
//     its replicas (INVALID_REPLICATION_FACTOR: fewer brokers up than the
//     factor; the retry warning says so): never counted. Such a refusal is
//     Kafka's answer, so it counts toward no pause (below), nor is it a
//     success that ends a row of other topics' failures, and a topic
//     refused so with no other outcome for ParkFor is parked for ParkFor,
//     park_reason INVALID_REPLICATION_FACTOR; otherwise nothing here is
//     parked. The topic backs off in memory; two
//     topics failing so in a row with no acknowledgement between them or
//     in the same call (setAside's halves count; rows it parked unasked
//     do not), in one pass or in passes of their own, pause the whole
//     partition with backoff
//     capped at RetryMax, so nothing is lost and the relay resumes by
//     itself when Kafka is back. The retry after the backoff is a probe
//     (probe.go): the topic's rows published in a call the passes do not
//     wait for, so a topic whose Kafka partition has no leader holds only
//     its own rows, not the other topics' of the partition, while kgo
//     holds the call; its newer rows wait in the table until it returns.
//     A topic's first failure is taken out of the pass the same way: a
//     topic still publishing 300 ms after the pass's publish began, and
//     after the pass's other topics were answered, goes on as a probe (not
//     with Config.OrderAcrossTopics).
//     With kgo's default
//     idempotent producer, a produce request that got no answer is never
//     failed (neither RecordDeliveryTimeout nor the context stop it), so
//     Publish simply blocks until a broker answers: the partition waits in
//     that call instead, with the same outcome. Run still returns when its
//     context ends, after waiting Config.HandOverWait (10 s) for the call
//     so that the partition's next owner does not publish before it, and
//     after deleting the rows Kafka acknowledged of it, so that the next
//     owner does not publish them again (those of every topic Kafka
//     acknowledged, when one call publishes several); the rows of a call
//     that failed, or of a topic still unanswered then (left behind), stay
//     in the table.
//
// Parked rows are kept and counted ([Backlog], [Parked]), never dropped, and
// each parking is reported to Config.OnParked.
//
// Database errors back the loop off the same way, RetryBase doubling to
// RetryMax (5 s), whatever PollInterval says; a writer's commit for the
// partition (a filled or dirty slot, or Wake; not an abandoned slot) ends
// the wait at once, as the database answers again. Rows committed before
// the outage, with no new commit on their partition, are published within
// that backoff (up to RetryMax) after the database is back. Only a pass
// whose query worked ends the outage's log streak; a delete of
// acknowledged rows tried between passes (DeleteDelay) that fails is one
// more failure of it, for its lines and its backoff. Rows acknowledged but
// not yet deleted are deleted before anything else is selected, so a database
// blip does not publish them twice; those a Run leaves undeleted, the next
// Run of the partition here deletes. A row is deleted by its id and
// created_at, not its id alone: a failover that lost rows, and the
// sequence's advance with them, hands their ids to new rows, which must
// not be deleted unpublished.
//
// # Exported names
//
// Relay, Config, NewKafkaPublisher, Classify and its Failure kinds are for
// cmd/lockworker's wiring; Backlog and Parked for the metrics and health
// endpoints. All are for this module only.
package outbox
