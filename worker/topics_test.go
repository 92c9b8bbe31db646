package worker_test

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"strconv"
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

// EnsureTopics asks for Config.ReplicationFactor replicas of every topic it
// creates, -1 (the broker's default) when it is unset, and the brokers make
// that many (kfake honours it up to its broker count). With 3 or more it
// creates them with min.insync.replicas=2 besides their own configs;
// otherwise min.insync.replicas is the broker's (kfake's: 1), even where
// the broker's default gives three replicas.
func TestEnsureTopicsReplicationFactor(t *testing.T) {
	for _, tc := range []struct {
		name      string
		factor    int16
		asked     int16  // in the CreateTopics requests
		replicas  int    // of each partition made
		minInsync string // of each topic made
	}{
		{name: "unset", factor: 0, asked: -1, replicas: 3, minInsync: "1"}, // kfake's default: min(3, brokers)
		{name: "broker default", factor: -1, asked: -1, replicas: 3, minInsync: "1"},
		{name: "two", factor: 2, asked: 2, replicas: 2, minInsync: "1"},
		{name: "three", factor: 3, asked: 3, replicas: 3, minInsync: "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t, kfake.NumBrokers(3))
			asked := kafkatest.ReplicationFactorsAsked(c)
			names := topics.DefaultNames()
			w := idleWorker(t, c, worker.Config{Names: names, CommandsPartitions: 4, ReplicationFactor: tc.factor})
			require.NoError(t, w.EnsureTopics(ctx))

			adm := kadm.NewClient(w.Client())
			listed, err := adm.ListTopics(ctx)
			require.NoError(t, err)
			specs := worker.Topics(names, 4)
			got := asked()
			require.Len(t, got, len(specs))
			for _, s := range specs {
				require.Equal(t, tc.asked, got[s.Name], s.Name)
				require.NotEmpty(t, listed[s.Name].Partitions, s.Name)
				for _, p := range listed[s.Name].Partitions {
					require.Len(t, p.Replicas, tc.replicas, "%s partition %d", s.Name, p.Partition)
				}
				have := kafkatest.TopicConfigs(t, ctx, adm, s.Name)
				require.Equal(t, tc.minInsync, have["min.insync.replicas"], s.Name)
				for k, v := range s.Configs { // the lock state topic's too
					require.Equal(t, v, have[k], "%s: %s", s.Name, k)
				}
			}
		})
	}

	t.Run("more than the brokers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := kafkatest.Cluster(t, kfake.NumBrokers(3))
		w := idleWorker(t, c, worker.Config{Names: topics.DefaultNames(), ReplicationFactor: 4})
		err := w.EnsureTopics(ctx)
		require.ErrorIs(t, err, kerr.InvalidReplicationFactor)
		require.ErrorContains(t, err, `creating topic "`+topics.DefaultNames().Commands+`"`)
	})
}

// topicWarnings are the topics named by each warning about them (its
// message contains about), which must give advice and name them in its
// message too.
func topicWarnings(t *testing.T, logs, about, advice string) [][]string {
	t.Helper()
	var out [][]string
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line struct {
			Level, Message string
			Topics         []string
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
		if line.Level == "warn" && strings.Contains(line.Message, about) {
			require.Contains(t, line.Message, advice)
			for _, topic := range line.Topics {
				require.Contains(t, line.Message, topic)
			}
			out = append(out, line.Topics)
		}
	}
	return out
}

// unreplicatedWarnings are the topics named by each warning of a single
// replica.
func unreplicatedWarnings(t *testing.T, logs string) [][]string {
	t.Helper()
	return topicWarnings(t, logs, "single replica", "KAFKA_TOPIC_REPLICATION_FACTOR")
}

