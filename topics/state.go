package topics

import (
	"encoding/json"
	"fmt"
)

// MaxStateHolders bounds LockState.Holders: a record per change that
// listed every reader of a widely shared lock would cost each change in
// proportion to the readers (query lists up to MaxHoldersShown).
const MaxStateHolders = 16

// LockState is the value of a lock's record on the lock state topic
// (Names.State): the whole lock after one committed change, keyed by
// LockKey. A tombstone (no value) follows the cleanup that deletes the
// lock; its next change starts again at revision 1.
type LockState struct {
	V         int    `json:"v"`
	Namespace string `json:"namespace,omitempty"`
	LockName  string `json:"lock_name"`
	// Revision counts the lock's changes: every grant, queue, withdrawal,
	// release, extension, expiry and timed-out wait adds one, in commit
	// order. lock_info of the events a change caused carries the same
	// revision, so a consumer of several topics orders a lock's events by
	// it.
	Revision int64 `json:"revision"`
	// Status is acquired while anyone holds the lock, else how the last
	// lease ended (released, expired, revoked), or free.
	Status string `json:"status"`
	Limit  int    `json:"limit"`
	// HolderCount counts the leases; Holders lists them in grant order
	// (the first MaxStateHolders).
	HolderCount int      `json:"holder_count"`
	Holders     []Holder `json:"holders"`
	// WaiterCount counts the queued acquires.
	WaiterCount      int   `json:"waiter_count"`
	AcquisitionCount int64 `json:"acquisition_count"`
	// Operation is what made the change: a command's operation, or
	// "expire" for the expiry scheduler's, or "first_state" for a lock's first
	// record after the upgrade to revisions (migration 009), or "republish"
	// for a state published again, unchanged but for ChangedAt, by a worker
	// that found at its start that the topic's partition count or ID changed
	// (migration 016).
	Operation string `json:"operation"`
	// ChangedAt is the database's time of the change.
	ChangedAt Time `json:"changed_at"`
	// DelayUntil is the end of the lock's lock-delay, while it is in one:
	// it grants nothing before then.
	DelayUntil *Time `json:"delay_until,omitempty"`
}

// Encode returns the record value of s.
func (s LockState) Encode() ([]byte, error) {
	s.V = Version
	return Marshal(s)
}

// DecodeLockState parses a lock state record's value.
func DecodeLockState(b []byte) (LockState, error) {
	var s LockState
	err := json.Unmarshal(b, &s)
	if err != nil {
		// A later worker's record may have changed a field's type: its
		// version is told, if it reads.
		var head struct {
			V int `json:"v"`
		}
		if json.Unmarshal(b, &head) == nil {
			s.V = head.V
		}
	}
	switch {
	case s.V > Version:
		// A later worker's, which may mean any field otherwise.
		return LockState{}, fmt.Errorf("decoding lock state: v %d, and this client reads v %d: upgrade it", s.V, Version)
	case err != nil:
		return LockState{}, fmt.Errorf("decoding lock state: %w", err)
	case s.LockName == "":
		return LockState{}, fmt.Errorf("decoding lock state: no lock_name")
	}
	return s, nil
}
