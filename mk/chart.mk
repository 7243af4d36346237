# The Helm chart (charts/voik) and the OCI image (image/).
#
# Tools are pinned in tools/go.mod (`go get -tool`) and tools/kube, and built
# once into the git-ignored .bin/; a target that finds them up to date does
# nothing. Every test here runs on this machine, from the Go module proxy
# alone: helm renders and lints locally, the rendered manifests are decoded
# strictly into k8s.io/api types by the Go tests in charts/test (their own
# module, so the main module gains no Kubernetes dependencies) and created
# through a real kube-apiserver on etcd, both on 127.0.0.1 and built here
# from source, and the image is assembled from the binary with
# go-containerregistry, no daemon.

BIN_DIR       := $(CURDIR)/.bin
HELM          := $(BIN_DIR)/helm
# etcd's version is tools/kube/go.mod's go.etcd.io/etcd/server/v3. The
# kube-apiserver's is this one: its source comes from the module proxy's
# k8s.io/kubernetes (tools/kube/build-apiserver.sh). The binaries are named
# by version, so a bump builds the new one.
ETCD_VERSION  := $(shell sed -n 's/^[[:space:]]*\(require[[:space:]]*\)\{0,1\}go\.etcd\.io\/etcd\/server\/v3[[:space:]]*\(v[^[:space:]]*\).*/\2/p' tools/kube/go.mod)
KUBE_VERSION  := v1.34.4
ETCD          := $(BIN_DIR)/etcd-$(ETCD_VERSION)
KUBE_APISERVER := $(BIN_DIR)/kube-apiserver-$(KUBE_VERSION)
CHART         := charts/voik
# The OCI image layout `make image` writes (git-ignored), and its name.
IMAGE_DIR     ?= $(CURDIR)/.build/image
IMAGE_REPO    ?= ghcr.io/voik/voik
# The image tag is the chart's appVersion, so the chart's default image is this one.
IMAGE_TAG     ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' $(CHART)/Chart.yaml)
# linux/amd64,linux/arm64 builds a multi-platform index (one Go build each).
IMAGE_PLATFORMS ?= linux/$(shell $(GO) env GOARCH)
IMAGE_REF     ?=

TEST_EXTRA    += chart-test image-test

.PHONY: tools chart-lint chart-test image image-test image-push

tools: $(HELM) $(ETCD) $(KUBE_APISERVER) ## build the pinned tools (helm, etcd, kube-apiserver) into .bin/; nothing to do when up to date

# Helm's own Makefile sets the Kubernetes version it assumes offline (helm
# template, helm lint: .Capabilities.KubeVersion and the deprecation checks)
# from the client-go it is built with, v0.X -> 1.X; without these flags it
# believes it talks to Kubernetes 1.20.
$(HELM): tools/go.mod tools/go.sum
	@mkdir -p $(BIN_DIR)
	cd tools && \
	helm_version=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	client_go=$$($(GO) list -m -f '{{.Version}}' k8s.io/client-go) && \
	v=$${client_go#v} && major=$$(( $${v%%.*} + 1 )) && rest=$${v#*.} && minor=$${rest%%.*} && \
	echo "building helm $$helm_version for Kubernetes $$major.$$minor (a few minutes, once)" && \
	CGO_ENABLED=0 $(GO) build -trimpath -o $(HELM) -ldflags "-s -w \
		-X helm.sh/helm/v3/internal/version.version=$$helm_version \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$$major \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$minor \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$$major \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$minor" \
		helm.sh/helm/v3/cmd/helm
	@touch $(HELM)

# etcd's own main module has replace directives, so `go install` refuses
# it: a wrapper in tools/kube calls its server. About 1.5 minutes cold.
$(ETCD): tools/kube/go.mod tools/kube/go.sum tools/kube/etcd/main.go
	@mkdir -p $(BIN_DIR)
	@test -n "$(ETCD_VERSION)" || { echo "no go.etcd.io/etcd/server/v3 version in tools/kube/go.mod" >&2; exit 1; }
	@echo "building etcd $(ETCD_VERSION) (about a minute and a half, once)"
	cd tools/kube && CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w" -o $(ETCD).tmp ./etcd
	@mv $(ETCD).tmp $(ETCD)

# Five minutes and 2 GB of build cache cold (docs/kubernetes.md); seconds warm.
$(KUBE_APISERVER): tools/kube/build-apiserver.sh
	GO=$(GO) sh tools/kube/build-apiserver.sh $(KUBE_VERSION) $(KUBE_APISERVER)

chart-lint: $(HELM) ## helm lint --strict with the default values (and the one required, config.subjects) and each charts/voik/ci/*-values.yaml
	$(HELM) lint --strict $(CHART) --set config.subjects='orders.>'
	@for f in $(CHART)/ci/*-values.yaml; do \
		echo "helm lint --strict -f $$f"; \
		$(HELM) lint --strict --quiet $(CHART) -f $$f || exit 1; \
	done

chart-test: chart-lint $(ETCD) $(KUBE_APISERVER) ## chart lint, then the chart tests (strict decoding, schema fixtures, sidecar values, PromQL, a real kube-apiserver)
	cd charts/test && $(GO) vet ./... && \
		HELM=$(HELM) ETCD=$(ETCD) KUBE_APISERVER=$(KUBE_APISERVER) $(GO) test -count=1 -timeout 15m ./...

image: ## build the voik OCI image into IMAGE_DIR (an OCI layout; IMAGE_PLATFORMS for more than this one)
	cd image && $(GO) run . -src .. -out $(IMAGE_DIR) -repo $(IMAGE_REPO) -tag $(IMAGE_TAG) \
		-version $(VERSION) -platforms $(IMAGE_PLATFORMS)

image-test: image ## build the image, then check its config (entrypoint, user, labels, ports, volumes) and files
	cd image && $(GO) vet ./... && VOIK_IMAGE_LAYOUT=$(IMAGE_DIR) $(GO) test -count=1 ./...

image-push: ## push the image in IMAGE_DIR to IMAGE_REF (default IMAGE_REPO:IMAGE_TAG), with ~/.docker/config.json credentials
	cd image && $(GO) run . -push -out $(IMAGE_DIR) -ref $(or $(IMAGE_REF),$(IMAGE_REPO):$(IMAGE_TAG))
