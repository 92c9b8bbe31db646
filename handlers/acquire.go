package handlers

import (
	"context"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// acquire grants the lock, renews the owner's lease, or refuses or queues
// the command (rules.Lock.Acquire).
func (a *applier) acquire(ctx context.Context) error {
	c := a.cmd
	if c.SessionID != "" {
		return a.sessionAcquire(ctx)
	}
	if ch, err := a.atOnce(ctx); err != nil || ch != nil {
		if ch != nil {
			ch.row.now = ch.holder.AcquiredAt // the grant's own time, as the general path's events have
			ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, c.RequestID, ch.row.now)
			ev.LockInfo = ch.row.info(ch.info(rules.Acquired))
			p := &pending{ev: &ev, polledAt: a.polledAt}
			a.recordHistory(p.ev)
			a.reply(p)
			a.emit(a.env.Names.Acquired, c.Key(), p)
			a.changedState(ch, true)
			return nil
		}
		return err
	}
	s, err := a.loadLock(ctx, c.Namespace, c.LockName, c.OwnerID, true)
	if err != nil {
		return err
	}
	return a.apply(ctx, s, s.l.Acquire(a.request()))
}

// request is the acquire as the rules take it, once loadLock has read it
// (its owner_metadata as stored).
func (a *applier) request() rules.Request {
	c := a.cmd
	return rules.Request{Owner: c.OwnerID, Mode: mode(c.Mode), Limit: max(c.Limit, 1), Lease: a.lease(), Wait: c.WaitTimeout,
		Metadata: a.metadata, ReplyTo: c.ReplyTo, RequestID: c.RequestID, Partition: a.env.Partition, Key: c.Key(),
		LockDelay: c.LockDelay, MaxHold: c.MaxHold, TokenOnly: a.env.RequireFencingToken}
}

// mode is an acquire's mode: exclusive unless it says shared.
func mode(m string) rules.Mode {
	if m == topics.ModeShared {
		return rules.Shared
	}
	return rules.Exclusive
}

// lease is the acquire's lease_duration, or the default, at most its
// max_hold: no lease runs past acquired_at + max_hold.
func (a *applier) lease() float64 {
	lease := a.cmd.LeaseDuration
	if lease == 0 {
		lease = a.env.DefaultLease.Seconds()
	}
	if a.cmd.MaxHold > 0 {
		lease = min(lease, a.cmd.MaxHold)
	}
	return lease
}
