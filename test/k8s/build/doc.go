// Package build pins the Kubernetes release `make k8s-test` builds from the
// module proxy (kube-apiserver, kubelet, kubectl, etcd) in a module of its
// own, apart from the shim's dependencies. It has no code.
package build
