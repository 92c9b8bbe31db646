package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A lease or session lost at its deadline while its reply topic is missing
// (deleted; the workers' relay creates it again only as it next publishes
// there, which takes seconds) says so, as ErrNoReply does: the client knew
// why no extension or keep-alive was confirmed. The stand-in worker
// answers the acquire and the open, then the topic is deleted and nothing
// answers any more.
func TestLostWhileReplyTopicMissing(t *testing.T) {
	grant := answers{
		topics.OpAcquire:     grants(topics.TypeAcquired, 3),
		topics.OpSessionOpen: sessionAnswers(topics.TypeSessionOpened, 3),
	}
	for _, tc := range []struct {
		name string
		// hold acquires what is then lost, and returns its Lost and Err.
		hold func(ctx context.Context, c *Client) (<-chan struct{}, func() error, error)
		want error
	}{
		{"lease", func(ctx context.Context, c *Client) (<-chan struct{}, func() error, error) {
			l, err := c.Acquire(ctx, "job", WithLease(3*time.Second))
			if err != nil {
				return nil, nil, err
			}
			return l.Lost(), l.Err, nil
		}, ErrLeaseLost},
		{"session", func(ctx context.Context, c *Client) (<-chan struct{}, func() error, error) {
			s, err := c.NewSession(ctx, 3*time.Second)
			if err != nil {
				return nil, nil, err
			}
			return s.Lost(), s.Err, nil
		}, ErrSessionLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, cluster := fakeWorkerWith(t, fakeOpts{}, grant.by(nil))
			lost, lostErr, err := tc.hold(ctx, c)
			require.NoError(t, err)

			resp, err := adminOf(t, cluster).DeleteTopic(ctx, c.ReplyTopic())
			require.NoError(t, err)
			require.NoError(t, resp.Err)
			await(t, ctx, lost, "not lost")
			err = lostErr()
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, "without a confirmed")
			require.ErrorContains(t, err, fmt.Sprintf("reply topic %q not found since", c.ReplyTopic()))
			t.Log(err)
		})
	}
}
