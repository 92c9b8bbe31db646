package handlers

import (
	"context"

	"github.com/omninode/lockworker/handlers/rules"
)

// extend lengthens the owner's lease from its current expires_at, before it
// ends (rules.Lock.Extend). The token stays; extension_count counts the
// extensions.
func (a *applier) extend(ctx context.Context) error {
	c := a.cmd
	if ch, err := a.atOnce(ctx); err != nil || ch != nil {
		if ch != nil {
			a.extended(ch.row, ch.info(rules.Acquired))
			a.changedState(ch, true)
			return nil
		}
		return err
	}
	s, err := a.loadLock(ctx, c.Namespace, c.LockName, c.OwnerID, false)
	if err != nil {
		return err
	}
	return a.apply(ctx, s, s.l.Extend(c.OwnerID, c.Key(), c.FencingToken, c.ExtensionDuration))
}
