package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/topics"
)

// SubscriberConfig configures a lifecycle subscription.
type SubscriberConfig struct {
	// Brokers are the seed brokers. Default: as Config.Brokers
	// (KAFKA_BOOTSTRAP_SERVERS, else 127.0.0.1:9092).
	Brokers []string
	// KafkaOpts are extra client options (TLS, SASL). Default none.
	KafkaOpts []kgo.Opt
	// ConsumerGroup, when set, shares the lifecycle topics' partitions among
	// the subscribers of the group and commits acked offsets. Default "":
	// every subscription reads everything (see FromEnd).
	ConsumerGroup string
	// FromEnd starts at the end of the topics: only events published after
	// the subscription starts. Default false: from the earliest retained.
	// The end of each partition is looked up when the subscription first
	// sees it, a moment after Subscribe returns: events published in
	// between are missed, and a partition added later starts at its end
	// once the subscription discovers it (up to kgo.MetadataMaxAge, 5 min
	// by default), missing the events published there before. In group
	// mode it applies only to partitions the group has no committed offset
	// for (kafkapubsub.SubscriberConfig.FromEnd).
	FromEnd bool
	// Logger for the subscriber; nil logs nothing.
	Logger watermill.LoggerAdapter
}

// NewSubscriber returns a watermill Subscriber for lockworker's lifecycle
// topics (topics.Names Acquired, Released, Expired, Revoked): subscribe to one of
// them, or give it to a message.Router with handlers per topic. Each message
// is one event (DecodeMessage reads it), keyed by lock key (metadata
// kafkapubsub.DefaultKeyMetadata), with the CloudEvents headers as metadata.
// Delivery is at least once: dedupe on the event_id when it matters.
//
// Like New, it reaches the brokers before it returns (within ctx, or
// DefaultRequestTimeout when ctx has no deadline): brokers it cannot reach
// give an error wrapping ErrUnreachable, where a subscription would
// otherwise wait for them silently.
func NewSubscriber(ctx context.Context, cfg SubscriberConfig) (*kafkapubsub.Subscriber, error) {
	if len(cfg.Brokers) == 0 {
		cfg.Brokers = defaultBrokers()
	}
	// As the Client's: a broker that is back is read again within about a
	// second; the caller's options, after, may replace them.
	cfg.KafkaOpts = append(kafkaretry.Opts(), cfg.KafkaOpts...)
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("creating lifecycle subscriber: %w", err)
	}
	defer cl.Close()
	if err := ping(ctx, cl, cfg.Brokers, DefaultRequestTimeout); err != nil {
		return nil, fmt.Errorf("creating lifecycle subscriber: %w", err)
	}
	return newSubscriber(cfg)
}

// newSubscriber is NewSubscriber once the brokers answered.
func newSubscriber(cfg SubscriberConfig) (*kafkapubsub.Subscriber, error) {
	s, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
		Brokers:       cfg.Brokers,
		ClientOpts:    cfg.KafkaOpts,
		ConsumerGroup: cfg.ConsumerGroup,
		FromEnd:       cfg.FromEnd,
	}, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("creating lifecycle subscriber: %w", err)
	}
	return s, nil
}

// ping checks that cl reaches one of brokers, within ctx or, when it has no
// deadline, timeout. While every dial fails at once (refused: a broker
// restarting, a network blip) it tries again, pingRetryWait or a little
// less apart (pause's jitter, so processes started together stay out of
// step), until then, and fails with the last such error. Its error wraps
// ErrUnreachable.
func ping(ctx context.Context, cl *kgo.Client, brokers []string, timeout time.Duration) error {
	ctx, cancel := withDefaultTimeout(ctx, timeout)
	defer cancel()
	err := cl.Ping(ctx)
	for dialFailed(err) && pause(ctx, pingRetryWait) {
		// An attempt that ctx ended says less than the refusal before it.
		if next := cl.Ping(ctx); next == nil || ctx.Err() == nil || dialFailed(next) {
			err = next
		}
	}
	switch {
	case err == nil:
		return nil
	case dialFailed(err) && !errors.Is(ctx.Err(), context.Canceled):
		// The brokers' refusal, not the deadline, is why; a caller's
		// cancel is said, below.
		return fmt.Errorf("%w: %v: %w", ErrUnreachable, brokers, err)
	}
	return fmt.Errorf("%w: %v: %w", ErrUnreachable, brokers, withContextErr(ctx, err))
}

// pingRetryWait spaces ping's attempts: a broker back from a restart is
// found within it, at a cost of a few refused dials a second.
const pingRetryWait = 250 * time.Millisecond

// dialFailed is whether err is a dial that failed before its timeout
// (refused, no route, a name not found): not a TLS or SASL handshake the
// broker refused, nor a broker that does not answer, which trying again
// within the same deadline would not mend. kgo's Ping gives the last
// broker's error only: with one seed refusing the handshake and the next
// down, the refused dial is what it sees, so ping tries again until its
// deadline and reports that.
func dialFailed(err error) bool {
	op, ok := errors.AsType[*net.OpError](err)
	return ok && op.Op == "dial" && !op.Timeout()
}

// withContextErr is err, or ctx's end when err is nil, naming ctx's end
// too when it is not already err's cause (kgo may report the last broker's
// error instead), on one line. ctx's end is its cause (context.Cause):
// ErrClosed for an operation's context when the client closed, or the
// caller's own.
func withContextErr(ctx context.Context, err error) error {
	cerr := context.Cause(ctx)
	switch {
	case err == nil:
		return cerr
	case cerr != nil && !errors.Is(err, cerr):
		return fmt.Errorf("%w (%w)", err, cerr)
	}
	return err
}

// SubscribeOption tunes Client.Subscriber.
type SubscribeOption func(*SubscriberConfig)

// FromEnd starts the subscription at the end of the topics: only events
// published after it starts. Default: from the earliest retained. The end
// is looked up a moment after Subscribe returns, so events published in
// between may be missed, as may those of a partition added later before
// the subscription discovers it (SubscriberConfig.FromEnd).
func FromEnd() SubscribeOption {
	return func(cfg *SubscriberConfig) { cfg.FromEnd = true }
}

// Subscriber is NewSubscriber on this client's brokers and connection
// options; it checks that they answer with the client's own Kafka client,
// within ctx or, when it has no deadline, Config.RequestTimeout. After
// Close, or when Close comes while it checks, it fails with ErrClosed.
func (c *Client) Subscriber(ctx context.Context, opts ...SubscribeOption) (*kafkapubsub.Subscriber, error) {
	if err := c.begin(); err != nil {
		return nil, fmt.Errorf("creating lifecycle subscriber: %w", err)
	}
	defer c.ops.Done()
	// Clipped: a SubscribeOption appending to them copies, rather than
	// write into the client's slices, which every call shares.
	cfg := SubscriberConfig{Brokers: slices.Clip(c.brokers()), KafkaOpts: slices.Clip(c.baseOpts)}
	applyOptions(&cfg, opts)
	// Cancelled by Close, which waits for it.
	ctx, cancel := c.opContext(ctx)
	defer cancel()
	if err := c.ping(ctx); err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrClosed) {
			err = cause // not the brokers': they were not waited for
		}
		return nil, fmt.Errorf("creating lifecycle subscriber: %w", err)
	}
	return newSubscriber(cfg)
}

// DecodeMessage reads the lockworker event a lifecycle message carries.
func DecodeMessage(msg *message.Message) (topics.Event, error) {
	return topics.DecodeEvent(msg.Payload)
}

var _ message.Subscriber = (*kafkapubsub.Subscriber)(nil)
