package handlers

import (
	"context"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// release ends the owner's lease and hands the lock to the next waiters, or
// withdraws an owner that is still waiting (rules.Lock.Release).
func (a *applier) release(ctx context.Context) error {
	c := a.cmd
	if ch, err := a.atOnce(ctx); err != nil || ch != nil {
		if ch != nil {
			a.released(ch.row, ch.info(rules.Released), ch.holder.ReplyTo)
			a.changedState(ch, false)
			return nil
		}
		return err
	}
	s, err := a.loadLock(ctx, c.Namespace, c.LockName, c.OwnerID, false)
	if err != nil {
		return err
	}
	return a.apply(ctx, s, s.l.Release(c.OwnerID, c.Key(), c.FencingToken, a.waitOnly()))
}

// waitOnly says the command is a release without a fencing token under
// REQUIRE_FENCING_TOKEN: it may withdraw the owner's wait (an SDK's
// acquire given up) but not end a lease, so it has no common case.
func (a *applier) waitOnly() bool {
	return a.env.RequireFencingToken && a.cmd.Operation == topics.OpRelease && a.cmd.FencingToken == nil
}
