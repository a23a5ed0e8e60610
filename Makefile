# Nemesis: `make run` starts the whole stack on this machine, `make test`
# runs every test against real PostgreSQL, Redis, Envoy and kube-apiserver.

GO          ?= go
TOOLS       := $(CURDIR)/.tools/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X github.com/nemesis-ml/nemesis/internal/command.BuildVersion=$(VERSION)
CONTROLLER_GEN := $(TOOLS)/controller-gen

export NEMESIS_TOOLS_BIN := $(TOOLS)

.PHONY: all tools build generate check-generated lint check-rules test test-cluster fuzz images cluster cluster-down run bench clean

all: build

## tools: install PostgreSQL, Redis, Envoy, etcd, kube-apiserver and the generators (idempotent).
tools:
	@bash hack/tools.sh

## build: build bin/nemesis (what the image ships) and bin/nemesis-dev (it plus dev and demo-model).
build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/nemesis ./cmd/nemesis
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/nemesis-dev ./cmd/nemesis-dev

## generate: regenerate deepcopy code, the CRD, RBAC, the Envoy bootstrap ConfigMap, the PrometheusRule and the dashboards' ConfigMaps in manifests/.
generate: tools
	$(CONTROLLER_GEN) object paths=./controller/api/...
	$(CONTROLLER_GEN) crd:allowDangerousTypes=true,maxDescLen=512 paths=./controller/api/... output:crd:artifacts:config=manifests/crd
	$(CONTROLLER_GEN) rbac:roleName=nemesis paths=./xds/... paths=./controller/... paths=./console/... output:rbac:artifacts:config=manifests/rbac
	bash hack/envoy-configmap.sh
	bash hack/monitoring.sh

## check-generated: fail when generated files differ from what make generate writes.
check-generated: generate
	@if [ -n "$$(git status --porcelain -- controller/api manifests)" ]; then \
		git status --short -- controller/api manifests; \
		echo "generated files are stale: run 'make generate' and commit the result"; exit 1; fi

## lint: gofmt, go vet and staticcheck.
lint: tools
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then \
		echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(TOOLS)/staticcheck ./...

RULES := manifests/monitoring/prometheus

## check-rules: promtool checks the alert and recording rules and runs their unit tests; every alert must have one.
check-rules: tools
	$(TOOLS)/promtool check rules $(RULES)/rules.yaml
	$(TOOLS)/promtool test rules $(RULES)/rules_test.yaml
	@for alert in $$(sed -n 's/^ *- alert: //p' $(RULES)/rules.yaml | sort -u); do \
		grep -q "alertname: $$alert$$" $(RULES)/rules_test.yaml || { echo "alert $$alert has no unit test in $(RULES)/rules_test.yaml"; exit 1; }; \
		grep -q "^## $$alert$$" docs/runbooks.md || { echo "alert $$alert has no runbook in docs/runbooks.md"; exit 1; }; done

## test: everything above, then every test (with the race detector but in tests/), then tests/cluster on a real node.
test: check-generated lint check-rules images
	$(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e /sidecar/meter -e /tests$$ -e /tests/cluster)
	@# The end-to-end flows run alone and without the race detector: what they
	@# time (a wake from zero) is the built binaries' work, not the
	@# instrumentation's or another package's. Every package they drive runs
	@# its own tests with the race detector above.
	$(GO) test -count=1 -timeout 20m ./tests
	@# Alone: its tests check that a child burning one core reads as one core,
	@# which only holds while no other test package competes for the CPU.
	$(GO) test -race -count=1 -timeout 5m ./sidecar/meter
	@# manifests-dev on a real single-node cluster (hack/cluster), with the
	@# images just built: one node per machine, so alone.
	$(GO) test -count=1 -timeout 20m ./tests/cluster
	@# Every fuzz target briefly; their seed corpora already ran above.
	FUZZTIME=5s bash hack/fuzz.sh

## fuzz: run every Go fuzz target for FUZZTIME each (default 2m).
fuzz:
	FUZZTIME=$${FUZZTIME:-2m} bash hack/fuzz.sh

## images: build the images of manifests/ and the test node offline into bin/images (hack/images.sh).
images: tools
	@bash hack/images.sh

## cluster: start a single-node Kubernetes cluster here with the images loaded; Ctrl-C removes it.
cluster: images
	@bash hack/cluster/cluster.sh up

## cluster-down: remove the node of make cluster or of a test that could not (hack/cluster/cluster.sh).
cluster-down:
	@bash hack/cluster/cluster.sh down

## test-cluster: apply manifests/ on a real node and test them end to end (tests/cluster).
test-cluster: images
	$(GO) test -count=1 -timeout 30m -v ./tests/cluster

## run: start the whole stack on this machine and print where it listens.
# The venv of make tools comes first in PATH: the protocol demos run its
# Python (manifests/demo/protocols.yaml).
run: tools build
	PATH="$(CURDIR)/.tools/venv/bin:$$PATH" bin/nemesis-dev dev

## bench: run the benchmarks under bench/.
bench: tools build images
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./bench/...

clean:
	rm -rf bin .run
