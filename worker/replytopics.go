package worker

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// replyTopics bounds the reply topics commands can make the relay create:
// a command may name a reply topic that exists, or a new one while fewer
// than max topics exist under the reply prefix. The set of topics is read
// from the brokers at most once per second, on a miss, and never shrinks
// in between (a topic allowed here counts at once), so no stream of new
// reply_to values, however fast, makes more than max.
type replyTopics struct {
	adm    *kadm.Client
	prefix string
	max    int
	create bool // AUTO_CREATE_REPLY_TOPICS: without it only existing ones

	mu     sync.Mutex
	known  map[string]bool
	listed time.Time
}

// allow reports whether a command may name topic as its reply_to, and how
// many reply topics there are. A failure to list the topics leaves the set
// as it was: Kafka's trouble does not refuse commands.
func (rt *replyTopics) allow(ctx context.Context, topic string) (bool, int) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.known[topic] {
		return true, len(rt.known)
	}
	if time.Since(rt.listed) >= time.Second {
		rt.listed = time.Now()
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		listed, err := rt.adm.ListTopics(ctx)
		cancel()
		if err == nil {
			for _, name := range listed.Names() {
				if len(name) > len(rt.prefix) && strings.HasPrefix(name, rt.prefix) {
					rt.known[name] = true
				}
			}
		}
		if rt.known[topic] {
			return true, len(rt.known)
		}
	}
	if !rt.create || len(rt.known) >= rt.max {
		return false, len(rt.known)
	}
	rt.known[topic] = true
	return true, len(rt.known)
}
