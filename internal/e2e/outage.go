package e2e

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Outage makes a kfake cluster behave like a broker that cannot be reached,
// for some requests or for all: it closes the connection instead of
// answering. It starts switched off.
type Outage struct {
	produce, all atomic.Bool
	refused      atomic.Int64
}

// NewOutage installs an Outage on c. Produce requests for the topics in
// allowed always pass (so a test can go on producing commands while the
// relay's writes are refused).
func NewOutage(t testing.TB, c *kfake.Cluster, allowed ...string) *Outage {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	tds, err := kadm.NewClient(cl).ListTopics(context.Background(), allowed...)
	require.NoError(t, err)
	ok := map[string]bool{}
	okID := map[[16]byte]bool{}
	for _, topic := range allowed {
		require.Contains(t, tds, topic, "allowed topics must exist")
		ok[topic], okID[tds[topic].ID] = true, true
	}
	o := &Outage{}
	c.ControlKey(-1, func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if o.all.Load() {
			o.refused.Add(1)
			return nil, errors.New("broker unreachable"), true
		}
		if pr, isProduce := req.(*kmsg.ProduceRequest); isProduce && o.produce.Load() {
			for _, tp := range pr.Topics {
				if !ok[tp.Topic] && !okID[tp.TopicID] { // Produce v13+ names topics by ID
					o.refused.Add(1)
					return nil, errors.New("broker unreachable"), true
				}
			}
		}
		return nil, nil, false
	})
	return o
}

// RefuseProduce switches refusing produce requests (except to the allowed
// topics) on or off.
func (o *Outage) RefuseProduce(on bool) { o.produce.Store(on) }

// Down switches refusing every request on or off.
func (o *Outage) Down(on bool) { o.all.Store(on) }

// Refused counts the requests refused so far.
func (o *Outage) Refused() int64 { return o.refused.Load() }
