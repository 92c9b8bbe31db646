package worker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/topics"
)

// TopicSpec is a topic the worker needs: its name, and the partitions and
// configs it is created with when missing.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Configs are the topic configs it is created with; nil: the broker's
	// defaults.
	Configs map[string]string
	// Required are those of Configs it is never created without: where the
	// brokers refuse them, EnsureTopics fails instead (createTopic).
	Required []string
}

// StateTopicConfigs are the configs the lock state topic is created with
// (docs/design.md "Topics", Creation): compacted, a table of each lock's
// last state. Kafka never compacts a partition's active segment, and Watch
// and lockctl read a partition from its start, so its segments are smaller
// than Kafka's defaults (1 GiB, rolled after 7 days), as those of Kafka's own
// compacted topics are (__consumer_offsets: 100 MiB): a segment rolls at
// 64 MiB or after an hour, whichever comes first. min.cleanable.dirty.ratio
// keeps Kafka's default (0.5, as its own topics do): rolled segments wait
// for the cleaner until they are as big as the compacted table.
func StateTopicConfigs() map[string]string {
	return map[string]string{
		"cleanup.policy": "compact",
		"segment.bytes":  strconv.Itoa(64 << 20),
		"segment.ms":     strconv.FormatInt(time.Hour.Milliseconds(), 10),
	}
}

// Topics are the topics a worker of these names and commands partitions
// needs (Config.Names and Config.CommandsPartitions), which EnsureTopics
// creates when missing, in this order. The development broker
// (cmd/devkafka) makes them from it too, so that a topic made there before
// any worker starts is the one a worker would have made.
func Topics(names topics.Names, commandsPartitions int32) []TopicSpec {
	ts := []TopicSpec{
		{Name: names.Commands, Partitions: commandsPartitions},
		{Name: names.Acquired, Partitions: 1},
		{Name: names.Released, Partitions: 1},
		{Name: names.Expired, Partitions: 1},
		{Name: names.Revoked, Partitions: 1},
		{Name: names.DeadLetter, Partitions: 1},
	}
	if names.State != "" {
		ts = append(ts, TopicSpec{Name: names.State, Partitions: commandsPartitions, Configs: StateTopicConfigs(),
			// Uncompacted, it would lose the state of quiet locks; its
			// segments' size is only how much readers read past.
			Required: []string{"cleanup.policy"}})
	}
	return ts
}

// createTopic creates spec's topic with factor replicas, its configs and
// kafkapubsub.TopicConfigs(factor). A managed Kafka's create-topic policy
// may refuse topic configs (POLICY_VIOLATION or INVALID_CONFIG): it then
// asks again with spec's Required configs and TopicConfigs, then without
// TopicConfigs, then with the Required configs only, and warns once of
// those the topic was made without. It fails naming the
// configs to create the topic beforehand with rather than make it without
// its Required ones.
func (w *Worker) createTopic(ctx context.Context, adm *kadm.Client, spec TopicSpec, factor int16) (kadm.CreateTopicResponse, error) {
	own, required := map[string]*string{}, map[string]*string{}
	for k, v := range spec.Configs {
		own[k] = &v
		if slices.Contains(spec.Required, k) {
			required[k] = &v
		}
	}
	// Some configs dropped at each ask: TopicConfigs (durability) is dropped
	// after the topic's own that are not Required (how much readers read
	// past), before the topic's own are.
	with := func(configs map[string]*string) map[string]*string {
		c := maps.Clone(configs)
		maps.Copy(c, kafkapubsub.TopicConfigs(factor))
		return c
	}
	var asks []map[string]*string
	for _, configs := range []map[string]*string{with(own), with(required), own, required} {
		if !slices.ContainsFunc(asks, func(a map[string]*string) bool { return kafkapubsub.ConfigsText(a) == kafkapubsub.ConfigsText(configs) }) {
			asks = append(asks, configs)
		}
	}
	var refused error // the asks refused so far, each with Kafka's answer
	for _, configs := range asks {
		resp, err := adm.CreateTopic(ctx, spec.Partitions, factor, configs, spec.Name)
		if len(configs) == 0 || !kafkapubsub.ConfigsRefused(err) {
			switch {
			case refused == nil:
			case err == nil:
				dropped := maps.Clone(asks[0])
				for k := range configs {
					delete(dropped, k)
				}
				w.log.Warn().Str("topic", spec.Name).
					Msg("Kafka refused the configs " + kafkapubsub.ConfigsText(dropped) + " of topic " + spec.Name + " (" + refused.Error() + "): it is created without them, with the broker's (docs/design.md \"Topics\")")
			default:
				err = fmt.Errorf("%w (refused before: %v)", err, refused) // classified as this answer says: a timeout is retried
			}
			return resp, err
		}
		if resp.ErrMessage != "" { // Kafka's own: which config, and why
			err = fmt.Errorf("%w: %s", err, resp.ErrMessage)
		}
		err = fmt.Errorf("with %s: %w", kafkapubsub.ConfigsText(configs), err)
		if refused != nil {
			err = fmt.Errorf("%w; then %w", refused, err)
		}
		refused = err
	}
	return kadm.CreateTopicResponse{}, fmt.Errorf("the brokers refuse its configs (asked %w), and it needs %s: create it beforehand with %s (docs/design.md \"Topics\")", refused, kafkapubsub.ConfigsText(required), kafkapubsub.ConfigsText(own))
}

