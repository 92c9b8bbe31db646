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
// consumer, except EncodeHeaders and DecodeHeaders: the outbox's storage
// format of headers, for the worker and relay of this module only.
package topics
