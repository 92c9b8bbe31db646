# make test  runs the README's test command, with every test required
#            (LOCKWORKER_TEST_REQUIRE_ALL=1: a skip for want of a privilege
#            or setting fails), as CI (.ci/run) does.
# make test-realkafka runs internal/realkafka on Apache Kafka and PostgreSQL
#            in Docker containers (testcontainers-go, a few minutes; the first
#            run pulls the images). It needs a Docker daemon: without one it
#            skips and says why.
# make bench runs lockbench's default configuration (a few minutes on the
#            2-core machine), with the worker as a child process so its RSS
#            and CPU are its own, then the Go micro-benchmarks.
# make bench-quick is the CI-speed smoke run of every scenario.
# make bench-failover runs lockbench's failover scenario: three lockworker
#            processes on a devkafka process, SIGKILL one (10 times), SIGSTOP
#            one for 15 s and SIGCONT it (3 times), SIGTERM one (10 times),
#            roll all three (3 times), cut one off from PostgreSQL for 30 s
#            and restore it (3 times; each replica reaches PostgreSQL
#            through a proxy in lockbench), under load (~8 min: the cuts
#            add about 2).
# make bench-soak runs the soak scenario: 10 minutes of steady load against
#            the local PostgreSQL as it is; BENCH_FLAGS="--vacuum=false"
#            measures it without the worker's vacuum loop.
# make bench-builds BASE=<git revision> measures this checkout's worker
#            against the one built from BASE: lockbench's builds scenario,
#            alternating rounds of the throughput scenario, each figure as a
#            ratio (BENCH_FLAGS="--clients 16 --rounds 5", say).

GO ?= go
BIN := bin
BENCH_FLAGS ?=

.PHONY: test test-realkafka bench bench-quick bench-failover bench-soak bench-builds microbench build-bench

test:
	LOCKWORKER_TEST_REQUIRE_ALL=$${LOCKWORKER_TEST_REQUIRE_ALL:-1} $(GO) test -count=1 -timeout 30m ./...

test-realkafka:
	$(GO) test -count=1 -v -timeout 20m ./internal/realkafka/

build-bench:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/lockworker ./cmd/lockworker
	$(GO) build -o $(BIN)/lockbench ./cmd/lockbench
	$(GO) build -o $(BIN)/devkafka ./cmd/devkafka

bench: build-bench
	$(BIN)/lockbench --worker-bin $(BIN)/lockworker --json-out $(BIN)/lockbench.json $(BENCH_FLAGS)
	$(MAKE) microbench

bench-quick: build-bench
	$(BIN)/lockbench --quick --worker-bin $(BIN)/lockworker $(BENCH_FLAGS)

bench-failover: build-bench
	$(BIN)/lockbench --scenario failover --worker-bin $(BIN)/lockworker --devkafka-bin $(BIN)/devkafka \
		--failover-log $(BIN)/failover-replicas.log --json-out $(BIN)/lockbench-failover.json $(BENCH_FLAGS)

bench-soak: build-bench
	$(BIN)/lockbench --scenario soak --worker-bin $(BIN)/lockworker --json-out $(BIN)/lockbench-soak.json $(BENCH_FLAGS)

bench-builds: build-bench
	@test -n "$(BASE)" || { echo "bench-builds: set BASE to the git revision to compare with"; exit 1; }
	rm -rf $(BIN)/base-src && mkdir -p $(BIN)/base-src
	git archive $(BASE) | tar -x -C $(BIN)/base-src
	cd $(BIN)/base-src && $(GO) build -o ../lockworker-base ./cmd/lockworker
	$(BIN)/lockbench --scenario builds --baseline-bin $(BIN)/lockworker-base --worker-bin $(BIN)/lockworker \
		--broker-bin $(BIN)/devkafka --json-out $(BIN)/lockbench-builds.json $(BENCH_FLAGS)

microbench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 2s ./topics ./handlers ./outbox