// checkedConfigs are the topic configs EnsureTopics reads: the lock state
// topic's compaction (checkStateTopic) and min.insync.replicas
// (warnReplication).
var checkedConfigs = []string{"cleanup.policy", "min.insync.replicas"}

// describeConfigs returns checkedConfigs of those of topics the brokers
// describe, in one DescribeConfigs request (none without topics), each
// topic's by name (a config without a value left out). It says nothing of a
// topic whose configs it is refused (ACLs: the DescribeConfigs right, which
// the worker needs for nothing else), and fails nothing.
func (w *Worker) describeConfigs(ctx context.Context, topics []string) map[string]map[string]string {
	if len(topics) == 0 {
		return nil
	}
	req := kmsg.NewPtrDescribeConfigsRequest()
	for _, t := range topics {
		r := kmsg.NewDescribeConfigsRequestResource()
		r.ResourceType = kmsg.ConfigResourceTypeTopic
		r.ResourceName = t
		r.ConfigNames = checkedConfigs
		req.Resources = append(req.Resources, r)
	}
	// Not kadm's: it drops every topic's configs when one is refused.
	resp, err := req.RequestWith(ctx, w.cl)
	if err != nil {
		w.log.Debug().Err(err).Strs("topics", topics).Msg("the topics' configs could not be described; the lock state topic's compaction and their min.insync.replicas are not checked")
		return nil
	}
	out := make(map[string]map[string]string, len(resp.Resources))
	for _, r := range resp.Resources {
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			if !errors.Is(err, kerr.TopicAuthorizationFailed) && !errors.Is(err, kerr.ClusterAuthorizationFailed) {
				w.log.Debug().Err(err).Str("topic", r.ResourceName).Msg("the topic's configs could not be described; they are not checked")
			}
			continue
		}
		cs := make(map[string]kadm.Config, len(r.Configs))
		for _, c := range r.Configs {
			cs[c.Name] = kadm.Config{Key: c.Name, Value: c.Value}
		}
		out[r.ResourceName] = configValues(cs)
	}
	return out
}

// configValues are the values of configs by name, those without one left
// out.
func configValues(configs map[string]kadm.Config) map[string]string {
	out := make(map[string]string, len(configs))
	for k, c := range configs {
		if c.Value != nil {
			out[k] = *c.Value
		}
	}
	return out
}

// checkStateTopic warns when the lock state topic, as the brokers describe
// its configs, is not compacted as the worker would have made it (one made
// before the worker started keeps its own): the worker runs as well, but
// the table loses what readers of it need.
func (w *Worker) checkStateTopic(topic string, configs map[string]string) {
	policy, ok := configs["cleanup.policy"]
	if !ok {
		policy = "delete" // Kafka's default
	}
	var compact, del bool
	for p := range strings.SplitSeq(policy, ",") {
		switch strings.TrimSpace(p) {
		case "compact":
			compact = true
		case "delete":
			del = true
		}
	}
	switch {
	case !compact:
		w.log.Warn().Str("topic", topic).Str("cleanup.policy", policy).
			Msg("the lock state topic " + topic + " is not compacted: it lacks cleanup.policy=compact, so it keeps every change until its retention deletes the state of quiet locks, and readers of the table read every change; set cleanup.policy=compact on it (docs/design.md \"Topics\")")
	case del:
		w.log.Warn().Str("topic", topic).Str("cleanup.policy", policy).
			Msg("the lock state topic " + topic + " is deleted as well as compacted (cleanup.policy=" + policy + "): its retention deletes the state of quiet locks from the table; set cleanup.policy=compact on it (docs/design.md \"Topics\")")
	}
}

