# voik — build, test and measure. `make help` lists the targets.
GO        ?= go
GOFLAGS   ?=
PKGS      := ./...
# Crash kills run inside `make test`; `make crash` runs many more.
CRASH_KILLS ?= 200

.PHONY: help build test test-short race bench crash fuzz format lint

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## compile every package
	$(GO) build $(GOFLAGS) $(PKGS)

test: ## vet, then every test with the race detector (what CI runs)
	$(GO) vet $(PKGS)
	$(GO) test $(GOFLAGS) -race -count=1 -timeout 20m $(PKGS)

test-short: ## quick tests without the race detector
	$(GO) test $(GOFLAGS) -short -count=1 $(PKGS)

bench: ## storage benchmarks beside their plain-file reference
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./logstore | tee /dev/null
	$(GO) test -run '^$$' -bench . -benchmem ./logstore

crash: ## long crash soak: SIGKILL a writer CRASH_KILLS times and check recovery
	$(GO) test -count=1 -run 'TestCrash' -timeout 60m ./logstore -crash.kills=$(CRASH_KILLS)

fuzz: ## run each fuzz target for FUZZTIME (default 30s)
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $${FUZZTIME:-30s} ./logstore
	$(GO) test -run '^$$' -fuzz '^FuzzRecoverSegment$$' -fuzztime $${FUZZTIME:-30s} ./logstore

format: ## gofmt every file
	gofmt -w $$(git ls-files '*.go')

lint: ## gofmt check and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet $(PKGS)
