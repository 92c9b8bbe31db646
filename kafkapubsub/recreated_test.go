package kafkapubsub_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/kafkapubsub"
)

// TestSubscriptionFollowsARecreatedTopic: a topic deleted and created again
// has a new ID, which kgo never takes on by itself: it fetches the old one,
// refused (UNKNOWN_TOPIC_ID), for ever. The subscription retries while the
// topic is missing, logging the refusal, then reads the new topic from its
// start, FromEnd or not: the records written to it before the subscription
// noticed are delivered. In group mode it leaves the old topic's acked
// offsets uncommitted, with commits by name (OffsetCommit v9, as brokers
// before Kafka 4.2 take them), which would give them to the new topic:
// kgo, which knows the new ID by then, refuses them, and the refusal is
// not logged as a failure.
func TestSubscriptionFollowsARecreatedTopic(t *testing.T) {
	byName := kversion.Stable()
	byName.SetMaxKeyVersion(int16(kmsg.OffsetCommit), 9)
	for _, tc := range []struct {
		name    string
		group   string
		fromEnd bool
	}{
		{"fan-out", "", false},
		{"fan-out from end", "", true},
		{"group", "recreated-group", false},
		{"group from end", "recreated-group", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const topic = "recreated"
			ctx := context.Background()
			c := kafkatest.Cluster(t, kfake.SeedTopics(2, topic))
			producer := func() *kgo.Client {
				// One per topic instance: a client that produced to the
				// deleted one is refused the new one.
				cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.DefaultProduceTopic(topic),
					kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
				require.NoError(t, err)
				t.Cleanup(cl.Close)
				return cl
			}
			opts := append(testClientOpts(), kafkaretry.Opts()...)
			if tc.group != "" {
				// Acked offsets are left to the commit of the revoke.
				opts = append(opts, kgo.AutoCommitInterval(time.Hour), kgo.MaxVersions(byName))
			}
			var log testlog.Buffer
			sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
				Brokers: c.ListenAddrs(), ClientOpts: opts, ConsumerGroup: tc.group, FromEnd: tc.fromEnd,
			}, watermill.NewStdLoggerWithOut(&log, false, false))
			require.NoError(t, err)
			t.Cleanup(func() { require.NoError(t, sub.Close()) })
			msgs, err := sub.Subscribe(ctx, topic)
			require.NoError(t, err)
			got := make(chan string, 1000)
			go func() {
				for m := range msgs {
					got <- string(m.Payload)
					m.Ack()
				}
			}()

			// Written to until the subscription reads it (FromEnd starts a
			// moment after Subscribe returns).
			old := producer()
		read:
			for i := 0; ; i++ {
				require.Less(t, i, 100, "nothing read of the topic")
				require.NoError(t, old.ProduceSync(ctx, kgo.StringRecord(fmt.Sprint("old", i))).FirstErr())
				select {
				case <-got:
					break read
				case <-time.After(100 * time.Millisecond):
				}
			}

			adm := kadm.NewClient(old)
			deleted, err := adm.DeleteTopics(ctx, topic)
			require.NoError(t, err)
			require.NoError(t, deleted.Error())
			refusal := "err=\"" + kerr.UnknownTopicID.Error() + "\""
			require.Eventually(t, func() bool {
				return slices.ContainsFunc(errorsLogged(&log, "Fetch error"), func(l string) bool { return strings.Contains(l, refusal) })
			}, 20*time.Second, 10*time.Millisecond, "the deleted topic's refusal is logged")

			// Written to before the subscription can see it.
			held, release := kafkatest.HoldFirst(c, kmsg.Fetch)
			defer release()
			select {
			case <-held:
			case <-time.After(10 * time.Second):
				t.Fatal("the subscription fetches no more")
			}
			require.Empty(t, errorsLogged(&log, followed), "followed a topic not created again")
			created, err := adm.CreateTopic(ctx, 2, 1, nil, topic)
			require.NoError(t, err)
			require.NoError(t, created.Err)
			var want []string
			var recs []*kgo.Record
			for i := range 10 {
				want = append(want, fmt.Sprint("new", i))
				recs = append(recs, kgo.StringRecord(want[i]))
			}
			require.NoError(t, producer().ProduceSync(ctx, recs...).FirstErr())
			release()

			var read []string
			timeout := time.After(30 * time.Second)
			for len(read) < len(want) {
				select {
				case v := <-got:
					if strings.HasPrefix(v, "new") {
						read = append(read, v)
					}
				case <-timeout:
					t.Fatalf("read of the new topic: %v", read)
				}
			}
			slices.Sort(read)
			require.Equal(t, want, read)
			follows := errorsLogged(&log, followed)
			require.Len(t, follows, 1, "the follow logged once")
			require.Contains(t, follows[0], refusal)
			require.Len(t, errorsLogged(&log, ""), len(errorsLogged(&log, "Fetch error"))+1, "errors but the fetches' and the follow:\n%s", log.String())
		})
	}
}

// followed is what a subscription logs when it follows its topic created
// again.
const followed = "Topic deleted and created again: reading the new one from its start"

// errorsLogged are the lines of log, written by a
// watermill.StdLoggerAdapter, that log an error whose message begins with
// msg.
func errorsLogged(log *testlog.Buffer, msg string) []string {
	var lines []string
	for l := range strings.Lines(log.String()) {
		if strings.Contains(l, `level=ERROR msg="`+msg) {
			lines = append(lines, l)
		}
	}
	return lines
}
