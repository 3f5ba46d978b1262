package spec

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/sandbox-shim/sandbox-shim/api"
)

// criContainerType is the annotation CRI puts on a pod's sandbox (pause)
// container and on its app containers.
const criContainerType = "io.kubernetes.cri.container-type"

// parseReservedPorts reads io.sandbox.reserved-ports (and the user-connect
// switch) into st. A pod's sandbox (pause) container reserves nothing: its
// network namespace is the pod's, and the app container that is the
// control plane reserves the ports there.
func parseReservedPorts(ann map[string]string, st *Settings) error {
	v, ok := ann[api.AnnotationReservedPorts]
	if !ok {
		v = api.DefaultReservedPorts
	}
	if ann[criContainerType] == "sandbox" {
		v = ""
	}
	for _, field := range strings.Split(v, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			if strings.TrimSpace(v) != "" {
				return &AnnotationError{api.AnnotationReservedPorts, v, "empty entry (want comma-separated TCP ports 1-65535, e.g. 8080,8888; empty reserves none)"}
			}
			continue
		}
		n, err := strconv.ParseUint(field, 10, 16)
		if err != nil || n == 0 {
			return &AnnotationError{api.AnnotationReservedPorts, v, fmt.Sprintf("%q is not a TCP port 1-65535", field)}
		}
		if slices.Contains(st.ReservedPorts, uint16(n)) {
			return &AnnotationError{api.AnnotationReservedPorts, v, fmt.Sprintf("port %d is listed twice", n)}
		}
		st.ReservedPorts = append(st.ReservedPorts, uint16(n))
	}
	switch v := ann[api.AnnotationReservedPortsUserConnect]; strings.TrimSpace(v) {
	case "", "deny":
	case "allow":
		st.UserConnect = true
	default:
		return &AnnotationError{api.AnnotationReservedPortsUserConnect, v, `want "allow" or "deny"`}
	}
	return nil
}

// NetworkNamespace is how the bundle places the sandbox's network.
type NetworkNamespace struct {
	// Host is true when the bundle asks for no network namespace.
	Host bool
	// Path is the namespace to join; empty (and not Host) asks for a new one.
	Path string
}

// BundleNetwork reads the bundle's network namespace.
func BundleNetwork(s *specs.Spec) NetworkNamespace {
	if s.Linux != nil {
		for _, ns := range s.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				return NetworkNamespace{Path: ns.Path}
			}
		}
	}
	return NetworkNamespace{Host: true}
}

// WithNetworkPath is s with its network namespace joined at path: the shim
// makes the namespace a bundle asks for itself, to reserve the ports in it
// before the control plane exists. s is not changed.
func WithNetworkPath(s *specs.Spec, path string) *specs.Spec {
	c := *s
	linux := *s.Linux
	linux.Namespaces = joinNamespace(s.Linux.Namespaces, specs.NetworkNamespace, path)
	c.Linux = &linux
	return &c
}

// OwnPIDNamespace tells whether the init is pid 1 of a PID namespace of its
// own, so that LISTEN_PID can name it before it exists.
func OwnPIDNamespace(s *specs.Spec) bool {
	if s.Linux == nil {
		return false
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// ListenEnv is env with systemd's socket-activation variables for the
// reserved ports, handed over as fds 3..: LISTEN_FDS, LISTEN_FDNAMES (the
// port numbers, colon-separated) and, when the init is pid 1 of its own PID
// namespace, LISTEN_PID=1. Any LISTEN_* the bundle set is replaced. No ports,
// no variables.
func ListenEnv(env []string, ports []uint16, pid1 bool) []string {
	out := slices.DeleteFunc(slices.Clone(env), func(e string) bool {
		k, _, _ := strings.Cut(e, "=")
		return k == "LISTEN_FDS" || k == "LISTEN_PID" || k == "LISTEN_FDNAMES"
	})
	if len(ports) == 0 {
		return out
	}
	names := make([]string, len(ports))
	for i, p := range ports {
		names[i] = strconv.Itoa(int(p))
	}
	out = append(out, "LISTEN_FDS="+strconv.Itoa(len(ports)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	if pid1 {
		out = append(out, "LISTEN_PID=1")
	}
	return out
}
