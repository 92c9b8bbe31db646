package handlers

import (
	"context"

	"github.com/omninode/lockworker/topics"
)

// query reports a lock without changing it: free when there is no row, and
// expired for a lease past expires_at even before anyone has ended it.
func (a *applier) query(ctx context.Context) error {
	r, err := a.readLock(ctx, a.cmd.Namespace, a.cmd.LockName, "")
	if err != nil {
		return err
	}
	a.reply(a.event(topics.TypeStatus, r))
	return nil
}
