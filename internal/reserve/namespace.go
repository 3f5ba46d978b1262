package reserve

import (
	"fmt"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// NewNetworkNamespace makes a network namespace with its loopback up (as
// runc sets it up for a new one) and returns it open: the caller reserves
// ports in it before any container exists and hands it to libcontainer as
// a path, so the listeners are there before the container's first
// instruction.
func NewNetworkNamespace() (*os.File, error) {
	type result struct {
		ns  *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer self.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("new network namespace: %w", err)}
			return
		}
		ns, err := os.Open("/proc/thread-self/ns/net")
		if err == nil {
			if err = loopbackUp(); err != nil {
				ns.Close()
				err = fmt.Errorf("loopback of the new network namespace: %w", err)
			}
		}
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the thread stays locked and dies with this goroutine
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{ns: ns}
	}()
	r := <-ch
	return r.ns, r.err
}

// loopbackUp sets lo up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// NewUserNetworkNamespace makes a user namespace with the given mappings
// and a network namespace it owns (loopback up), and returns both open,
// as NewNetworkNamespace does for a bundle without a user namespace. The
// network namespace must be the user namespace's: the control plane,
// made in that user namespace, can mount sysfs only for a network
// namespace its user namespace owns (CRI makes a pod's the same way).
//
// A process is needed to make a user namespace (a threaded one cannot
// unshare it): a child of the shim's own binary, cloned into both, stopped
// by ptrace at its exec before it runs anything, and killed once its
// namespaces are open.
func NewUserNetworkNamespace(uidMappings, gidMappings []syscall.SysProcIDMap) (user, network *os.File, retErr error) {
	type result struct {
		user, network *os.File
		err           error
	}
	ch := make(chan result, 1)
	go func() {
		// The tracer is this thread: it must also be the one that waits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r result
		r.user, r.network, r.err = holdUserNetworkNamespace(uidMappings, gidMappings)
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		return nil, nil, r.err
	}
	if err := inNamespace(r.network, loopbackUp); err != nil {
		r.user.Close()
		r.network.Close()
		return nil, nil, fmt.Errorf("loopback of the new network namespace: %w", err)
	}
	return r.user, r.network, nil
}

func holdUserNetworkNamespace(uidMappings, gidMappings []syscall.SysProcIDMap) (user, network *os.File, retErr error) {
	child, err := os.StartProcess("/proc/self/exe", []string{"sandbox-namespace-holder"}, &os.ProcAttr{
		Sys: &syscall.SysProcAttr{
			Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWNET,
			UidMappings:                uidMappings,
			GidMappings:                gidMappings,
			GidMappingsEnableSetgroups: true,
			Ptrace:                     true,
			Pdeathsig:                  syscall.SIGKILL,
		},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("new user and network namespaces: %w", err)
	}
	defer func() {
		_ = child.Kill()
		_, _ = child.Wait()
	}()
	if user, err = os.Open(fmt.Sprintf("/proc/%d/ns/user", child.Pid)); err != nil {
		return nil, nil, fmt.Errorf("new user namespace: %w", err)
	}
	if network, err = os.Open(fmt.Sprintf("/proc/%d/ns/net", child.Pid)); err != nil {
		user.Close()
		return nil, nil, fmt.Errorf("new network namespace: %w", err)
	}
	return user, network, nil
}
