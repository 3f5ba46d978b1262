package sandbox

import (
	"fmt"
	"os"
)

// namespaces are the control plane's namespaces that user containers join
// (network and UTS), held open from Create to Delete: a fast-exiting init
// cannot take them away from a user container being built, and secure
// execs and port reservations need them for the sandbox's whole life.
type namespaces struct {
	network, uts *os.File
}

func openNamespaces(pid int) (*namespaces, error) {
	network, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("control plane network namespace: %w", err)
	}
	uts, err := os.Open(fmt.Sprintf("/proc/%d/ns/uts", pid))
	if err != nil {
		network.Close()
		return nil, fmt.Errorf("control plane UTS namespace: %w", err)
	}
	return &namespaces{network: network, uts: uts}, nil
}

// path names an open namespace for libcontainer, which joins by path.
func (n *namespaces) path(f *os.File) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}

func (n *namespaces) close() {
	n.network.Close()
	n.uts.Close()
}
