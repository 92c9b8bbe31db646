package kafkapubsub_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
)

// CreateTopics asks again, without configs, only the topics the broker
// refused for their configs (POLICY_VIOLATION, INVALID_CONFIG), answered
// per topic in one request; another refusal, and a topic created, are
// answered as they are.
func TestCreateTopicsAsksAgainOnlyTheRefused(t *testing.T) {
	c := kafkatest.Cluster(t)
	// The broker's answer to each topic, by whether it came with configs;
	// a topic not named is created.
	refusals := map[string]map[bool]*kerr.Error{
		"policy":     {true: kerr.PolicyViolation},
		"invalid":    {true: kerr.InvalidConfig},
		"always":     {true: kerr.InvalidConfig, false: kerr.InvalidConfig},
		"partitions": {true: kerr.InvalidPartitions},
	}
	var mu sync.Mutex
	var asked []string // "topic" with configs, "topic-" without
	c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.CreateTopicsRequest)
		resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
		mu.Lock()
		defer mu.Unlock()
		for _, tp := range req.Topics {
			with := len(tp.Configs) > 0
			if with {
				asked = append(asked, tp.Topic)
			} else {
				asked = append(asked, tp.Topic+"-")
			}
			rt := kmsg.NewCreateTopicsResponseTopic()
			rt.Topic = tp.Topic
			if e := refusals[tp.Topic][with]; e != nil {
				rt.ErrorCode = e.Code
			}
			resp.Topics = append(resp.Topics, rt)
		}
		return resp, nil, true
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics := []string{"created", "policy", "invalid", "always", "partitions"}
	errs, refused := kafkapubsub.CreateTopics(ctx, kadm.NewClient(cl), 1, 3, kafkapubsub.TopicConfigs(3), topics...)

	mu.Lock()
	require.Equal(t, []string{"created", "policy", "invalid", "always", "partitions", "policy-", "invalid-", "always-"}, asked,
		"one request with configs, then one without for those refused them")
	mu.Unlock()
	require.NoError(t, errs[0])
	require.Nil(t, refused[0])
	for i, e := range []*kerr.Error{kerr.PolicyViolation, kerr.InvalidConfig} {
		require.NoError(t, errs[1+i], topics[1+i])
		require.ErrorIs(t, refused[1+i], e, topics[1+i])
	}
	require.ErrorIs(t, refused[3], kerr.InvalidConfig)
	require.ErrorIs(t, errs[3], kerr.InvalidConfig, "the second answer")
	require.ErrorContains(t, errs[3], "asked first with min.insync.replicas=2")
	require.ErrorIs(t, errs[4], kerr.InvalidPartitions)
	require.Nil(t, refused[4], "not a refusal of configs: not asked again")

	// Without configs there is nothing to leave out: no second request.
	mu.Lock()
	asked = nil
	mu.Unlock()
	errs, refused = kafkapubsub.CreateTopics(ctx, kadm.NewClient(cl), 1, 1, nil, "always")
	require.ErrorIs(t, errs[0], kerr.InvalidConfig)
	require.Nil(t, refused[0])
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, []string{"always-"}, asked)
}

// A publisher (AutoCreateTopics) whose broker refuses the configs of
// TopicConfigs creates the topic as the broker makes it, and says so once
// to its client's logger (the relay's publisher has no watermill logger).
func TestPublishCreatesATopicWhoseConfigsAreRefused(t *testing.T) {
	c := kafkatest.Cluster(t, kfake.NumBrokers(3))
	asked := kafkatest.RefuseTopicConfigs(c, kerr.PolicyViolation.Code, func(string) bool { return true })
	warned := &warnLog{}
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers: c.ListenAddrs(), ClientOpts: append(testClientOpts(), kgo.WithLogger(warned)),
		AutoCreateTopics: true, TopicPartitions: 1, TopicReplicationFactor: 3,
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })
	const topic = "locks.replies.fixed"
	require.NoError(t, pub.Publish(topic, message.NewMessage("1", []byte("a"))))
	require.NoError(t, pub.Publish(topic, message.NewMessage("2", []byte("b"))))
	require.Len(t, asked()[topic], 2, "asked with its configs once, then without: the creation is remembered")
	require.Equal(t, []string{"the broker refused the topic's configs min.insync.replicas=2; asked again without them, to have the broker's topic=" + topic}, warned.lines())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	adm := kadm.NewClient(cl)
	tds, err := adm.ListTopics(ctx, topic)
	require.NoError(t, err)
	require.Len(t, tds[topic].Partitions[0].Replicas, 3, "its replicas as asked")
	require.Equal(t, "1", kafkatest.TopicConfigs(t, ctx, adm, topic)["min.insync.replicas"], "the broker's")
}

// warnLog is a kgo.Logger keeping what is logged at LogLevelWarn, with
// its "topic".
type warnLog struct {
	mu   sync.Mutex
	msgs []string
}

func (*warnLog) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l *warnLog) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	if level != kgo.LogLevelWarn {
		return
	}
	for i := 0; i+1 < len(keyvals); i += 2 {
		if keyvals[i] == "topic" {
			msg += " topic=" + keyvals[i+1].(string)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, msg)
}

func (l *warnLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.msgs {
		if strings.HasPrefix(m, "the broker refused") {
			out = append(out, m)
		}
	}
	return out
}
