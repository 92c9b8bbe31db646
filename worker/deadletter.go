package worker

import (
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/topics"
)

// DefaultDeadLetterMaxBytes is Config.DeadLetterMaxBytes's default: a copy
// holds any record within the contract's 64 KiB limit whole.
const DefaultDeadLetterMaxBytes = 64 << 10

// deadLetterHeaderBytes bounds the headers the worker itself adds to a
// copy (the error, truncated to a few hundred bytes, and the source): the
// copy is at most Config.DeadLetterMaxBytes plus this.
const deadLetterHeaderBytes = 1 << 10

// deadLetterPerHeader is what a header of a copy costs against its bound
// besides its key and value: the two 4-byte lengths its outbox row stores
// before them (topics.EncodeHeaders), as much as or more than the two
// varint lengths of a header of a Kafka record within the bound. Without
// it an empty header cost nothing, and a record of millions of them was
// copied whole into one row.
const deadLetterPerHeader = 8

// workerHeaders are the names of the headers the worker itself writes on
// a dead-letter copy (deadLetter) or marker (skipMarker).
var workerHeaders = []string{topics.HeaderError, topics.HeaderSourceTopic, topics.HeaderSourcePartition, topics.HeaderSourceOffset,
	HeaderSourceLastOffset, topics.HeaderTruncated, topics.HeaderOriginalKeySize, topics.HeaderOriginalValueSize,
	topics.HeaderOriginalHeaderCount}

// relayHeaders are the names of the headers the relay writes on every
// record: the message's UUID and the key (under the key metadata of the
// worker's relay, kafkapubsub's default).
var relayHeaders = []string{kafkapubsub.UUIDHeader, kafkapubsub.DefaultKeyMetadata}

// producerHeaderName is the name a producer's header goes under on a
// copy: original_<name> for one named like a header of the worker's or
// the relay's. Under its own name it would pose as the worker's (the
// worker writes some of its headers only when it cut the copy, or on
// markers, so nothing would override it) or set the copy's key or UUID.
// The relay renames the latter too, but renamed here the names are those
// the copy is written with, so deadLetter sees every name that repeats.
func producerHeaderName(name string) string {
	if slices.Contains(workerHeaders, name) || slices.Contains(relayHeaders, name) {
		return "original_" + name
	}
	return name
}

// deadLetter is the dead-letter copy of a record that could not be applied:
// its key, value and headers, cut so that together they take at most limit
// bytes (each header counted with deadLetterPerHeader, the key and a
// ce_id header's value twice: the relay writes them again as the
// partition_key and _watermill_message_uuid headers), and then the headers
// that say why and where it came from (and what was cut). Whatever a
// producer sent, the copy fits within a broker's limits: the record's own
// headers get at most a quarter of limit (the first whole headers, each
// counted as written on the copy), its key at most an eighth (a quarter,
// counted twice), its value the rest. Of the record's headers sharing a
// name only the first is kept, and the copy is marked cut as one cut for
// size: the relay publishes headers as watermill metadata, a map, so only
// one of them could reach the copy, and not in order. A nil key or value
// stays nil. A producer's header named like one of the worker's or the
// relay's goes under another name (producerHeaderName); a requester token
// is redacted.
func deadLetter(r *kgo.Record, reason string, limit int) (key, value []byte, hs []topics.Header) {
	headersCut, headerBytes := false, 0
	kept := make(map[string]bool)
	for _, h := range r.Headers {
		if strings.EqualFold(h.Key, topics.HeaderAuthorization) {
			h.Value = []byte(topics.RedactedToken)
		}
		own := topics.Header{Key: producerHeaderName(h.Key), Value: h.Value}
		if kept[own.Key] {
			headersCut = true
			continue
		}
		n := len(own.Key) + len(own.Value) + deadLetterPerHeader
		if own.Key == topics.HeaderCEID {
			n += len(own.Value) // the relay writes it again as the message's UUID header
		}
		if headerBytes+n > limit/4 {
			headersCut = true
			break
		}
		kept[own.Key] = true
		headerBytes += n
		hs = append(hs, own)
	}
	var cut []string
	if headersCut {
		cut = append(cut, "headers")
	}
	key = r.Key
	if len(key) > limit/8 {
		key, cut = key[:limit/8], append(cut, "key")
	}
	value = r.Value
	if room := limit - headerBytes - 2*len(key); len(value) > room {
		value, cut = value[:room], append(cut, "value")
	}
	reason = topics.CutUTF8(reason, deadLetterHeaderBytes/2)
	hs = append(hs,
		topics.Header{Key: topics.HeaderError, Value: []byte(reason)},
		topics.Header{Key: topics.HeaderSourceTopic, Value: []byte(r.Topic)},
		topics.Header{Key: topics.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
		topics.Header{Key: topics.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
	)
	if len(cut) > 0 {
		hs = append(hs,
			topics.Header{Key: topics.HeaderTruncated, Value: []byte(strings.Join(cut, ","))},
			topics.Header{Key: topics.HeaderOriginalKeySize, Value: []byte(strconv.Itoa(len(r.Key)))},
			topics.Header{Key: topics.HeaderOriginalValueSize, Value: []byte(strconv.Itoa(len(r.Value)))},
			topics.Header{Key: topics.HeaderOriginalHeaderCount, Value: []byte(strconv.Itoa(len(r.Headers)))},
		)
	}
	return key, value, hs
}
