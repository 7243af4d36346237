# voik — build, run, test and measure. `make help` lists the targets.
GO          ?= go
PKGS        := ./...
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# Crash kills of the storage engine inside `make test`; `make crash-store` runs CRASH_KILLS.
CRASH_KILLS ?= 200
FUZZTIME    ?= 30s

# Targets that `make test` runs after the Go tests; mk/*.mk add to it.
TEST_EXTRA  :=

.PHONY: help build build_release run test test-short bench-store crash-store fuzz install format lint docs clean

# mk/*.mk hold the targets of one part each (the harness: benchmark, crash,
# soak; the chart and the image), named here so that a missing one is an
# error; a plain `make` still lists the targets.
.DEFAULT_GOAL := help
include mk/harness.mk mk/chart.mk mk/interop.mk

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/voik
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/voik ./cmd/voik

build_release: ## static, stripped, reproducible bin/voik
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o bin/voik ./cmd/voik

run: build ## run voik with an embedded NATS server on 127.0.0.1:4222, data in ./data
	./bin/voik

test: ## vet, then every test with the race detector (what CI runs)
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 30m $(PKGS)
	@for t in $(TEST_EXTRA); do $(MAKE) --no-print-directory $$t || exit 1; done

test-short: ## quick tests, no race detector, no slow ones
	$(GO) test -short -count=1 $(PKGS)

bench-store: ## storage engine benchmarks beside their plain-file reference
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./logstore

crash-store: ## storage crash soak: SIGKILL a writer CRASH_KILLS times, check recovery after each
	$(GO) test -count=1 -run 'TestCrash' -timeout 60m ./logstore -crash.kills=$(CRASH_KILLS)

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRecord$$' -fuzztime $(FUZZTIME) ./logstore
	$(GO) test -run '^$$' -fuzz '^FuzzRecoverSegment$$' -fuzztime $(FUZZTIME) ./logstore
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeEpochs$$' -fuzztime $(FUZZTIME) ./logstore
	$(GO) test -run '^$$' -fuzz '^FuzzTruncateIntent$$' -fuzztime $(FUZZTIME) ./logstore
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequests$$' -fuzztime $(FUZZTIME) ./messages
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFetchReply$$' -fuzztime $(FUZZTIME) ./client

install: ## install voik into GOBIN (or GOPATH/bin)
	$(GO) install -ldflags '$(LDFLAGS)' ./cmd/voik

format: ## gofmt every Go file
	gofmt -w $$(git ls-files '*.go')

lint: ## fail on unformatted files, then go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

docs: ## regenerate the settings table in docs/settings.md from the code
	$(GO) test ./config -run TestSettingsTableInDocs -update

clean: ## remove build output
	rm -rf bin .build
