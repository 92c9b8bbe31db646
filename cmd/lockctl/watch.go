package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"sync"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// watchFlags is `lockctl watch`: follow the lifecycle topics, one line per
// event, until interrupted.
func (c *cli) watchFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	lock := fs.String("lock", "", "only this lock (with --namespace, if given)")
	fromBeginning := fs.Bool("from-beginning", false, "start at the oldest retained events instead of new ones only")
	return func(ctx context.Context, args []string) error {
		if err := noArgs(args); err != nil {
			return err
		}
		seeds, opts, err := c.kafka()
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		sub, err := client.NewSubscriber(pctx, client.SubscriberConfig{Brokers: seeds, KafkaOpts: opts, FromEnd: !*fromBeginning})
		if err != nil {
			return err
		}
		defer sub.Close()
		names := c.names()
		var (
			mu sync.Mutex
			wg sync.WaitGroup
		)
		lifecycle := []string{names.Acquired, names.Released, names.Expired, names.Revoked}
		for _, topic := range lifecycle {
			msgs, err := sub.Subscribe(ctx, topic)
			if err != nil {
				return fmt.Errorf("subscribing to %s: %w", topic, err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for msg := range msgs {
					ev, err := client.DecodeMessage(msg)
					msg.Ack()
					if err != nil || !c.watched(ev, *lock) {
						continue
					}
					mu.Lock()
					c.printWatched(ev, msg)
					mu.Unlock()
				}
			}()
		}
		if !c.json {
			fmt.Fprintf(c.stderr, "lockctl: watching %s (Ctrl-C to stop)\n", strings.Join(lifecycle, ", "))
		}
		wg.Wait() // the subscriptions end with ctx
		return nil
	}
}

func (c *cli) watched(ev topics.Event, lock string) bool {
	if lock == "" {
		return true
	}
	li := ev.LockInfo
	return li != nil && li.LockName == lock && (c.namespace == "" || li.Namespace == c.namespace)
}

func (c *cli) printWatched(ev topics.Event, msg *message.Message) {
	if c.json {
		fmt.Fprintln(c.stdout, string(msg.Payload))
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-13s", ev.OccurredAt.Format(topics.TimeLayout), ev.Type)
	if li := ev.LockInfo; li != nil {
		fmt.Fprintf(&b, " %s owner=%s token=%d", topics.LockKey(li.Namespace, li.LockName), li.OwnerID, li.FencingToken)
		if ev.Type == topics.TypeAcquired && li.ExpiresAt != nil {
			fmt.Fprintf(&b, " expires=%s", li.ExpiresAt.Format(topics.TimeLayout))
		}
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", ev.Reason)
	}
	fmt.Fprintln(c.stdout, b.String())
}
