package worker

import "github.com/omninode/lockworker/topics"

// TopicSpec is a topic the worker needs: its name, and the partitions and
// configs it is created with when missing.
type TopicSpec struct {
	Name       string
	Partitions int32
	// Configs are the topic configs it is created with; nil: the broker's
	// defaults.
	Configs map[string]string
}

// StateTopicConfigs are the configs the lock state topic is created with:
// compacted, a table of each lock's last state (docs/design.md "Lock state
// topic").
func StateTopicConfigs() map[string]string {
	return map[string]string{"cleanup.policy": "compact"}
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
		ts = append(ts, TopicSpec{Name: names.State, Partitions: commandsPartitions, Configs: StateTopicConfigs()})
	}
	return ts
}
