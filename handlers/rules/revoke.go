package rules

import "fmt"

// Revoke decides a revoke: after ending the leases past their expiry, and
// those of the leases it would revoke whose session is past its expiry
// (which have ended with it: lapsed's Lose, not a revoke), it ends every
// lease of the lock, or only owner's when owner is not "", as Revoked (so
// each starts its lock-delay, if it has one), then hands the lock to its
// waiters once, as a release does: a waiter granted by a hand-off before
// the revoke would have been revoked in the same breath. With nothing to
// end it refuses NOT_HELD, as for a lease that had run out.
func (l *Lock) Revoke(owner, key string) []Effect {
	effs, _ := l.settleExpired()
	picked := func(h *Holder) bool { return owner == "" || h.Owner == owner }
	effs = append(effs, l.loseLapsed(func(h *Holder) bool { return picked(h) && !l.sessionLive(h.Session, &h.ExpiresAt) })...)
	revoked := l.endLeases(Revoke, Revoked, "", picked)
	effs = append(append(effs, revoked...), l.HandOff()...)
	switch {
	case len(revoked) > 0:
		return effs
	case owner != "":
		return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("%q does not hold lock %q", owner, key)))
	}
	return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("lock %q is not held", key)))
}
