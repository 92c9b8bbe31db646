package main

import (
	"context"
	"fmt"
	"time"

	"github.com/omninode/lockworker/client"
)

// sdkCycler drives the throughput scenario through the client SDK: one
// client.Client shared by every virtual client (one service with many
// goroutines), TryAcquire then Release of each virtual client's own lock.
func (b *bench) sdkCycler(ctx context.Context) (cycler, func(), error) {
	cl, err := client.New(ctx, client.Config{
		Brokers: b.t.brokers, Topics: b.t.names, Requester: "lockbench-sdk-" + b.run,
		ReplyTopicPartitions: b.cfg.ReplyPartitions, RequestTimeout: 30 * time.Second,
	})
	if err != nil {
		return nil, nil, err
	}
	cycle := func(ctx context.Context, c, i int) (time.Duration, time.Duration, int, error) {
		start := time.Now()
		l, err := cl.TryAcquire(ctx, b.rid("tp", "sdk", c), client.WithOwner(fmt.Sprintf("sdk-owner-%d", c)),
			client.WithLease(time.Minute), client.WithoutKeepAlive())
		if err != nil {
			return time.Since(start), 0, 0, err
		}
		acq := time.Since(start)
		start = time.Now()
		if err := l.Release(ctx); err != nil {
			return acq, time.Since(start), 1, err
		}
		return acq, time.Since(start), 2, nil
	}
	return cycle, func() { _ = cl.Close() }, nil
}
