package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/internal/netpolicy"
	"github.com/sandbox-shim/sandbox-shim/internal/reserve"
	"github.com/sandbox-shim/sandbox-shim/spec"
)

// Protections say what guards the sandbox's network, for the shim log and
// the sandbox API's info.
type Protections struct {
	// ReservedPorts are held by the shim and handed to the control plane.
	ReservedPorts []uint16
	// DualStack is false when the network namespace has no IPv6 and the
	// ports are held on 0.0.0.0 only.
	DualStack bool
	// Network is what the cgroup programs enforce on user code.
	Network netpolicy.Status
	// policy is what was applied: a reset applies it again to the user
	// cgroup its old workspace's destruction removed.
	policy netpolicy.Policy
}

// reservedNetwork is the network namespace the control plane is created
// in and the reservation made there before it.
type reservedNetwork struct {
	// bundle is the bundle spec with the namespace the shim made as a path.
	bundle *specs.Spec
	// made is that namespace, held until the init holds it; nil when the
	// bundle named one. madeUser is the user namespace made to own it,
	// for a bundle asking for a new user namespace too.
	made, madeUser *os.File
	reservation    *reserve.Reservation
}

func (n *reservedNetwork) close() {
	n.release()
	n.reservation.Close()
}

// release closes the namespaces made for the bundle, once its init holds
// them.
func (n *reservedNetwork) release() {
	for _, f := range []*os.File{n.made, n.madeUser} {
		if f != nil {
			f.Close()
		}
	}
}

// reserveNetwork makes the reservation before any code of the sandbox runs.
// A bundle that asks for a new network namespace gets one made here, joined
// by the control plane by path, because libcontainer runs OCI hooks only
// after it cloned the init: descriptors made then could never be the
// init's. A bundle that names a namespace (CRI's pod netns) gets the
// reservation there.
func reserveNetwork(s *specs.Spec, settings spec.Settings) (_ *reservedNetwork, retErr error) {
	n := &reservedNetwork{bundle: s}
	if len(settings.ReservedPorts) == 0 {
		return n, nil
	}
	network := spec.BundleNetwork(s)
	if network.Host {
		return nil, fmt.Errorf("%w: reserved ports need a network namespace of the sandbox's own and the bundle shares the host's; set %s=\"\" to reserve none",
			errdefs.ErrInvalidArgument, api.AnnotationReservedPorts)
	}
	var ns *os.File
	var err error
	userNamespace, inUserNamespace := spec.BundleUserNamespace(s)
	switch {
	case network.Path == "" && inUserNamespace && userNamespace.Path == "":
		// Both made here, as CRI makes a pod's: the network namespace
		// owned by the user namespace the control plane then joins.
		if n.madeUser, ns, err = reserve.NewUserNetworkNamespace(
			sysProcIDMaps(userNamespace.UIDMappings), sysProcIDMaps(userNamespace.GIDMappings)); err != nil {
			return nil, err
		}
		n.made = ns
		n.bundle = spec.WithUserNamespacePath(spec.WithNetworkPath(s, fdPath(ns)), fdPath(n.madeUser))
	case network.Path == "":
		if ns, err = reserve.NewNetworkNamespace(); err != nil {
			return nil, err
		}
		n.made = ns
		n.bundle = spec.WithNetworkPath(s, fdPath(ns))
	default:
		if ns, err = os.Open(network.Path); err != nil {
			return nil, fmt.Errorf("%w: network namespace of the bundle: %w", errdefs.ErrInvalidArgument, err)
		}
		defer ns.Close()
	}
	defer func() {
		if retErr != nil {
			n.close()
		}
	}()
	// Create names the sandbox in its errors.
	n.reservation, err = reserve.Make(reserve.Request{NetworkNamespace: ns, Ports: settings.ReservedPorts})
	if err != nil && settings.PodContainer && network.Path != "" && errors.Is(err, unix.EADDRINUSE) {
		// The pod's first app container to ask holds the ports in the
		// pod's network namespace (the pod annotation reaches every
		// container); a later sibling holds none, and its workspace is
		// still refused them (confineUserNetwork).
		log.L.WithError(err).Infof("reserved ports %s are held in the pod's network namespace already (by an earlier container of the pod): this container's control plane gets none",
			joinPorts(settings.ReservedPorts, ","))
		return n, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w (%s=%q; a port already taken in the namespace cannot be reserved)",
			errdefs.ErrFailedPrecondition, err, api.AnnotationReservedPorts, joinPorts(settings.ReservedPorts, ","))
	}
	return n, nil
}

// handOver gives the control plane's init the reservation as fds 3.. with
// systemd's LISTEN_* variables.
func (n *reservedNetwork) handOver(controlPlane spec.ControlPlaneConfig, logger *log.Entry) {
	if n.reservation == nil {
		return
	}
	pid1 := spec.OwnPIDNamespace(n.bundle)
	if !pid1 {
		logger.Warn("the control plane shares a PID namespace: LISTEN_PID cannot name it before it starts and is not set (sd_listen_fds ignores the fds; they are still at 3..)")
	}
	controlPlane.Init.ExtraFiles = n.reservation.Files()
	controlPlane.Init.Env = spec.ListenEnv(controlPlane.Init.Env, n.reservation.Ports(), pid1)
}

