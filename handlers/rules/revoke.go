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
	for i := 0; i < len(l.Holders); {
		h := &l.Holders[i]
		if owner != "" && h.Owner != owner || l.sessionLive(h.Session, &h.ExpiresAt) {
			i++
			continue
		}
		effs = append(effs, l.loseLapsed(i))
	}
	n := len(effs)
	for i := 0; i < len(l.Holders); {
		if owner != "" && l.Holders[i].Owner != owner {
			i++
			continue
		}
		h := l.EndLease(i, Revoked)
		effs = append(effs, Effect{Kind: Revoke, Holder: h, Info: l.about(h, Revoked)})
	}
	revoked := len(effs) > n
	effs = append(effs, l.HandOff()...)
	switch {
	case revoked:
		return effs
	case owner != "":
		return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("%q does not hold lock %q", owner, key)))
	}
	return append(effs, l.refuse(CodeNotHeld, fmt.Sprintf("lock %q is not held", key)))
}
