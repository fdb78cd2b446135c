# The habits of the project, as targets. See README.md.
GO      ?= go
BIN     := bin/moorage
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# The embedded kubectl reports the version of the k8s.io libraries it is built from.
KUBE    := $(shell $(GO) list -m -f '{{.Version}}' k8s.io/kubectl 2>/dev/null | sed 's/^v0\./v1./')
LDFLAGS := -X github.com/moorage/moorage/internal/app.Version=$(VERSION) \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE) \
	-X k8s.io/component-base/version.gitVersion=$(KUBE) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(KUBE))) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=$(word 2,$(subst ., ,$(KUBE)))

.PHONY: build up test unit e2e bench lint verify clean

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/moorage

# up builds moorage and runs it in the foreground (Ctrl-C stops it).
up: build
	./hack/install-runtime-deps.sh
	./$(BIN) up

# test installs what the tests need, then runs every test (unit, conformance,
# crash, e2e with the real kubectl 1.27-1.33).
test:
	./hack/install-test-deps.sh
	$(GO) test -count=1 -timeout 30m ./...

unit:
	$(GO) test -count=1 -short ./...

e2e:
	./hack/install-test-deps.sh
	$(GO) test -count=1 -timeout 15m ./test/e2e/

bench:
	./bench/run.sh

lint verify:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

clean:
	rm -rf bin
