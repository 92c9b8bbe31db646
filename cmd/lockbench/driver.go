package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// reply is one event read from the reply topic, with when it was read and
// when the relay produced it (the record's timestamp, set by its producer).
type reply struct {
	ev       topics.Event
	at       time.Time
	produced time.Time
}

// driver talks to lockworker the way any requester does: raw command records
// produced to the commands topic (keyed by lock key), events read from its own
// reply topic and routed to whoever waits for that request_id.
type driver struct {
	prod  *kgo.Client
	cons  *kgo.Client
	reply string

	mu       sync.Mutex
	handlers map[string]func(reply) bool // request_id -> handler; true: done, forget it

	produced, received, produceErrs atomic.Int64
	// undecodable replies, and unrouted ones: events nobody waits for (a
	// warm-up's answers, an answer after its wait ended, a repeat, a
	// holder's lock.expired).
	undecodable, unrouted atomic.Int64

	cancel context.CancelFunc
	done   chan struct{}
}

// createTopic creates a topic, or leaves an existing one alone.
func createTopic(ctx context.Context, brokers []string, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("creating topic %s: %w", topic, err)
	}
	return nil
}

// newDriver creates the reply topic (replyPartitions partitions) and starts
// reading it from its start.
func newDriver(ctx context.Context, brokers []string, names topics.Names, replyTopic string, replyPartitions int32) (*driver, error) {
	if err := createTopic(ctx, brokers, replyTopic, replyPartitions); err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(names.Commands),
		kgo.ProducerLinger(0), kgo.MaxBufferedRecords(1<<20))
	if err != nil {
		return nil, err
	}
	cons, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(replyTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		prod.Close()
		return nil, err
	}
	d := &driver{prod: prod, cons: cons, reply: replyTopic, handlers: map[string]func(reply) bool{}, done: make(chan struct{})}
	cctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go d.consume(cctx)
	return d, nil
}

func (d *driver) consume(ctx context.Context) {
	defer close(d.done)
	for ctx.Err() == nil {
		fs := d.cons.PollFetches(ctx)
		if fs.IsClientClosed() {
			return
		}
		now := time.Now()
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := topics.DecodeEvent(r.Value)
			if err != nil {
				d.undecodable.Add(1)
				return
			}
			d.received.Add(1)
			d.dispatch(reply{ev: ev, at: now, produced: r.Timestamp})
		})
	}
}

func (d *driver) dispatch(r reply) {
	if r.ev.RequestID == "" {
		d.unrouted.Add(1)
		return
	}
	d.mu.Lock()
	h := d.handlers[r.ev.RequestID]
	d.mu.Unlock()
	if h == nil {
		d.unrouted.Add(1)
	}
	if h != nil && h(r) {
		d.mu.Lock()
		delete(d.handlers, r.ev.RequestID)
		d.mu.Unlock()
	}
}

// on registers h for the events answering requestID; h returns true when it
// wants no more.
func (d *driver) on(requestID string, h func(reply) bool) {
	d.mu.Lock()
	d.handlers[requestID] = h
	d.mu.Unlock()
}

func (d *driver) forget(requestID string) {
	d.mu.Lock()
	delete(d.handlers, requestID)
	d.mu.Unlock()
}

// send produces a command asynchronously, keyed by its lock key, with
// reply_to set to the driver's reply topic.
func (d *driver) send(ctx context.Context, c topics.Command) error {
	c.ReplyTo = d.reply
	v, err := c.Encode()
	if err != nil {
		return err
	}
	d.produced.Add(1)
	d.prod.Produce(ctx, &kgo.Record{Key: []byte(c.Key()), Value: v}, func(_ *kgo.Record, err error) {
		// One whose sender's window ended (ctx) is no failure: nobody
		// waits for it, and the scenarios do not count it.
		if err != nil && ctx.Err() == nil {
			d.produceErrs.Add(1)
		}
	})
	return nil
}

// call sends c and waits for the first event answering it whose type is not
// lock.queued.
func (d *driver) call(ctx context.Context, c topics.Command, timeout time.Duration) (reply, error) {
	ch := make(chan reply, 1)
	d.on(c.RequestID, func(r reply) bool {
		if r.ev.Type == topics.TypeQueued {
			return false
		}
		ch <- r
		return true
	})
	if err := d.send(ctx, c); err != nil {
		d.forget(c.RequestID)
		return reply{}, err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		d.forget(c.RequestID)
		return reply{}, ctx.Err()
	case <-t.C:
		d.forget(c.RequestID)
		return reply{}, fmt.Errorf("no answer to %s %s within %s", c.Operation, c.RequestID, timeout)
	}
}

func (d *driver) close() {
	d.cancel()
	d.cons.Close()
	<-d.done
	d.prod.Close()
}

// DriverStats are the drivers' counts over the run: a command whose
// produce failed is seen only as a timeout or a missing answer, an
// undecodable reply not at all.
type DriverStats struct {
	Produced      int64 `json:"commands_produced"`
	ProduceErrors int64 `json:"produce_errors"`
	Received      int64 `json:"replies_read"`
	Undecodable   int64 `json:"replies_undecodable"`
	Unrouted      int64 `json:"replies_nobody_waited_for"`
}

// addTo adds the driver's counts, once it is closed, to s.
func (d *driver) addTo(s *DriverStats) {
	s.Produced += d.produced.Load()
	s.ProduceErrors += d.produceErrs.Load()
	s.Received += d.received.Load()
	s.Undecodable += d.undecodable.Load()
	s.Unrouted += d.unrouted.Load()
}

// topicWatcher reads a topic from its current end and hands each event to fn.
type topicWatcher struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func watchFromEnd(ctx context.Context, brokers []string, topic string, fn func(reply)) (*topicWatcher, error) {
	admc, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(admc).ListEndOffsets(ctx, topic)
	admc.Close()
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("reading end offsets of %s: %w", topic, err)
	}
	parts := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) { parts[o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: parts}),
		kgo.FetchMaxWait(time.Second))
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.Background())
	w := &topicWatcher{cl: cl, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for wctx.Err() == nil {
			fs := cl.PollFetches(wctx)
			if fs.IsClientClosed() {
				return
			}
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				if ev, err := topics.DecodeEvent(r.Value); err == nil {
					fn(reply{ev: ev, at: now, produced: r.Timestamp})
				}
			})
		}
	}()
	return w, nil
}

func (w *topicWatcher) close() {
	w.cancel()
	w.cl.Close()
	<-w.done
}
