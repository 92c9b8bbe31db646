package kafkapubsub

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// topicCreator creates topics at most once per topic while creation
// succeeds, so publishing to a known topic costs no admin request. A topic
// deleted since is forgotten when a publish finds it missing (forget), so
// the next publish creates it again.
type topicCreator struct {
	client            *kgo.Client // its logger is told of a creation without configs
	admin             *kadm.Client
	partitions        int32
	replicationFactor int16
	configs           map[string]*string // TopicConfigs(replicationFactor)

	mu      sync.Mutex
	pending map[string]*creation // in flight or done; failed ones are removed
}

type creation struct {
	done chan struct{}
	err  error
}

func newTopicCreator(client *kgo.Client, partitions int32, replicationFactor int16) *topicCreator {
	// Zero means "broker default", which CreateTopics spells -1.
	if partitions == 0 {
		partitions = -1
	}
	if replicationFactor == 0 {
		replicationFactor = -1
	}
	return &topicCreator{
		client:            client,
		admin:             kadm.NewClient(client),
		partitions:        partitions,
		replicationFactor: replicationFactor,
		configs:           TopicConfigs(replicationFactor),
		pending:           make(map[string]*creation),
	}
}

// TopicConfigs are the configs a topic of replicationFactor replicas is
// created with (kadm's form; nil: the broker's defaults). From three replicas
// up, min.insync.replicas=2: a record produced with acks=all is then
// acknowledged only once two replicas have it, where Kafka's default (1)
// lets the leader alone acknowledge it once the other replicas fell out of
// sync, and losing that broker then loses the record, without an unclean
// leader election. Below three, and for -1 (the broker's
// default.replication.factor, which it chooses with its own
// min.insync.replicas), the broker's default is kept: with two replicas, 2
// would refuse every write while either is away, as during each broker's
// restart.
func TopicConfigs(replicationFactor int16) map[string]*string {
	if replicationFactor < 3 {
		return nil
	}
	two := "2"
	return map[string]*string{"min.insync.replicas": &two}
}

// CreateTopics creates topics (distinct) as kadm's CreateTopics does, with
// configs, and asks again without them for those the broker refused for
// them, POLICY_VIOLATION or INVALID_CONFIG: a Kafka whose policy fixes topic
// configs (a managed one) refuses any, and the topic as the broker makes it
// beats none. It returns each topic's error (nil when created; no answer
// for a topic is an error) and, for each topic asked again, the first
// refusal, for the caller to say so; such a topic's error is the second
// request's, with the first refusal in its text only, so that it is
// classified as the second answer says.
func CreateTopics(ctx context.Context, adm *kadm.Client, partitions int32, replicationFactor int16, configs map[string]*string, topics ...string) (errs, refused []error) {
	errs = createTopics(ctx, adm, partitions, replicationFactor, configs, topics)
	refused = make([]error, len(topics))
	var again []string
	for i, err := range errs {
		if len(configs) > 0 && ConfigsRefused(err) {
			refused[i] = err
			again = append(again, topics[i])
		}
	}
	if len(again) == 0 {
		return errs, refused
	}
	second := createTopics(ctx, adm, partitions, replicationFactor, nil, again)
	k := 0
	for i := range topics {
		if refused[i] == nil {
			continue
		}
		if errs[i] = second[k]; errs[i] != nil {
			errs[i] = fmt.Errorf("%w (asked first with %s: %v)", errs[i], ConfigsText(configs), refused[i])
		}
		k++
	}
	return errs, refused
}

// createTopics is kadm's CreateTopics, answered per topic.
func createTopics(ctx context.Context, adm *kadm.Client, partitions int32, replicationFactor int16, configs map[string]*string, topics []string) []error {
	resps, reqErr := adm.CreateTopics(ctx, partitions, replicationFactor, configs, topics...)
	errs := make([]error, len(topics))
	for i, topic := range topics {
		switch r, ok := resps[topic]; {
		case reqErr != nil:
			errs[i] = reqErr
		case !ok:
			errs[i] = errors.New("no answer for the topic")
		default:
			errs[i] = r.Err
		}
	}
	return errs
}

// LogTo logs to cl's logger (kgo.WithLogger), if it has one at level: a
// user's Kafka client is where its operator reads what the client does.
func LogTo(cl *kgo.Client, level kgo.LogLevel, msg string, keyvals ...any) {
	if l, _ := cl.OptValue(kgo.WithLogger).(kgo.Logger); l != nil && l.Level() >= level {
		l.Log(level, msg, keyvals...)
	}
}

