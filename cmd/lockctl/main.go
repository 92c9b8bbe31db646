// Command lockctl is lockworker's command line for people and scripts: take,
// release, extend, inspect and clean up locks, run a command while holding a
// lock or while leader of an election, and watch lock events live.
//
//	lockctl acquire --lock NAME [--owner ID] [--lease 30s] [--wait 0] [--metadata JSON]
//	lockctl release --lock NAME --owner ID [--token N]
//	lockctl extend  --lock NAME --owner ID [--by DURATION] [--token N]
//	lockctl query   --lock NAME
//	lockctl cleanup [--lock NAME|*] [--max-age DURATION]
//	lockctl run     --lock NAME [--wait 30s] [--lease 30s] [--grace 10s] -- COMMAND [ARGS...]
//	lockctl watch   [--lock NAME] [--from-beginning]
//	lockctl elect   --name NAME [--value V] [--lease 30s] [--grace 10s] -- COMMAND [ARGS...]
//
// Every command takes --brokers (default: KAFKA_BOOTSTRAP_SERVERS, else
// lockworker's embedded broker at 127.0.0.1:9092), --namespace, --requester,
// --timeout and --json. Kafka TLS/SASL and topic names come from the same
// environment variables lockworker reads. Durations are Go durations ("30s",
// "2m") or plain seconds ("30", "0.5"), as in the contract.
//
// Exit codes: 0 ok; 1 refused (lock held, not the owner, wait timed out);
// 2 usage or invalid input; 3 Kafka or lockworker unreachable. Once its
// command started, `run` exits with the command's exit code (128+N if a
// signal N ended it), except 4 when the lease was lost while the command ran:
// lockctl then stopped the command, and the loss takes precedence over
// whatever code the command exited with. `elect` campaigns until it is the
// leader (exit 1 if interrupted first), then runs its command as `run` does:
// 4 when the leadership was lost while the command ran.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT/SIGTERM cancels ctx: `run` then stops its command
	// and releases the lock, `watch` stops. A second one kills lockctl.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // back to the default action for the next signal
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
