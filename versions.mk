# Every version the Makefile builds or uses. Changing one rebuilds what depends on it.
CONTAINERD_VERSION := v2.4.2
RUNC_VERSION := v1.4.3
TEST_IMAGE := docker.io/sandbox-shim/test:latest
# The API's code generators (make generate; the generated code is committed).
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_CONNECT_GO_VERSION := v1.19.1
# CRI: crictl (sigs.k8s.io/cri-tools) for the CRI tests, and the pause image they pin.
CRI_TOOLS_VERSION := v1.37.0
PAUSE_IMAGE := docker.io/sandbox-shim/pause:test
# Kubernetes for make k8s-test, built from the module proxy in test/k8s/build
# (its go.mod pins the same versions; the Makefile checks they agree).
KUBERNETES_VERSION := v1.37.2
ETCD_VERSION := v3.7.0