// ephemeral is the namespace's ephemeral port range; the kernel default
// where no reservation read it.
func (n *reservedNetwork) ephemeral() netpolicy.PortRange {
	if n.reservation == nil {
		return netpolicy.PortRange{Low: 32768, High: 60999}
	}
	return netpolicy.PortRange{Low: n.reservation.EphemeralLow, High: n.reservation.EphemeralHigh}
}

// confineUserNetwork attaches the network policy to the user cgroup before
// any user process exists. Refusing user code's connections to the
// reserved ports is part of the guarantee, so without it Create fails;
// the ephemeral-range defences only log when missing.
func confineUserNetwork(ctx context.Context, id, userCgroup string, settings spec.Settings, n *reservedNetwork) (Protections, error) {
	p := Protections{ReservedPorts: settings.ReservedPorts, DualStack: true}
	if n.reservation != nil {
		for _, l := range n.reservation.Listeners {
			p.DualStack = p.DualStack && l.DualStack
		}
	}
	logger := log.G(ctx).WithField("id", id)
	p.policy = netpolicy.Policy{
		CgroupPath: userCgroup, ReservedPorts: settings.ReservedPorts,
		UserConnect: settings.UserConnect, Ephemeral: n.ephemeral(),
	}
	st, err := netpolicy.Apply(p.policy)
	p.Network = st
	if err != nil {
		if st.ReservedConnect {
			return p, fmt.Errorf("%w: user code could connect to the reserved ports: %w (set %s=allow to run without this)",
				errdefs.ErrFailedPrecondition, err, api.AnnotationReservedPortsUserConnect)
		}
		logger.WithError(err).Warn("user code's binds are not kept out of the ephemeral range: the control plane's outbound connections and DNS can be starved")
		return p, nil
	}
	logProtections(logger, p)
	return p, nil
}

func logProtections(logger *log.Entry, p Protections) {
	var b strings.Builder
	if len(p.ReservedPorts) > 0 {
		stack := "dual-stack [::]"
		if !p.DualStack {
			stack = "0.0.0.0 only: the namespace has no IPv6"
		}
		fmt.Fprintf(&b, "reserved ports %s held (%s); user code may not bind them", joinPorts(p.ReservedPorts, ","), stack)
		if p.Network.ReservedConnect {
			b.WriteString(" nor connect to them")
		} else {
			b.WriteString(" but may connect to them (" + api.AnnotationReservedPortsUserConnect + "=allow)")
		}
		b.WriteString("; ")
	}
	fmt.Fprintf(&b, "user code's explicit binds in the ephemeral range %v refused", p.Network.Ephemeral)
	if p.Network.UserBindRange.Low != 0 {
		fmt.Fprintf(&b, ", bind(0) served from %v", p.Network.UserBindRange)
	} else {
		b.WriteString(", bind(0) not moved (no room below the ephemeral range)")
	}
	fmt.Fprintf(&b, ", at most %d UDP and %d TCP sockets (cgroup BPF on %s); not enforced: %s; %s",
		p.Network.UDPSocketLimit, p.Network.TCPSocketLimit, p.Network.Cgroup, strings.Join(netpolicy.Limits, "; "), abstractSocketLimit)
	logger.Info(b.String())
}

// abstractSocketLimit is what the shim cannot refuse on these kernels.
const abstractSocketLimit = "user code can bind abstract unix socket names before the control plane (no kernel hook refuses it here): the control plane must use path sockets"

func joinPorts(ports []uint16, sep string) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprint(p)
	}
	return strings.Join(s, sep)
}

// reconfineUserNetwork attaches the network policy again after the user
// cgroup was removed with a workspace, before a fresh workspace joins it. A
// sandbox whose policy could not be attached at Create gets no new attempt:
// what it enforces stays what Create logged.
func (sb *Sandbox) reconfineUserNetwork() error {
	if !sb.protections.Network.Enforced {
		return nil
	}
	if _, err := os.Stat(sb.protections.Network.Cgroup); err == nil {
		return nil // still there, programs attached
	}
	if _, err := netpolicy.Apply(sb.protections.policy); err != nil {
		return fmt.Errorf("network policy of the fresh workspace: %w", err)
	}
	return nil
}

// fdPath names an fd of the shim for libcontainer, which joins namespaces
// by path.
func fdPath(f *os.File) string {
	return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), f.Fd())
}

func sysProcIDMaps(mappings []specs.LinuxIDMapping) []syscall.SysProcIDMap {
	out := make([]syscall.SysProcIDMap, 0, len(mappings))
	for _, m := range mappings {
		out = append(out, syscall.SysProcIDMap{ContainerID: int(m.ContainerID), HostID: int(m.HostID), Size: int(m.Size)})
	}
	return out
}
