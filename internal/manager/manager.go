// Package manager implements the shim binary's lifecycle actions: start (spawn
// the long-lived shim server), delete (clean up after a dead shim) and info.
// Modelled on containerd-shim-runc-v2's manager.
package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/defaults"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/typeurl/v2"
	"golang.org/x/sys/unix"

	"github.com/sandbox-shim/sandbox-shim/internal/cgroup"
	"github.com/sandbox-shim/sandbox-shim/internal/cgroupprime"
	"github.com/sandbox-shim/sandbox-shim/internal/sandbox"
)

// Version is the shim's version, reported by Info.
var Version = "0.1.0"

// New returns the shim manager for runtime name.
func New(name string) shim.Shim { return manager{name: name} }

type manager struct{ name string }

func (m manager) Name() string { return m.name }

type shimSocket struct {
	addr string
	s    *net.UnixListener
	f    *os.File
}

func (s *shimSocket) Close() {
	if s.s != nil {
		s.s.Close()
	}
	if s.f != nil {
		s.f.Close()
	}
	_ = shim.RemoveSocket(s.addr)
}

func newShimSocket(ctx context.Context, root, grpcAddress, id string) (*shimSocket, error) {
	address, err := shim.CreateSocketAddress(ctx, root, grpcAddress, id, false)
	if err != nil {
		return nil, err
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
		if shim.CanConnect(address) {
			return &shimSocket{addr: address}, errdefs.ErrAlreadyExists
		}
		if err := shim.RemoveSocket(address); err != nil {
			return nil, fmt.Errorf("remove stale shim socket: %w", err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return nil, fmt.Errorf("create shim socket: %w", err)
		}
	}
	s := &shimSocket{addr: address, s: socket}
	f, err := socket.File()
	if err != nil {
		s.Close()
		return nil, err
	}
	s.f = f
	return s, nil
}

// Start spawns the shim server for one sandbox and returns its address.
// Every sandbox gets its own shim process, so one sandbox's trouble never
// reaches another's.
func (m manager) Start(ctx context.Context, opts *bootapi.BootstrapParams) (_ *bootapi.BootstrapResult, retErr error) {
	id := opts.GetInstanceID()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.GetContainerdGrpcAddress()}
	if opts.GetLogLevel() <= bootapi.LogLevel_LOG_LEVEL_DEBUG {
		args = append(args, "-debug")
	}
	socketDir := opts.GetSocketDir()
	if socketDir == "" {
		socketDir = filepath.Join(defaults.DefaultStateDir, "s")
	}
	result := &bootapi.BootstrapResult{Version: 3, Protocol: "ttrpc"}
	s, err := newShimSocket(ctx, socketDir, opts.GetContainerdGrpcAddress(), id)
	if err != nil {
		if errdefs.IsAlreadyExists(err) {
			result.Address = s.addr
			return result, nil
		}
		return nil, err
	}
	defer func() {
		if retErr != nil {
			s.Close()
		}
	}()
	cmd := exec.Command(self, args...)
	// libcontainer names its init after our argv[0], and user code sees that
	// init while it sets up an exec: no host path in it.
	cmd.Args[0] = filepath.Base(self)
	cmd.Dir = cwd
	shimCgroup, err := shimCgroupPath(opts)
	if err != nil {
		return nil, fmt.Errorf("shim for %s: %w", id, err)
	}
	cmd.Env = append(withoutPrime(os.Environ()), "GOMAXPROCS=2")
	if shimCgroup == "" {
		// Nothing moves the server after it started: it may prime the
		// cgroup migration lock for its Create (package cgroupprime, whose
		// init runs in the server because this package imports it). With a
		// shim cgroup the move below primes it.
		cmd.Env = append(cmd.Env, cgroupprime.Env+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.ExtraFiles = []*os.File{s.f}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shim for %s: %w", id, err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
	}()
	go func() { _ = cmd.Wait() }()
	if shimCgroup != "" {
		if err := cgroup.Join(shimCgroup, cmd.Process.Pid); err != nil {
			return nil, fmt.Errorf("shim for %s: %w", id, err)
		}
	}
	if err := shim.AdjustOOMScore(cmd.Process.Pid); err != nil {
		return nil, fmt.Errorf("adjust shim OOM score for %s: %w", id, err)
	}
	result.Address = s.addr
	return result, nil
}

// shimCgroupPath is the cgroup the task options name for the shim server
// (containerd's WithShimCgroup, CRI's shim cgroup), which Start moves it
// into, as the runc shim does: the options are the runc shim's, which
// containerd hands every runtime. Empty when they name none.
func shimCgroupPath(opts *bootapi.BootstrapParams) (string, error) {
	var runcOptions options.Options
	found, err := opts.FindExtension(&runcOptions)
	if err != nil {
		return "", fmt.Errorf("read task options: %w", err)
	}
	if !found {
		return "", nil
	}
	return runcOptions.GetShimCgroup(), nil
}

func withoutPrime(env []string) []string {
	return slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, cgroupprime.Env+"=") })
}

// Stop runs as the shim's delete action after the shim died: it removes
// whatever the sandbox left behind and reports the init's exit, which
// containerd publishes as the task's exit.
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	cwd, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, err
	}
	bundle := filepath.Join(filepath.Dir(cwd), id)
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	if err := sandbox.CleanupDead(ns, id, bundle); err != nil {
		log.G(ctx).WithError(err).Warn("cleanup after shim exit")
	}
	// A shim that was killed could not remove its socket; containerd
	// recorded where it was in the bundle.
	if b, err := os.ReadFile(filepath.Join(bundle, "bootstrap.json")); err == nil {
		var bs struct {
			Address string `json:"address"`
		}
		if json.Unmarshal(b, &bs) == nil && bs.Address != "" {
			_ = shim.RemoveSocket(bs.Address)
		}
	}
	return deadShimStatus(ctx, id, bundle), nil
}

// deadShimStatus is the init's exit as the dead shim recorded it in the
// bundle. With none recorded the init still ran when its shim died, and
// the cleanup just killed it: 128+SIGKILL now, with its recorded pid (0 if
// it never started), as the runc shim reports it.
func deadShimStatus(ctx context.Context, id, bundle string) shim.StopStatus {
	rec, err := sandbox.ReadInitRecord(bundle)
	if err != nil {
		log.G(ctx).WithError(fmt.Errorf("sandbox %s: %w", id, err)).Warn("read the init's record")
	}
	if e := rec.Exit; e != nil {
		return shim.StopStatus{Pid: e.Pid, ExitStatus: e.Status, ExitedAt: e.ExitedAt}
	}
	return shim.StopStatus{
		Pid:        rec.Pid,
		ExitedAt:   time.Now(),
		ExitStatus: 128 + int(unix.SIGKILL),
	}
}

// Info describes the runtime to containerd, with the OCI features that
// containerd and CRI consult (rro mounts, user namespaces, idmap mounts).
// It queries nothing slow and fails for nothing optional: without features
// containerd still runs tasks, so a marshalling failure only loses them.
func (m manager) Info(ctx context.Context, _ io.Reader) (*types.RuntimeInfo, error) {
	info := &types.RuntimeInfo{
		Name:    m.name,
		Version: &types.RuntimeVersion{Version: Version},
	}
	feat, err := typeurl.MarshalAnyToProto(ociFeatures())
	if err != nil {
		log.G(ctx).WithError(err).Warn("marshal OCI features")
		return info, nil
	}
	info.Features = feat
	return info, nil
}
