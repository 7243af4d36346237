# End-to-end harness: speed against NATS and JetStream, crash safety, soak.
# BENCH_FLAGS: e.g. -quick, or -messages 1000000,300000,40000 (see voikbench -h).
# ROUNDS: kill-and-restart rounds of `make crash`. SOAK: duration of `make soak`.
# CHAOS_ROUNDS: fault rounds of `make chaos` (make test runs five); CHAOS_SEED replays a run.
BENCH_FLAGS ?=
BENCH_JSON  ?= bin/bench.json
ROUNDS      ?= 50
SOAK        ?= 10m
CHAOS_ROUNDS ?= 50
CHAOS_SEED   ?=

CLUSTER_FLAGS ?=

.PHONY: bench bench-quick crash soak chaos cluster

bench: build ## voik vs a counting NATS subscriber and JetStream, 128B/1KiB/16KiB, and a group of three vs JetStream R3 at 1KiB (~6 min); table, and BENCH_JSON
	$(GO) run ./harness/cmd/voikbench -voik bin/voik -json $(BENCH_JSON) $(BENCH_FLAGS)

cluster: build ## a replication group on this machine, in the foreground: three clustered NATS servers (127.0.0.1:4222-4224) and three voiks (HTTP 127.0.0.1:8333-8335), data in data/cluster; Ctrl-C stops them all
	$(GO) run ./harness/cmd/voikcluster -voik bin/voik $(CLUSTER_FLAGS)

bench-quick: build ## the benchmark in about a minute
	$(GO) run ./harness/cmd/voikbench -voik bin/voik -quick -json $(BENCH_JSON) $(BENCH_FLAGS)

crash: ## SIGKILL voik ROUNDS times under acked appends; every ack must survive
	$(GO) test -count=1 -v -run '^TestCrashSoak$$' -timeout 60m ./e2e/crash -rounds=$(ROUNDS)

soak: ## SOAK of capture, fetch, long poll and replay with retention; fails if RSS, files or mappings grow
	$(GO) test -count=1 -v -run '^TestSoak$$' -timeout 0 ./e2e/soak -soak.duration=$(SOAK)

chaos: ## a group of three beside three NATS servers: CHAOS_ROUNDS of random kill -9, SIGSTOP and server stops under load, every check after each; then a real partition (network namespaces, root)
	VOIK_CHAOS_ROUNDS=$(CHAOS_ROUNDS) VOIK_CHAOS_SEED=$(CHAOS_SEED) $(GO) test -count=1 -v -run '^(TestGroupChaos|TestGroupPartitionCutsOffTheLeader)$$' -timeout 60m ./e2e