// ConfigsRefused says a topic's creation was refused for the configs
// asked (POLICY_VIOLATION, INVALID_CONFIG): a create-topic policy that
// fixes them, which the same creation without configs may pass.
func ConfigsRefused(err error) bool {
	return errors.Is(err, kerr.PolicyViolation) || errors.Is(err, kerr.InvalidConfig)
}

// ConfigsText is configs as name=value, by name, comma-separated.
func ConfigsText(configs map[string]*string) string {
	var kv []string
	for k, v := range configs {
		if v == nil {
			kv = append(kv, k+"=null")
		} else {
			kv = append(kv, k+"="+*v)
		}
	}
	slices.Sort(kv)
	return strings.Join(kv, ", ")
}

// ensure creates the topics that do not exist, those not known yet in one
// request, and returns each topic's error. Concurrent callers for a topic
// share one request. A failure is not cached, so the next call retries; a
// caller that shared a request that failed only because its sender's
// context ended makes its own.
func (tc *topicCreator) ensure(ctx context.Context, topics ...string) []error {
	errs := make([]error, len(topics))
	cs := make([]*creation, len(topics))
	todo := make([]int, len(topics))
	for i := range todo {
		todo[i] = i
	}
	for len(todo) > 0 {
		var mine, theirs []int
		tc.mu.Lock()
		for _, i := range todo {
			c, ok := tc.pending[topics[i]]
			if !ok {
				c = &creation{done: make(chan struct{})}
				tc.pending[topics[i]] = c
				mine = append(mine, i)
			} else {
				theirs = append(theirs, i)
			}
			cs[i] = c
		}
		tc.mu.Unlock()
		if len(mine) > 0 {
			tc.run(ctx, topics, cs, mine)
		}
		todo = todo[:0]
		for _, i := range mine {
			errs[i] = cs[i].err
		}
		for _, i := range theirs {
			select {
			case <-cs[i].done:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				continue
			}
			err := cs[i].err
			if err != nil && ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
				todo = append(todo, i)
				continue
			}
			errs[i] = err
		}
	}
	return errs
}

// run makes the creations of topics[i] for i in mine, which ensure
// registered, in one request.
func (tc *topicCreator) run(ctx context.Context, topics []string, cs []*creation, mine []int) {
	names := make([]string, len(mine))
	for k, i := range mine {
		names[k] = topics[i]
	}
	got := tc.create(ctx, names)
	tc.mu.Lock()
	for k, i := range mine {
		if cs[i].err = got[k]; cs[i].err != nil {
			delete(tc.pending, topics[i])
		}
	}
	tc.mu.Unlock()
	for _, i := range mine {
		close(cs[i].done)
	}
}

// created reports whether topic was created (or found to exist) already:
// the common case of a publish, which then asks for nothing.
func (tc *topicCreator) created(topic string) bool {
	tc.mu.Lock()
	c, ok := tc.pending[topic]
	tc.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-c.done:
		return c.err == nil
	default:
		return false
	}
}

// forget drops a created topic, so the next ensure creates it again. One
// whose creation is in flight is kept: that creation is the one to wait for.
func (tc *topicCreator) forget(topic string) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if c, ok := tc.pending[topic]; ok {
		select {
		case <-c.done:
			delete(tc.pending, topic)
		default:
		}
	}
}

// create creates topics (distinct) and returns each one's error; a refusal
// to create one (no CREATE permission, which Kafka checks before whether the
// topic exists) leaves it to the produce: a topic provisioned elsewhere is
// written. A topic asked again without its configs (CreateTopics) is warned
// of to the client's logger (kgo.WithLogger), where the relay's operator
// looks: once, since a creation that took is remembered.
func (tc *topicCreator) create(ctx context.Context, topics []string) []error {
	got, refused := CreateTopics(ctx, tc.admin, tc.partitions, tc.replicationFactor, tc.configs, topics...)
	errs := make([]error, len(topics))
	for i, topic := range topics {
		err := got[i]
		if refused[i] != nil {
			// Also when the second ask failed: it may have made the topic
			// all the same (a timeout), which the next creation then finds
			// made, without a word.
			kv := []any{"topic", topic, "err", refused[i]}
			if err != nil {
				kv = append(kv, "then", err)
			}
			LogTo(tc.client, kgo.LogLevelWarn, "the broker refused the topic's configs "+ConfigsText(tc.configs)+"; asked again without them, to have the broker's", kv...)
		}
		switch {
		case err == nil, errors.Is(err, kerr.TopicAlreadyExists),
			errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			continue
		}
		errs[i] = fmt.Errorf("kafkapubsub: create topic %q: %w", topic, err)
	}
	return errs
}
