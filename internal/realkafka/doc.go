// Package realkafka runs lockworker on Apache Kafka instead of kfake. With
// testcontainers-go, TestRealKafka starts the broker of docker-compose.yml
// (its image, apache/kafka, in KRaft mode with the file's settings; only the
// host listener's advertised address is Docker's mapped port) and its
// PostgreSQL in containers, runs the lockworker binary on them as deployed
// (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL) and checks, in subtests:
//
//   - contract: the event-routing cases of e2e.EventRouting (a grant, the
//     LOCK_HELD rejection, queueing and withdrawal, extend, query, a release
//     granting the waiter, expiry, cleanup, dead-lettering, a repeated
//     request_id) on real topics, replies and lifecycle alike;
//   - state topic: the broker keeps the lock state topic lockworker created
//     as a compacted table (cleanup.policy=compact), a partition per
//     commands partition;
//   - sdk: client.New, Acquire, TryAcquire's ErrLockHeld, a waiter granted
//     on Release, Query, both grants read back through Client.Subscriber,
//     Watch delivering every revision once and in order, and Locks (the
//     table) ending where Watch did;
//   - lockctl: the built binary's acquire, its exit code 1 and LOCK_HELD for
//     a second owner, query and release, with `watch --lock` printing each
//     revision meanwhile and `locks` the lock's last state;
//   - failover: a second lockworker joins the group, and under load
//     (chaos.StartLoad) the first is SIGKILLed: the survivor takes its
//     partitions after the real session timeout (6 s, Apache Kafka's
//     group.min.session.timeout.ms), every command is answered, chaos.Check
//     finds no double holder, and the killed worker restarts and rejoins.
//
// It needs a Docker daemon, found as testcontainers-go finds one (DOCKER_HOST,
// the default socket, ~/.testcontainers.properties). Where none answers it
// skips and says why, so `go test ./...` passes on machines without Docker,
// CI's included; -short skips it too. Run it with
//
//	go test -count=1 -v -timeout 20m ./internal/realkafka/
//
// (`make test-realkafka`). The first run pulls the images.
//
// REALKAFKA_BROKERS (host:port,...) runs the same suite on an existing Kafka
// cluster instead of containers, e.g. the compose file's (`docker compose up
// -d kafka`, then REALKAFKA_BROKERS=localhost:29092), with PostgreSQL from
// TEST_DATABASE_URL as every other test (internal/testdb). Its topics,
// consumer group and reply-topic prefix then carry a suffix of the run's
// own, so runs on one cluster do not see each other.
package realkafka