// With WarnUnreplicated, EnsureTopics warns once, naming them in the order
// of Topics, of its topics with a single replica, whether it made them so
// or they were made before; it fails nothing.
func TestEnsureTopicsWarnsOfUnreplicatedTopics(t *testing.T) {
	names := topics.DefaultNames()
	all := func() []string {
		var out []string
		for _, s := range worker.Topics(names, 16) {
			out = append(out, s.Name)
		}
		return out
	}()
	for _, tc := range []struct {
		name    string
		brokers int
		factor  int16
		before  map[string]int16 // topics made beforehand, with these replicas
		warn    bool
		want    []string // nil: no warning
	}{
		{name: "made with one replica", brokers: 1, warn: true, want: all},
		{name: "made with one replica, not asked to warn", brokers: 1},
		{name: "made with three", brokers: 3, factor: 3, warn: true},
		{name: "asked for one", brokers: 3, factor: 1, warn: true, want: all},
		{name: "one made before with one replica", brokers: 3, factor: 3, warn: true,
			before: map[string]int16{names.Commands: 1, names.State: 3}, want: []string{names.Commands}},
		{name: "made before with two", brokers: 3, factor: 1, warn: true,
			before: map[string]int16{names.Commands: 2, names.DeadLetter: 2},
			want:   []string{names.Acquired, names.Released, names.Expired, names.Revoked, names.State}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t, kfake.NumBrokers(tc.brokers))
			logs := &testlog.Buffer{}
			w := idleWorker(t, c, worker.Config{Names: names, ReplicationFactor: tc.factor, WarnUnreplicated: tc.warn, Logger: zerolog.New(logs)})
			adm := kadm.NewClient(w.Client())
			for topic, replicas := range tc.before {
				compact := "compact"
				_, err := adm.CreateTopic(ctx, 2, replicas, map[string]*string{"cleanup.policy": &compact}, topic)
				require.NoError(t, err)
			}
			require.NoError(t, w.EnsureTopics(ctx))

			got := unreplicatedWarnings(t, logs.String())
			if tc.want == nil {
				require.Empty(t, got)
				return
			}
			require.Equal(t, [][]string{tc.want}, got)
		})
	}
}

// With WarnUnreplicated, EnsureTopics warns once, naming them in the order
// of Topics, of its topics with three or more replicas whose
// min.insync.replicas is below 2: those made before as one DescribeConfigs
// request says (none is made when every topic is made now), those made now
// as the creation's answer says. It changes no topic's configs, says
// nothing of a topic whose configs it is refused, and fails nothing.
func TestEnsureTopicsWarnsOfTopicsWithoutMinInsync(t *testing.T) {
	names := topics.DefaultNames()
	var all []string
	for _, s := range worker.Topics(names, 16) {
		all = append(all, s.Name)
	}
	for _, tc := range []struct {
		name   string
		factor int16
		// before: topics made beforehand, with these min.insync.replicas
		// ("": the broker's, 1), and replicas (0: 3).
		before   map[string]string
		replicas int16
		refuse   string // the topic whose configs describing is refused; "*": all
		// kafka: CreateTopics answered as Kafka 2.4+ does, with every config
		// (kfake says only those asked for): min.insync.replicas=1, the
		// broker's.
		kafka bool
		warn  bool
		want  []string // nil: no warning
	}{
		{name: "made now with three", factor: 3, warn: true},
		{name: "made before", factor: 3, warn: true,
			before: map[string]string{names.Commands: "", names.Acquired: "2", names.State: "1"},
			want:   []string{names.Commands, names.State}},
		{name: "made before, not asked to warn", factor: 3, before: map[string]string{names.Commands: ""}},
		{name: "made before with two replicas", factor: 2, warn: true, before: map[string]string{names.Commands: ""}, replicas: 2},
		{name: "made before, describing refused", factor: 3, warn: true, refuse: "*",
			before: map[string]string{names.Commands: "", names.State: ""}},
		{name: "made before, describing one refused", factor: 3, warn: true, refuse: names.Commands,
			before: map[string]string{names.Commands: "", names.State: ""}, want: []string{names.State}},
		{name: "made now by the broker's default", factor: -1, warn: true, kafka: true, want: all},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t, kfake.NumBrokers(3))
			logs := &testlog.Buffer{}
			w := idleWorker(t, c, worker.Config{Names: names, ReplicationFactor: tc.factor, WarnUnreplicated: tc.warn, Logger: zerolog.New(logs)})
			adm := kadm.NewClient(w.Client())
			for _, s := range worker.Topics(names, 2) {
				minInsync, made := tc.before[s.Name]
				if !made && !tc.kafka {
					continue
				}
				configs := map[string]*string{}
				for k, v := range s.Configs {
					configs[k] = &v
				}
				if minInsync != "" {
					configs["min.insync.replicas"] = &minInsync
				}
				_, err := adm.CreateTopic(ctx, s.Partitions, cmp.Or(tc.replicas, 3), configs, s.Name)
				require.NoError(t, err)
			}
			if tc.kafka { // the topics were made above, as the broker's default would
				c.ControlKey(int16(kmsg.CreateTopics), func(kr kmsg.Request) (kmsg.Response, error, bool) {
					c.KeepControl()
					req := kr.(*kmsg.CreateTopicsRequest)
					resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
					for _, rt := range req.Topics {
						st := kmsg.NewCreateTopicsResponseTopic()
						st.Topic, st.NumPartitions, st.ReplicationFactor = rt.Topic, rt.NumPartitions, 3
						for _, rc := range append(rt.Configs, kmsg.CreateTopicsRequestTopicConfig{Name: "min.insync.replicas", Value: kmsg.StringPtr("1")}) {
							c := kmsg.NewCreateTopicsResponseTopicConfig()
							c.Name, c.Value = rc.Name, rc.Value
							st.Configs = append(st.Configs, c)
						}
						resp.Topics = append(resp.Topics, st)
					}
					return resp, nil, true
				})
			}
			described := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeConfigs}, Observe: true, Count: -1})
			var refused *kfake.FaultHandle
			if tc.refuse != "" {
				refusal := kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeConfigs}, Err: kerr.TopicAuthorizationFailed, Count: -1}
				if tc.refuse != "*" {
					refusal.Resource = tc.refuse
				}
				refused = c.Fault(refusal)
			}
			require.NoError(t, w.EnsureTopics(ctx))

			wantDescribed := 0
			if len(tc.before) > 0 {
				wantDescribed = 1
			}
			require.Equal(t, wantDescribed, described.Hits(), "DescribeConfigs requests")
			if refused != nil {
				refused.Remove()
			}
			for topic, minInsync := range tc.before {
				require.Equal(t, cmp.Or(minInsync, "1"), kafkatest.TopicConfigs(t, ctx, adm, topic)["min.insync.replicas"], "%s keeps its configs", topic)
			}
			got := topicWarnings(t, logs.String(), "min.insync.replicas below 2", "set min.insync.replicas=2")
			if tc.want == nil {
				require.Empty(t, got)
			} else {
				require.Equal(t, [][]string{tc.want}, got)
			}
			require.Empty(t, unreplicatedWarnings(t, logs.String()))
		})
	}
}

