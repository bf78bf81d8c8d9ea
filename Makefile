# orch build. `make` builds bin/orch with the version stamped in and upstream
# kubectl packed inside (unpacked on first `orch kubectl`).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
KUBECTL_VERSION := v1.37.2
GO      ?= go
# seccomp: libcontainer's seccomp support (libseccomp-dev to build).
# grpcnotrace: grpc (linked by CoreDNS's server) without golang.org/x/net/trace,
# whose /debug/requests pages execute html/template: any template execution
# reachable from main turns the linker's method dead-code elimination off
# (scripts/deadcode.sh, checked by `make lint`), ~20 MB of binary and ~9 MB of
# RSS in every orch process.
TAGS    := seccomp grpcnotrace
LDFLAGS := -s -w -X main.version=$(VERSION)
PKGS    := ./...

.PHONY: all build kubectl test bench lint clean e2e

all: build

build: internal/kubectl/kubectl.gz runtime/internal/initbin/orch-init.gz
	CGO_ENABLED=1 $(GO) build -trimpath -tags '$(TAGS) orch_kubectl orch_init' -ldflags '$(LDFLAGS)' -o bin/orch .

# The containers' init: a small binary that links only libcontainer, run in
# place of orch for every container start and exec (runtime/initexec.c).
INITBIN_SRC := go.mod go.sum $(wildcard runtime/internal/initbin/*.go)
bin/orch-init: $(INITBIN_SRC)
	CGO_ENABLED=1 $(GO) build -trimpath -tags '$(TAGS)' -ldflags '-s -w' -o $@ ./runtime/internal/initbin

runtime/internal/initbin/orch-init.gz: bin/orch-init
	gzip -9 -n -c $< > $@.tmp && mv $@.tmp $@

# The embedded kubectl is its own binary: importing it into orch would cost
# every orch process its package initialisation (tens of MB).
bin/kubectl: go.mod go.sum internal/kubectl/bin/main.go
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w -X k8s.io/component-base/version.gitVersion=$(KUBECTL_VERSION)' -o $@ ./internal/kubectl/bin

internal/kubectl/kubectl.gz: bin/kubectl
	gzip -9 -n -c bin/kubectl > $@.tmp && mv $@.tmp $@

kubectl: bin/kubectl

# Unit tests with the race detector; the real-kernel tests run as root and
# skip themselves otherwise.
test:
	$(GO) test -tags '$(TAGS)' -race -count=1 $(PKGS)

# The end-to-end tests (e2e/): the deck's app (TestDeck, the acceptance
# test), the cluster network (TestClusterNetwork), the node's handling of
# workloads (TestNodeWorkloads) and kubectl port-forward/cp/exec
# (TestKubectlPortForwardAndCp), on clusters of bin/orch processes in
# network namespaces. Root only. Logs of every run
# are kept under bin/e2e/. E2E_COUNT=3 runs them three times, E2E_RUN=TestDeck
# only the deck.
E2E_COUNT ?= 1
E2E_RUN   ?= .
e2e: build
	ORCH_E2E_BIN=$(CURDIR)/bin/orch ORCH_E2E_ARTIFACTS=$(CURDIR)/bin/e2e \
		$(GO) test -tags '$(TAGS)' -count=$(E2E_COUNT) -v -timeout 30m -run '$(E2E_RUN)' ./e2e/

bench:
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchtime 2s $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags '$(TAGS)' $(PKGS)
	staticcheck -tags '$(TAGS)' $(PKGS)
	TAGS='$(TAGS)' scripts/deadcode.sh
	@# orch's clients are internal/kube's: client-go's clientset, informer
	@# factory, discovery and applyconfigurations link and register every
	@# built-in API group (~15 MB of RSS in every orch process).
	@if $(GO) list -deps -tags '$(TAGS)' . | grep -E '^k8s.io/client-go/(kubernetes|informers|discovery|applyconfigurations)(/|$$)'; then \
		echo "orch links the packages above: use internal/kube (and server/apiserver/internal/ssaschema)"; exit 1; fi

clean:
	rm -rf bin internal/kubectl/kubectl.gz runtime/internal/initbin/orch-init.gz

# Static linux/arm64 binary for edge boards, cross-built with Debian's
# gcc-aarch64-linux-gnu and libseccomp-dev:arm64 (dpkg --add-architecture
# arm64), with an arm64 kubectl packed in through a build overlay (the
# amd64 internal/kubectl/kubectl.gz stays as it is).
ARM64_CC        ?= aarch64-linux-gnu-gcc
ARM64_PKGCONFIG ?= /usr/lib/aarch64-linux-gnu/pkgconfig
ARM64_TAGS      := $(TAGS) orch_kubectl orch_init osusergo netgo
ARM64_LDFLAGS   := $(LDFLAGS) -extldflags '-static'

.PHONY: arm64
arm64: bin/arm64/kubectl.gz bin/arm64/orch-init.gz
	printf '{"Replace":{"%s":"%s","%s":"%s"}}\n' "$(CURDIR)/internal/kubectl/kubectl.gz" "$(CURDIR)/bin/arm64/kubectl.gz" \
		"$(CURDIR)/runtime/internal/initbin/orch-init.gz" "$(CURDIR)/bin/arm64/orch-init.gz" > bin/arm64/overlay.json
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) PKG_CONFIG_LIBDIR=$(ARM64_PKGCONFIG) \
		$(GO) build -trimpath -tags '$(ARM64_TAGS)' -overlay bin/arm64/overlay.json -ldflags "$(ARM64_LDFLAGS)" -o bin/orch-arm64 .

bin/arm64/kubectl: go.mod go.sum internal/kubectl/bin/main.go
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '-s -w -X k8s.io/component-base/version.gitVersion=$(KUBECTL_VERSION)' -o $@ ./internal/kubectl/bin

bin/arm64/kubectl.gz: bin/arm64/kubectl
	gzip -9 -n -c $< > $@.tmp && mv $@.tmp $@

bin/arm64/orch-init: $(INITBIN_SRC)
	CGO_ENABLED=1 GOOS=linux GOARCH=arm64 CC=$(ARM64_CC) PKG_CONFIG_LIBDIR=$(ARM64_PKGCONFIG) \
		$(GO) build -trimpath -tags '$(TAGS) osusergo netgo' -ldflags "$(ARM64_LDFLAGS)" -o $@ ./runtime/internal/initbin

bin/arm64/orch-init.gz: bin/arm64/orch-init
	gzip -9 -n -c $< > $@.tmp && mv $@.tmp $@
