# Interop with clients in other languages: e2e/interop_node_test.go drives voik
# from Node with nats.js and @msgpack/msgpack (interop/node). Their exact
# versions are pinned in interop/node/package-lock.json; `npm ci` installs them
# into the git-ignored interop/node/node_modules. npm writes
# node_modules/.package-lock.json on every install, so that file is the
# target: nothing is done while it is newer than package.json and the lock.

NPM          ?= npm
INTEROP_NODE := interop/node

.PHONY: interop-deps interop-test

interop-deps: $(INTEROP_NODE)/node_modules/.package-lock.json ## install the Node interop test's npm packages (npm ci; once)

$(INTEROP_NODE)/node_modules/.package-lock.json: $(INTEROP_NODE)/package.json $(INTEROP_NODE)/package-lock.json
	cd $(INTEROP_NODE) && $(NPM) ci --no-audit --no-fund
	@touch $@

# The Go tests of `make test` include the Node one: install before them.
test: interop-deps

interop-test: interop-deps ## only the Node interop tests
	$(GO) test -race -count=1 -run Node ./e2e