// With WarnUnreplicated, EnsureTopics warns once, naming both, when the
// replication factor is above the brokers the cluster lists: the relay
// would not create reply topics. Its topics, made before with one replica,
// let it start; it fails nothing.
func TestEnsureTopicsWarnsOfAFactorAboveTheBrokers(t *testing.T) {
	for _, tc := range []struct {
		factor int16
		warn   bool
	}{
		{factor: 3, warn: true},
		{factor: 1},
		{factor: -1},
	} {
		t.Run(strconv.Itoa(int(tc.factor)), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t) // one broker
			names := topics.DefaultNames()
			logs := &testlog.Buffer{}
			w := idleWorker(t, c, worker.Config{Names: names, ReplicationFactor: tc.factor, WarnUnreplicated: true, Logger: zerolog.New(logs)})
			adm := kadm.NewClient(w.Client())
			for _, s := range worker.Topics(names, 2) {
				configs := map[string]*string{}
				for k, v := range s.Configs {
					configs[k] = &v
				}
				_, err := adm.CreateTopic(ctx, s.Partitions, 1, configs, s.Name)
				require.NoError(t, err)
			}
			require.NoError(t, w.EnsureTopics(ctx))

			var got []string
			sc := bufio.NewScanner(strings.NewReader(logs.String()))
			for sc.Scan() {
				var line struct {
					Level, Message string
					Factor         int `json:"replication_factor"`
					Brokers        *int
				}
				require.NoError(t, json.Unmarshal(sc.Bytes(), &line), sc.Text())
				if line.Level == "warn" && line.Brokers != nil {
					require.Equal(t, int(tc.factor), line.Factor)
					require.Equal(t, 1, *line.Brokers)
					got = append(got, line.Message)
				}
			}
			if !tc.warn {
				require.Empty(t, got)
				return
			}
			require.Len(t, got, 1)
			require.Contains(t, got[0], "KAFKA_TOPIC_REPLICATION_FACTOR=3 is above the 1 brokers")
			require.Contains(t, got[0], "new reply topics")
			require.Contains(t, got[0], "until the brokers are up or the factor is lowered")
		})
	}
}

