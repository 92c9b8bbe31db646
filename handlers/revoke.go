package handlers

import (
	"context"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// revoke ends the lock's leases, or owner_id's only, with the command's
// reason (rules.Lock.Revoke): each holder is told lock.revoked, and the
// revoker's answer is one lock.revoked counting them, showing the last. A
// session's lease whose session is past its expiry has ended with it: it
// ends as expired (session_expired), as ended leases do, not revoked.
// Waiters are granted as after a release, unless a revoked lease's
// lock-delay holds them. Who may revoke is the worker's to judge (an
// administrative operation); the handler applies it.
func (a *applier) revoke(ctx context.Context) error {
	c := a.cmd
	s, err := a.loadLock(ctx, c.Namespace, c.LockName, "", false)
	if err != nil {
		return err
	}
	effs := s.l.Revoke(c.OwnerID, c.Key())
	if err := a.apply(ctx, s, effs); err != nil {
		return err
	}
	var last rules.Info
	n := 0
	for _, e := range effs {
		if e.Kind == rules.Revoke {
			last, n = e.Info, n+1
		}
	}
	if n == 0 {
		return nil // refused: apply answered
	}
	p := a.event(topics.TypeRevoked, s.row, last)
	p.ev.Reason, p.ev.RevokedCount = c.Reason, n
	a.reply(p)
	return nil
}