// warnReplication logs a warning naming the topics of specs with a single
// replica, and another naming those with three or more whose
// min.insync.replicas is below 2. replicas are those the creation of a
// topic made now said; the topics of ask are counted as the brokers list
// their partitions (the fewest replicas of any: one partition is enough to
// stop the worker, or to lose acknowledged records). configs are the
// topics' as the brokers said them (describeConfigs, or the creation's
// answer). It says nothing of a topic the brokers do not describe (not
// shown yet, or refused by ACLs), and fails nothing: the worker runs as
// well, until that broker goes. The same metadata's brokers are checked
// against the replication factor (warnFactorAboveBrokers).
func (w *Worker) warnReplication(ctx context.Context, specs []TopicSpec, replicas map[string]int, configs map[string]map[string]string, ask []string) {
	if len(ask) > 0 {
		resp, err := metadata(ctx, w.cl, ask...)
		if err != nil {
			w.log.Debug().Err(err).Strs("topics", ask).Msg("the topics' replicas could not be read; their replication is not checked")
			resp = &kmsg.MetadataResponse{}
		} else {
			w.warnFactorAboveBrokers(len(resp.Brokers))
		}
		for _, t := range resp.Topics {
			if t.Topic == nil || t.ErrorCode != 0 || len(t.Partitions) == 0 {
				continue
			}
			fewest := len(t.Partitions[0].Replicas)
			for _, p := range t.Partitions {
				fewest = min(fewest, len(p.Replicas))
			}
			replicas[*t.Topic] = fewest
		}
	}
	var single, unguarded []string // in the order of specs
	for _, s := range specs {
		switch n := replicas[s.Name]; {
		case n == 1:
			single = append(single, s.Name)
		case n >= 3:
			if isr, err := strconv.Atoi(configs[s.Name]["min.insync.replicas"]); err == nil && isr < 2 {
				unguarded = append(unguarded, s.Name)
			}
		}
	}
	if len(single) > 0 {
		w.log.Warn().Strs("topics", single).
			Msg("topics " + strings.Join(single, ", ") + " have a single replica: losing the broker of one of their partitions stops the service and can lose commands already acknowledged; " +
				"set KAFKA_TOPIC_REPLICATION_FACTOR (3 in production) for the topics lockworker creates, and raise the replication of those that exist (kafka-reassign-partitions) (docs/design.md \"Topics\")")
	}
	if len(unguarded) > 0 {
		w.log.Warn().Strs("topics", unguarded).
			Msg("topics " + strings.Join(unguarded, ", ") + " have three or more replicas but min.insync.replicas below 2: once their other replicas fall out of sync the leader alone acknowledges a write (acks=all), and losing that broker then loses commands, lifecycle events and lock states already acknowledged; " +
				"set min.insync.replicas=2 on them (kafka-configs --alter --add-config min.insync.replicas=2), as lockworker does on the topics it creates with KAFKA_TOPIC_REPLICATION_FACTOR 3 or more (docs/design.md \"Topics\")")
	}
}

// warnFactorAboveBrokers logs a warning when Config.ReplicationFactor is
// above the brokers the metadata listed: Kafka then refuses to create a
// topic (INVALID_REPLICATION_FACTOR), which the relay waits out as Kafka
// being away, so a factor above the brokers the cluster has at all would
// otherwise show only as its repeated warnings and a growing outbox. It
// fails nothing: a broker restarting during the start is not listed either.
// The metadata read for the topics made before serves: with the factor above
// the brokers, none could be made now, so the start gets here only if all
// were made before. Not on the embedded broker (no WarnUnreplicated), where
// a factor above 1 is refused at start.
func (w *Worker) warnFactorAboveBrokers(brokers int) {
	factor := int(w.cfg.ReplicationFactor)
	if factor <= brokers { // -1 and 0 too: the broker's default
		return
	}
	w.log.Warn().Int("replication_factor", factor).Int("brokers", brokers).
		Msg("KAFKA_TOPIC_REPLICATION_FACTOR=" + strconv.Itoa(factor) + " is above the " + strconv.Itoa(brokers) + " brokers Kafka lists as up: it refuses to create topics with more replicas than that, so new reply topics (AUTO_CREATE_REPLY_TOPICS) are not created, their replies waiting in the outbox, until the brokers are up or the factor is lowered to at most the brokers the cluster has (docs/design.md \"Topics\")")
}
