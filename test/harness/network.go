package harness

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// SandboxNetwork is a network namespace for a sandbox, as CRI hands one to
// a runtime by path, with a veth to a peer namespace standing for the
// network outside: the sandbox gets a non-loopback address, and tests run
// servers (a TCP echo, a DNS resolver) in the peer. Both ends of the veth
// are made inside the namespaces, so the host's network is never touched.
type SandboxNetwork struct {
	// Name and PeerName are the namespaces' names under /run/netns.
	Name, PeerName string
	// SandboxIPv4 and SandboxIPv6 are the sandbox's own addresses; PeerIPv4
	// and PeerIPv6 the peer's.
	SandboxIPv4, PeerIPv4, SandboxIPv6, PeerIPv6 string
}

var networkSeq atomic.Int64

// NewSandboxNetwork makes the two namespaces and the veth between them.
func NewSandboxNetwork() (_ *SandboxNetwork, retErr error) {
	k := networkSeq.Add(1)
	n := &SandboxNetwork{
		Name:        fmt.Sprintf("sst-%d-%d", os.Getpid(), k),
		PeerName:    fmt.Sprintf("sst-%d-%d-peer", os.Getpid(), k),
		SandboxIPv4: fmt.Sprintf("10.211.%d.2", k%250),
		PeerIPv4:    fmt.Sprintf("10.211.%d.1", k%250),
		SandboxIPv6: fmt.Sprintf("fd00:211:%x::2", k),
		PeerIPv6:    fmt.Sprintf("fd00:211:%x::1", k),
	}
	defer func() {
		if retErr != nil {
			_ = n.Close()
		}
	}()
	steps := [][]string{
		{"netns", "add", n.Name},
		{"netns", "add", n.PeerName},
		{"-n", n.Name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", n.PeerName},
		{"-n", n.Name, "link", "set", "lo", "up"},
		{"-n", n.PeerName, "link", "set", "lo", "up"},
		{"-n", n.Name, "addr", "add", n.SandboxIPv4 + "/24", "dev", "eth0"},
		{"-n", n.PeerName, "addr", "add", n.PeerIPv4 + "/24", "dev", "eth0"},
		{"-n", n.Name, "addr", "add", n.SandboxIPv6 + "/64", "dev", "eth0", "nodad"},
		{"-n", n.PeerName, "addr", "add", n.PeerIPv6 + "/64", "dev", "eth0", "nodad"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
		{"-n", n.PeerName, "link", "set", "eth0", "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, out)
		}
	}
	return n, nil
}

// Path is the sandbox namespace's path, for the bundle's linux.namespaces.
func (n *SandboxNetwork) Path() string { return "/run/netns/" + n.Name }

// Close deletes both namespaces (and so the veth).
func (n *SandboxNetwork) Close() error {
	var errs []string
	for _, name := range []string{n.Name, n.PeerName} {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			continue
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Sprintf("ip netns del %s: %v: %s", name, err, out))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// InPeer runs f on a thread in the peer namespace: sockets f makes live
// there after it returns.
func (n *SandboxNetwork) InPeer(f func() error) error { return inNetns("/run/netns/"+n.PeerName, f) }

// InNetns runs f on a thread in the network namespace at path.
func InNetns(path string, f func() error) error { return inNetns(path, f) }

func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		err = f()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		errc <- err
	}()
	return <-errc
}
