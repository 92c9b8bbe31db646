// Package kafkaretry holds the options with which the workers' and the SDK's
// Kafka clients reach a broker that is back (a restart, a failover) within
// about a second, where kgo's defaults take up to 5 s: the retry backoff for
// every client, the metadata age for those that produce (the relay's, the
// SDK's).
package kafkaretry

import (
	"math/rand/v2"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// MaxWait bounds each wait of a Kafka client before it tries a broker
// again: between retries of a request (kgo's default backoff grows to 5 s,
// so a broker back after a restart was reached up to 12 s later), and
// between a failed metadata refresh and the next (kgo.MetadataMinAge,
// kgo's default 5 s).
const MaxWait = time.Second

// Opts are kgo.RetryBackoffFn(backoff) and kgo.MetadataMinAge(MaxWait), to
// come before a caller's own options, which may replace them.
//
// The metadata age matters to records produced while the broker was down:
// a produce that failed to dial marks its partition failing, and kgo sends
// it nothing more until a metadata refresh succeeds; after a failed refresh
// the next waits MetadataMinAge from it, whatever the retry backoff. With
// kgo's 5 s, replies, lifecycle events and commands caught in an outage were
// sent up to 5 s after the broker was back. The cost: a client whose
// refreshes keep failing (a topic it produced to deleted) refreshes every
// second, and kadm's listings answer from a metadata cache at most a second
// old, so look-ups more than a second apart each send a Metadata request.
func Opts() []kgo.Opt {
	return []kgo.Opt{RetryOpt(), MetadataOpt()}
}

// RetryOpt is kgo.RetryBackoffFn(backoff).
func RetryOpt() kgo.Opt { return kgo.RetryBackoffFn(backoff) }

// MetadataOpt is kgo.MetadataMinAge(MaxWait), for the clients that produce:
// a consumer or an admin client given it refreshes its metadata up to five
// times as often in steady state (the workers' consumer and listings cost
// about 5 % more CPU per command at 16 clients), and needs it for nothing
// a producer does.
func MetadataOpt() kgo.Opt { return kgo.MetadataMinAge(MaxWait) }

// backoff is kgo's default retry backoff (250 ms doubling, ±20 % jitter)
// capped at MaxWait.
func backoff(fails int) time.Duration {
	d := 250 * time.Millisecond
	if fails > 1 {
		d <<= min(fails-1, 3)
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, MaxWait)
}
