package rules

import "slices"

// Reasons of Lose and Drop (the contract's event reason).
const (
	ReasonSessionClosed  = "session_closed"
	ReasonSessionExpired = "session_expired"
)

// EndSessions ends what the sessions ids have on the lock, for reason:
// their waits first (waits, which the caller loads by session: Drop, so
// that the hand-off that follows grants none of them), every lease past
// its expiry (as any command settles them), then their leases (Lose, in
// token order), and only then does the lock go to the next waiters, once:
// a hand-off before their leases end would grant a place that the
// lock-delay of an expired session's lease, from the session's expiry,
// should have kept. Ending sessions
// together on one lock is what keeps one's end from handing the lock to
// another's wait: a scheduler ends the sessions that fall due together,
// and a session of an owner may wait where another session holds.
func (l *Lock) EndSessions(ids []string, waits []Waiter, reason string) []Effect {
	var effs []Effect
	for _, w := range waits {
		l.withdraw(w)
		effs = append(effs, Effect{Kind: Drop, Waiter: w, Reason: reason, Info: l.Info()})
	}
	settled, _ := l.settleExpired()
	effs = append(effs, settled...)
	status := Expired
	if reason == ReasonSessionClosed {
		status = Released
	}
	// A closed session ends its leases as their holder's release; an
	// expired one starts their lock-delays.
	effs = append(effs, l.endLeases(Lose, status, reason, func(h *Holder) bool { return slices.Contains(ids, h.Session) })...)
	return append(effs, l.HandOff()...)
}
