// Package topics is lockworker's wire contract: topic names, the Command and
// Event types, their JSON encoding, validation of untrusted commands, and the
// record headers events carry. It does no I/O, so producers, the worker and the
// client SDK all share one definition of what goes over Kafka.
//
// The contract itself is docs/design.md ("Topics", "Commands", "Events");
// field names and limits here follow it exactly.
package topics
