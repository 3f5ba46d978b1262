# sandbox-shim. `make test` is what CI runs (.ci/run); it installs everything it needs.
include versions.mk

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
# deps must finish before build/image start, even under -j.
.NOTPARALLEL:

GO ?= go
OUT := _output
OUTBIN := $(CURDIR)/$(OUT)/bin
SHIM := bin/containerd-shim-sandbox-v1
# The workspace's pid 1, installed next to the shim (static: it runs in any rootfs).
REAPER := bin/sandbox-reaper
# The OCI hook that reserves ports under plain runc or crun.
HOOK := bin/sandbox-hook
# The sandbox API's command line.
SANDBOXCTL := bin/sandboxctl

DEB_PACKAGES := busybox-static libseccomp-dev pkg-config gcc libc6-dev iproute2 curl jq containernetworking-plugins
CONTAINERD_BINS := $(addprefix $(OUT)/bin/,containerd ctr containerd-shim-runc-v2)
RUNC_BIN := $(OUT)/bin/runc
CRICTL_BIN := $(OUT)/bin/crictl

# Static helper programs put into the test image at /usr/local/bin/<name>:
# Go package dirs relative to the repo root (e.g. test/cmd/portgrab), built
# with CGO_ENABLED=0.
IMAGE_CMDS ?= test/attacker test/agent cmd/sandboxctl
# Further host files for the image, as SRC:DST: the demo control plane's page.
IMAGE_ADD ?= test/image/www/index.html:/www/index.html
IMAGE_CMD_BINS := $(foreach c,$(IMAGE_CMDS),$(OUT)/imagebin/$(notdir $(c)))
IMAGE_ADDS := $(foreach b,$(IMAGE_CMD_BINS),$(b):/usr/local/bin/$(notdir $(b))) $(IMAGE_ADD)

.PHONY: all deps apt build image test vet fmt-check unit integration bench demo generate k8s-bins k8s-test critest clean FORCE
all: build

## deps: Debian packages, then containerd, ctr, the runc shim, runc and crictl in _output/bin.
deps: apt $(CONTAINERD_BINS) $(RUNC_BIN) $(CRICTL_BIN)

apt:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}\n' "$$p" 2>/dev/null | grep -q '^install ok installed$$' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y $(DEB_PACKAGES); \
	fi

# $(call stamp,FILE,VALUE) rewrites FILE only when VALUE changed, so what
# depends on it is rebuilt only when missing or made from another value.
stamp = @mkdir -p $(dir $1); [ "$$(cat $1 2>/dev/null)" = '$2' ] || echo '$2' > $1

$(OUT)/containerd.version: FORCE
	$(call stamp,$@,$(CONTAINERD_VERSION))

$(OUT)/runc.version: FORCE
	$(call stamp,$@,$(RUNC_VERSION))
$(OUT)/crictl.version: FORCE
	$(call stamp,$@,$(CRI_TOOLS_VERSION))

$(CONTAINERD_BINS) &: $(OUT)/containerd.version
	GOBIN=$(OUTBIN) $(GO) install $(foreach c,containerd ctr containerd-shim-runc-v2,github.com/containerd/containerd/v2/cmd/$(c)@$(CONTAINERD_VERSION))
	@touch $(CONTAINERD_BINS)

$(CRICTL_BIN): $(OUT)/crictl.version
	GOBIN=$(OUTBIN) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRI_TOOLS_VERSION)
	@touch $@
$(RUNC_BIN): $(OUT)/runc.version
	GOBIN=$(OUTBIN) $(GO) install -tags seccomp github.com/opencontainers/runc@$(RUNC_VERSION)
	@touch $@

## build: the shim, its reaper, the OCI hook and sandboxctl, and every package compiles.
build: $(REAPER)
	$(GO) build -tags seccomp -o $(SHIM) ./cmd/sandbox-shim
	$(GO) build -o $(HOOK) ./hooks
	$(GO) build -o $(SANDBOXCTL) ./cmd/sandboxctl
	$(GO) build -tags seccomp ./...

$(REAPER): libexec/reaper/reaper.c
	@mkdir -p $(@D)
	$(CC) -static -O2 -Wall -Werror -o $@ $<

## image: the test image and the CRI tests' pause image as OCI layout tars, rebuilt when their inputs change.
image: $(OUT)/image.tar $(OUT)/pause.tar

# Always built (go's cache makes it cheap) but replaced only when the bytes
# differ, so the image is rebuilt only when a helper really changed.
$(OUT)/imagebin/%: FORCE
	@mkdir -p $(@D)
	CGO_ENABLED=0 $(GO) build -o $@.tmp ./$(filter %/$*,$(IMAGE_CMDS))
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

IMAGE_ARGS := -name $(TEST_IMAGE) $(addprefix -add ,$(IMAGE_ADDS))

# Records the generator's arguments, so adding or dropping a file rebuilds.
$(OUT)/image.args: FORCE
	$(call stamp,$@,$(IMAGE_ARGS))

