package main

import (
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupJoin is a kgo hook on the worker's client that tells whether the
// client has completed a join of its consumer group: until then /health
// says the replica is starting, so that one whose join Kafka refuses (the
// group or the commands topic not authorized, a session timeout out of the
// broker's bounds) is never counted ready. A completed join need not bring
// partitions: a group with more replicas than partitions leaves some
// without, and they are ready all the same.
//
// With the classic protocol, a Heartbeat answered: kgo heartbeats only in
// a group session, which it begins once JoinGroup and SyncGroup both
// succeeded (the first comes KAFKA_HEARTBEAT_INTERVAL after them). A
// JoinGroup answered is not enough: the SyncGroup that follows may still be
// refused. Under KIP-848 (KAFKA_GROUP_PROTOCOL=consumer), a member epoch
// above 0 (kgo.Client.GroupMetadata): kgo stores one only from a
// ConsumerGroupHeartbeat the coordinator accepted. JoinGroup answered means
// kgo fell back to the classic protocol, whose generation a JoinGroup
// answer sets before its SyncGroup: then only a Heartbeat counts. Once
// joined it stays so: what befalls the replica afterwards has its own
// reports (withdrawn, draining, the stall gate).
type groupJoin struct {
	cl          atomic.Pointer[kgo.Client]
	classicJoin atomic.Bool // a JoinGroup answer read
	heartbeat   atomic.Bool // a classic Heartbeat answer read
	joined      atomic.Bool
}

// OnNewClient implements kgo.HookNewClient.
func (g *groupJoin) OnNewClient(cl *kgo.Client) { g.cl.Store(cl) }

// OnBrokerRead implements kgo.HookBrokerRead. kgo calls it before it
// handles the answer, so a JoinGroup's is seen before the generation it
// carries is stored.
func (g *groupJoin) OnBrokerRead(_ kgo.BrokerMetadata, key int16, _ int, _, _ time.Duration, err error) {
	if err != nil {
		return
	}
	switch kmsg.Key(key) {
	case kmsg.JoinGroup:
		g.classicJoin.Store(true)
	case kmsg.Heartbeat:
		g.heartbeat.Store(true)
	}
}

// Joined reports whether the client has completed a join of its group.
func (g *groupJoin) Joined() bool {
	if g.joined.Load() {
		return true
	}
	cl := g.cl.Load()
	if cl == nil {
		return false
	}
	// The generation first: one a classic JoinGroup set was stored after
	// its answer was seen (OnBrokerRead), so classicJoin, read next, says
	// so.
	_, gen := cl.GroupMetadata()
	if g.heartbeat.Load() || gen > 0 && !g.classicJoin.Load() {
		g.joined.Store(true)
		return true
	}
	return false
}
