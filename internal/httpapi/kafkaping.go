package httpapi

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/singleflight"
)

// sharedPing runs one Kafka ping at a time on the worker's client, whose
// answer every request that asked meanwhile shares: the port is open to
// probes, and a burst of /health and /health/kafka requests would otherwise
// send the brokers as many requests (withDB's slots bound its PostgreSQL
// reads the same way).
type sharedPing struct {
	ping func(context.Context) error
	// timeout bounds each ping: pingTimeout of the checks' timeout.
	timeout time.Duration
	flight  singleflight.Group
}

// pingTimeout is the shared ping's own timeout for checks of timeout
// check: a twentieth shorter (100 ms of 2 s). The check of the request that
// starts the ping began a moment before it: with the same timeout that
// request would always give up first, and report waiting for "the ping
// under way" rather than the ping's own error.
func pingTimeout(check time.Duration) time.Duration { return check - check/20 }

// Ping joins the ping under way, or starts one, and waits for its answer
// until ctx ends. The ping has its own timeout, not the context of the
// request that started it: a request that gives up does not fail the
// others. It ends before the checks' timeout (pingTimeout), so that each
// request that waited for all of it gets its answer.
func (p *sharedPing) Ping(ctx context.Context) error {
	call := p.flight.DoChan("ping", func() (any, error) {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.timeout)
		defer cancel()
		return nil, p.ping(pctx)
	})
	select {
	case res := <-call:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the Kafka ping under way: %w", ctx.Err())
	}
}

// pingBrokers is the ping of cl: a Metadata request for no topics to every
// broker cl knows (its seeds until it has discovered some) at once, nil at
// the first answer. kgo's Client.Ping asks them one at a time, lowest node
// id first, under one deadline: a broker that accepts connections and
// never answers would spend all of it, and fail the check, while the
// others serve the worker.
func pingBrokers(cl *kgo.Client) func(context.Context) error {
	return func(ctx context.Context) error {
		brokers := cl.DiscoveredBrokers()
		if len(brokers) == 0 {
			brokers = cl.SeedBrokers()
		}
		// Ends the requests still under way once one has answered.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, len(brokers))
		for _, b := range brokers {
			go func() {
				// One request each: kgo sets the version it sends on it.
				req := kmsg.NewPtrMetadataRequest()
				req.Topics = []kmsg.MetadataRequestTopic{}
				_, err := b.Request(ctx, req)
				errs <- err
			}()
		}
		var err error
		for range brokers {
			if err = <-errs; err == nil {
				return nil
			}
		}
		// The last error, as kgo's Ping: the deadline's when any broker
		// hung.
		return fmt.Errorf("pinging %d Kafka brokers, none answered: %w", len(brokers), err)
	}
}
