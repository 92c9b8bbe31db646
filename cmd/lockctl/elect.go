package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// electFlags is `lockctl elect`: campaign in an election and run a command
// while leader (client.Election: the election is the exclusive lock of its
// name).
func (c *cli) electFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	name := fs.String("name", "", "election name (required): the lock of that name in --namespace")
	value := fs.String("value", "", "the leader's value, shown to anyone asking who leads (its lock's owner_metadata)")
	owner := fs.String("owner", "", "owner id (default: <requester>-<random>). An owner that leads already resumes its\n"+
		"leadership at once (same token, keeping that lease's lock-delay whatever --lock-delay and\n"+
		"--grace say now), even while the process leading lives on: never give one id to two live\n"+
		"processes"+resumeHelp)
	var lease seconds
	fs.Var(&lease, "lease", "the leader's lease `duration`, renewed every third of it while COMMAND runs: a leader that dies\n"+
		"is replaced once its lease has run out and --lock-delay has passed (default: the worker's, 30s)")
	var lockDelay seconds
	addLockDelayFlag(fs, &lockDelay, graceLockDelay)
	grace := addGraceFlag(fs)
	usageWithEnv(fs, "  LOCKCTL_ELECTION_VALUE  the leader's value (--value)\n")
	return func(ctx context.Context, args []string) error {
		outliveClosedOutput()
		if err := errors.Join(requireFlag("name", *name), positive("lease", lease), checkGrace(grace)); err != nil {
			return err
		}
		if len(args) == 0 {
			return usageError{"no COMMAND given: lockctl elect --name NAME -- COMMAND [ARGS...]"}
		}
		c.defaultLockDelay(&lockDelay, grace)
		// Campaign would refuse it only once connected (exit 3 without a
		// broker, not 2). Both bounds: as sent (Go writes U+2028 as 6
		// bytes, jsonb as 3) and as stored.
		md := client.CampaignMetadata(*value)
		if n := max(len(md), topics.MetadataBytes(md)); n > topics.MaxOwnerMetadataBytes {
			return usageError{fmt.Sprintf("--value is %d bytes (%d as owner_metadata), over %d", len(*value), n, topics.MaxOwnerMetadataBytes)}
		}
		if err := c.precheck(topics.Command{Operation: topics.OpAcquire, LockName: *name, OwnerID: *owner,
			LeaseDuration: lease.d.Seconds(), LockDelay: lockDelay.d.Seconds()}); err != nil {
			return err
		}
		if err := c.findCommand(args[0]); err != nil {
			return err
		}
		opts := []client.AcquireOption{client.WithLease(lease.d), client.WithLockDelay(lockDelay.d), client.OnQueued(func(p int) {
			if !c.json {
				fmt.Fprintf(c.stderr, "lockctl: campaigning in %s, number %d in line\n", topics.LockKey(c.namespace, *name), p)
			}
		})}
		if *owner != "" {
			opts = append(opts, client.WithOwner(*owner))
		}
		const interrupted = "interrupted before winning the election"
		wait, stopQuit := quitCancels(ctx)
		defer stopQuit()
		cl, err := c.holderClient(wait, interrupted)
		if err != nil {
			return err
		}
		defer cl.Close()
		l, err := client.NewElection(cl, *name).Campaign(wait, *value, opts...)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return errors.New(interrupted)
			}
			return c.refused(err)
		}
		c.printEvent(l.Granted(), func(topics.Event) string {
			return fmt.Sprintf("lockctl: leader of %s as %s (token %d, value %q); running %s",
				topics.LockKey(l.Namespace, l.Name), safe(l.Owner), l.Token, l.Value, strings.Join(args, " "))
		})
		// Resigning is releasing the lease: runHolding does it when the
		// command ends.
		return c.runHolding(ctx, l.Lease, grace.d, lockDelay.d, args, "LOCKCTL_ELECTION_VALUE="+l.Value)
	}
}
