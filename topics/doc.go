// Package topics is lockworker's wire contract: topic names, the Command and
// Event types, their JSON encoding, validation of untrusted commands, and the
// record headers events carry. It does no I/O, so producers, the worker and the
// client SDK all share one definition of what goes over Kafka.
//
// The contract itself is docs/design.md ("Topics", "Commands", "Events");
// field names and limits here follow it exactly.
//
// # Exported names
//
// Everything here is the wire contract, usable by any Go producer or
// consumer, except the outbox table's storage format, for this module's
// handlers, worker and relay only, which may change with any release:
// CompactEvent, ExpandEvent, CompactLockState and ExpandLockState (a
// stored value), EncodeHeaders, DecodeHeaders, EncodeEventHeaders and
// EncodeLockStateHeaders (a stored headers column) and DecodeOutboxRow
// (the record a row holds). EventHeaders and LockStateHeaders, the
// headers the records carry on Kafka, are contract.
package topics
