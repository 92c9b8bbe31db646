package worker

import (
	"context"
	"errors"
	"time"
)

// A commands topic deleted and created again under its name while the
// replica runs gets a new Kafka topic ID, which kgo never takes on by
// itself: its fetches carry the old ID and are answered UNKNOWN_TOPIC_ID
// for good, and a topic of the same partition count brings no rebalance,
// so the replica would hold its partitions and apply nothing until
// restarted. takeRecreatedTopic does what kgo asks for: it purges the topic
// from consuming, which lets its partitions go, and adds it back once they
// are let go of; the group then assigns the new topic's partitions, and
// the assignment's check of the topic ID (checkStored) forgets the old
// topic's offsets and applies the new one from its start.

// recreatedPollEvery is how often takeRecreatedTopic looks whether the
// purged partitions are let go of.
const recreatedPollEvery = 50 * time.Millisecond

// takeRecreatedTopic runs once per recreation seen (w.recreating guards
// it) and returns when the topic is consumed again, or the partitions are
// stopped for good.
func (w *Worker) takeRecreatedTopic() {
	defer w.wg.Done()
	defer w.recreating.Store(false)
	w.log.Error().Str("topic", w.cfg.Names.Commands).
		Msg("the brokers no longer know the commands topic by the ID this replica consumes it under (UNKNOWN_TOPIC_ID): deleted, and maybe created again; letting its partitions go and consuming the topic anew, from its start if it is a new one")
	w.cl.PurgeTopicsFromConsuming(w.cfg.Names.Commands)
	t := time.NewTicker(recreatedPollEvery)
	defer t.Stop()
	for {
		select {
		case <-w.halted.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		let := len(w.parts) == 0
		w.mu.Unlock()
		if !let {
			continue
		}
		// Under withdrawn.mu, as withdraw cancels: a withdrawal between
		// the check and the add would leave the topic consumed by a
		// replica that withdrew.
		w.withdrawn.mu.Lock()
		if !errors.Is(context.Cause(w.withdrawn.ctx), errWithdrawn) {
			w.cl.AddConsumeTopics(w.cfg.Names.Commands)
		} // else its rejoin adds the topic back once PostgreSQL answers
		w.withdrawn.mu.Unlock()
		return
	}
}