// Where a create-topic policy refuses min.insync.replicas
// (POLICY_VIOLATION or INVALID_CONFIG), EnsureTopics asks again without it,
// the lock state topic with its own configs, and warns once of each topic,
// naming the config dropped and Kafka's message. Refused the state topic's
// segment configs, it makes it compacted without them, with
// min.insync.replicas=2 still.
func TestEnsureTopicsConfigsRefused(t *testing.T) {
	names := topics.DefaultNames()
	specs := worker.Topics(names, 4)
	for _, tc := range []struct {
		name    string
		code    *kerr.Error
		refused []string // the configs refused
		// dropped: each topic made without configs asked, by name, and the
		// warning's mention of them.
		dropped map[string]string
	}{
		{name: "min.insync.replicas, POLICY_VIOLATION", code: kerr.PolicyViolation, refused: []string{"min.insync.replicas"}},
		{name: "min.insync.replicas, INVALID_CONFIG", code: kerr.InvalidConfig, refused: []string{"min.insync.replicas"}},
		{name: "segment configs", code: kerr.PolicyViolation, refused: []string{"segment.bytes", "segment.ms"},
			dropped: map[string]string{names.State: "segment.bytes=67108864, segment.ms=3600000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := kafkatest.Cluster(t, kfake.NumBrokers(3))
			asked := kafkatest.RefuseTopicConfigs(c, tc.code.Code, func(config string) bool { return slices.Contains(tc.refused, config) })
			logs := &testlog.Buffer{}
			w := idleWorker(t, c, worker.Config{Names: names, CommandsPartitions: 4, ReplicationFactor: 3, Logger: zerolog.New(logs)})
			require.NoError(t, w.EnsureTopics(ctx))

			dropped := tc.dropped
			if dropped == nil {
				dropped = map[string]string{}
				for _, s := range specs {
					dropped[s.Name] = "min.insync.replicas=2"
				}
			}
			adm := kadm.NewClient(w.Client())
			listed, err := adm.ListTopics(ctx)
			require.NoError(t, err)
			for _, s := range specs {
				require.Len(t, listed[s.Name].Partitions, int(s.Partitions), s.Name)
				for _, p := range listed[s.Name].Partitions {
					require.Len(t, p.Replicas, 3, "%s partition %d", s.Name, p.Partition)
				}
				got := warnings(t, logs.String(), s.Name)
				if dropped[s.Name] == "" {
					require.Empty(t, got, s.Name)
					require.Len(t, asked()[s.Name], 1, s.Name)
					continue
				}
				require.Len(t, got, 1, s.Name)
				require.Contains(t, got[0], "refused the configs "+dropped[s.Name]+" of topic "+s.Name)
				require.Contains(t, got[0], tc.code.Message)
				require.Contains(t, got[0], "not allowed", "Kafka's message")
			}
			state := kafkatest.TopicConfigs(t, ctx, adm, names.State)
			require.Equal(t, "compact", state["cleanup.policy"])
			if tc.dropped == nil {
				require.Equal(t, "67108864", state["segment.bytes"])
				require.Equal(t, "3600000", state["segment.ms"])
			} else {
				require.Equal(t, "2", state["min.insync.replicas"], "kept where only the segment configs are refused")
			}
		})
	}
}

// Where a create-topic policy refuses every topic config, EnsureTopics
// makes the topics without configs of their own, warned, but not the lock
// state topic uncompacted: it fails, naming it and the configs to create
// it beforehand with, having asked for it with its configs, then fewer,
// then compacted only, never without any.
func TestEnsureTopicsStateTopicConfigsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := kafkatest.Cluster(t, kfake.NumBrokers(3))
	asked := kafkatest.RefuseTopicConfigs(c, kerr.PolicyViolation.Code, func(string) bool { return true })
	names := topics.DefaultNames()
	logs := &testlog.Buffer{}
	w := idleWorker(t, c, worker.Config{Names: names, ReplicationFactor: 3, Logger: zerolog.New(logs)})
	err := w.EnsureTopics(ctx)
	require.ErrorIs(t, err, kerr.PolicyViolation)
	require.ErrorContains(t, err, `creating topic "`+names.State+`"`)
	require.ErrorContains(t, err, "create it beforehand with cleanup.policy=compact, segment.bytes=67108864, segment.ms=3600000")
	require.ErrorContains(t, err, "not allowed", "Kafka's message")

	stateAsked := asked()[names.State]
	require.Len(t, stateAsked, 4)
	require.Equal(t, "2", stateAsked[0]["min.insync.replicas"])
	require.Equal(t, map[string]string{"cleanup.policy": "compact", "min.insync.replicas": "2"}, stateAsked[1])
	require.Equal(t, worker.StateTopicConfigs(), stateAsked[2])
	require.Equal(t, map[string]string{"cleanup.policy": "compact"}, stateAsked[3])
	adm := kadm.NewClient(w.Client())
	listed, err := adm.ListTopics(ctx)
	require.NoError(t, err)
	require.NotContains(t, listed, names.State)
	for _, s := range worker.Topics(names, 16)[:6] {
		require.Contains(t, listed, s.Name)
		require.Len(t, warnings(t, logs.String(), s.Name), 1, s.Name)
	}
}
