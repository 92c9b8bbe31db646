package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kgo"

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
	if err := ping(ctx, append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.KafkaOpts...)); err != nil {
		return nil, fmt.Errorf("creating lifecycle subscriber: %w: %v: %w", ErrUnreachable, cfg.Brokers, err)
	}
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

// ping checks that a client with opts reaches a broker.
func ping(ctx context.Context, opts []kgo.Opt) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultRequestTimeout)
		defer cancel()
	}
	if err := cl.Ping(ctx); err != nil {
		return errors.Join(err, ctx.Err())
	}
	return nil
}

// SubscribeOption tunes Client.Subscriber.
type SubscribeOption func(*SubscriberConfig)

// FromEnd starts the subscription at the end of the topics: only events
// published after it starts. Default: from the earliest retained.
func FromEnd() SubscribeOption {
	return func(cfg *SubscriberConfig) { cfg.FromEnd = true }
}

// Subscriber is NewSubscriber on this client's brokers and connection
// options.
func (c *Client) Subscriber(ctx context.Context, opts ...SubscribeOption) (*kafkapubsub.Subscriber, error) {
	brokers := c.cfg.Brokers
	if len(brokers) == 0 {
		brokers, _ = c.prod.OptValue(kgo.SeedBrokers).([]string)
	}
	cfg := SubscriberConfig{Brokers: brokers, KafkaOpts: c.baseOpts}
	for _, opt := range opts {
		opt(&cfg)
	}
	return NewSubscriber(ctx, cfg)
}

// DecodeMessage reads the lockworker event a lifecycle message carries.
func DecodeMessage(msg *message.Message) (topics.Event, error) {
	return topics.DecodeEvent(msg.Payload)
}

var _ message.Subscriber = (*kafkapubsub.Subscriber)(nil)