$(OUT)/image.tar: $(wildcard test/image/*.go) $(OUT)/image.args $(wildcard /bin/busybox) $(IMAGE_CMD_BINS) \
		$(foreach a,$(IMAGE_ADD),$(firstword $(subst :, ,$(a))))
	$(GO) run ./test/image -o $@ $(IMAGE_ARGS)

$(OUT)/imagebin/pause: test/image/pause/pause.c
	@mkdir -p $(@D)
	$(CC) -static -O2 -Wall -Werror -o $@ $<
$(OUT)/pause.args: FORCE
	$(call stamp,$@,$(PAUSE_IMAGE))
$(OUT)/pause.tar: $(wildcard test/image/*.go) $(OUT)/pause.args $(OUT)/imagebin/pause
	$(GO) run ./test/image -o $@ -name $(PAUSE_IMAGE) -entrypoint /pause -add $(OUT)/imagebin/pause:/pause
## test: everything CI checks.
test: deps build image vet fmt-check unit integration

vet:
	$(GO) vet -tags seccomp ./...

fmt-check:
	@# Same files as ./...: skip dirs go ignores (., _ prefixes) and testdata.
	@bad=$$(gofmt -l $$(find . -name '*.go' -not -path '*/[._]?*/*' -not -path '*/testdata/*')); \
	if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi

UNIT_DIRS := $(wildcard spec internal hooks client cmd)
unit:
	$(if $(UNIT_DIRS),$(GO) test -tags seccomp $(addprefix ./,$(addsuffix /...,$(UNIT_DIRS))),@echo "no unit test dirs")

# One package at a time: the attack suite's fork bombs and memory hogs would
# skew the timing of everything running beside them.
integration:
	$(GO) test -tags seccomp -count=1 -p 1 -timeout 25m -v ./test/...

bench: deps build image
	$(GO) run -tags seccomp ./test/bench $(BENCH_ARGS)

demo: deps build image
	$(GO) run ./test/demo $(DEMO_ARGS)

## k8s-bins: kube-apiserver, kubelet, kubectl and etcd in _output/k8s, built from the
## module proxy at the versions in versions.mk (about 6 minutes and 3 GB of Go build
## cache the first time).
K8S_DIR := $(OUT)/k8s
K8S_BINS := $(addprefix $(K8S_DIR)/,kube-apiserver kubelet kubectl etcd)
K8S_MINOR := $(word 2,$(subst ., ,$(KUBERNETES_VERSION)))
K8S_LDFLAGS := $(foreach p,k8s.io/component-base/version k8s.io/client-go/pkg/version,\
  -X $(p).gitVersion=$(KUBERNETES_VERSION) -X $(p).gitMajor=1 -X $(p).gitMinor=$(K8S_MINOR) -X $(p).gitTreeState=clean)
$(OUT)/k8s.version: FORCE
	$(call stamp,$@,$(KUBERNETES_VERSION) $(ETCD_VERSION))
$(K8S_BINS) &: $(OUT)/k8s.version test/k8s/build/go.mod test/k8s/build/go.sum
	@grep -q 'k8s.io/kubernetes $(KUBERNETES_VERSION)$$' test/k8s/build/go.mod && grep -q 'go.etcd.io/etcd/server/v3 $(ETCD_VERSION)$$' test/k8s/build/go.mod \
	  || { echo "test/k8s/build/go.mod does not pin KUBERNETES_VERSION $(KUBERNETES_VERSION) and ETCD_VERSION $(ETCD_VERSION) of versions.mk"; exit 1; }
	@mkdir -p $(K8S_DIR)
	cd test/k8s/build && CGO_ENABLED=0 $(GO) build -ldflags '$(K8S_LDFLAGS)' -o $(CURDIR)/$(K8S_DIR)/ \
	  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3
	mv $(K8S_DIR)/server $(K8S_DIR)/etcd
	@touch $(K8S_BINS)
k8s-bins: $(K8S_BINS)
## k8s-test: the shim under a real kubelet (test/k8s): a RuntimeClass, a pod, kubectl exec
## with and without a terminal, logs, probes, the guarantees inside the pod.
k8s-test: deps build image k8s-bins
	SST_K8S_TEST=1 $(GO) test -count=1 -v -timeout 15m ./test/k8s/...
## critest: the CRI validation suite (critest from sigs.k8s.io/cri-tools at CRI_TOOLS_VERSION)
## against the sandbox and the runc handlers of one containerd, with stand-in images from a
## local registry; results side by side in _output/critest-results.txt.
CRITEST_BIN := $(OUT)/bin/critest
# critest is a test binary: built in a copy of the module, with its own go.sum.
$(CRITEST_BIN): $(OUT)/crictl.version
	@src=$$($(GO) mod download -json sigs.k8s.io/cri-tools@$(CRI_TOOLS_VERSION) | jq -r .Dir); \
	rm -rf $(OUT)/cri-tools; cp -r "$$src" $(OUT)/cri-tools; chmod -R u+w $(OUT)/cri-tools
	cd $(OUT)/cri-tools && CGO_ENABLED=0 $(GO) test -c -o $(CURDIR)/$@ ./cmd/critest
	rm -rf $(OUT)/cri-tools
$(OUT)/imagebin/nnp: test/critest/nnp/nnp.c
	@mkdir -p $(@D)
	$(CC) -static -O2 -Wall -Werror -o $@ $<
critest: deps build image $(CRITEST_BIN) $(OUT)/imagebin/nnp
	SST_CRITEST=1 $(GO) test -tags seccomp -count=1 -v -timeout 85m ./test/critest/...
## generate: the API's Go code from api/sandbox/v1/sandbox.proto (protoc from
## Debian, the plugins at the versions in versions.mk).
PROTO := api/sandbox/v1/sandbox.proto
generate:
	@command -v protoc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler
	GOBIN=$(OUTBIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(OUTBIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(PROTOC_GEN_CONNECT_GO_VERSION)
	PATH=$(OUTBIN):$$PATH protoc -I api -I /usr/include \
	  --go_out=. --go_opt=module=github.com/sandbox-shim/sandbox-shim \
	  --connect-go_out=. --connect-go_opt=module=github.com/sandbox-shim/sandbox-shim $(PROTO)

clean:
	rm -rf bin $(OUT)

FORCE:
