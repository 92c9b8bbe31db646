package worker_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// EnsureTopics creates each of Topics with its partitions and configs, under
// the names configured: the lock state topic compacted.
func TestEnsureTopicsCreatesTopics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := kafkatest.Cluster(t)
	names := topics.DefaultNames()
	names.State = "custom.state"
	w := idleWorker(t, c, worker.Config{Names: names, CommandsPartitions: 4})
	require.NoError(t, w.EnsureTopics(ctx))

	adm := kadm.NewClient(w.Client())
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	specs := worker.Topics(names, 4)
	require.Len(t, specs, 7)
	for _, s := range specs {
		require.Len(t, listed[s.Name].Partitions, int(s.Partitions), s.Name)
		have := kafkatest.TopicConfigs(t, ctx, adm, s.Name)
		for k, v := range s.Configs {
			require.Equal(t, v, have[k], "%s: %s", s.Name, k)
		}
	}
	state := kafkatest.TopicConfigs(t, ctx, adm, "custom.state")
	require.Equal(t, "compact", state["cleanup.policy"])
	require.Equal(t, "67108864", state["segment.bytes"], "64 MiB")
	require.Equal(t, "3600000", state["segment.ms"], "an hour")
	require.Len(t, listed["custom.state"].Partitions, 4)
}

// warnings are the messages of the warnings logged about topic.
func warnings(t *testing.T, logs, topic string) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line struct{ Level, Topic, Message string }
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		if line.Level == "warn" && line.Topic == topic {
			out = append(out, line.Message)
		}
	}
	return out
}

// A lock state topic made beforehand keeps its configs; EnsureTopics warns,
// naming it and the config it lacks, when it is not compacted (or deleted
// too), and says nothing where describing its configs is refused.
func TestEnsureTopicsWarnsOfAnUncompactedStateTopic(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		policy                       string // "": the broker's default (delete)
		refuseCreate, refuseDescribe bool
		warning                      string // "": none
	}{
		{name: "not compacted", warning: "lacks cleanup.policy=compact"},
		{name: "compacted", policy: "compact"},
		{name: "compacted and deleted", policy: "compact,delete", warning: "deleted as well as compacted (cleanup.policy=compact,delete)"},
		{name: "not compacted, creating refused", refuseCreate: true, warning: "lacks cleanup.policy=compact"},
		{name: "not compacted, describing refused", refuseDescribe: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t)
			names := topics.DefaultNames()
			logs := &testlog.Buffer{}
			w := idleWorker(t, c, worker.Config{Names: names, Logger: zerolog.New(logs)})

			adm := kadm.NewClient(w.Client())
			var configs map[string]*string
			if tc.policy != "" {
				configs = map[string]*string{"cleanup.policy": &tc.policy}
			}
			_, err := adm.CreateTopic(ctx, 16, -1, configs, names.State)
			require.NoError(t, err)
			if tc.refuseCreate {
				for _, s := range worker.Topics(names, 16)[:6] {
					_, err = adm.CreateTopic(ctx, s.Partitions, -1, nil, s.Name)
					require.NoError(t, err)
				}
				c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.TopicAuthorizationFailed, Count: -1})
			}
			var described *kfake.FaultHandle
			if tc.refuseDescribe {
				described = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeConfigs}, Err: kerr.TopicAuthorizationFailed, Count: -1})
			}
			require.NoError(t, w.EnsureTopics(ctx))

			if described != nil {
				require.Positive(t, described.Hits(), "the configs were asked for")
			}
			got := warnings(t, logs.String(), names.State)
			if tc.warning == "" {
				require.Empty(t, got)
				return
			}
			require.Len(t, got, 1)
			require.Contains(t, got[0], "lock state topic "+names.State)
			require.Contains(t, got[0], tc.warning)
			want := cmp.Or(tc.policy, "delete")
			require.Contains(t, logs.String(), `"cleanup.policy":"`+want+`"`)
		})
	}
}
