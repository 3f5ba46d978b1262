// Package harness starts a private containerd for integration tests and
// benchmarks, so they never touch (or depend on) a containerd on the host.
package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"golang.org/x/sys/unix"
)

// Image is the test image imported into every Daemon (built by `make image`).
const Image = "docker.io/sandbox-shim/test:latest"

// SandboxRuntime is this project's runtime; RuncRuntime is the stock one.
const (
	SandboxRuntime = "io.sandbox.v1"
	RuncRuntime    = "io.containerd.runc.v2"
)

// ShimBinaryName is the binary containerd resolves SandboxRuntime to.
const ShimBinaryName = "containerd-shim-sandbox-v1"

const snapshotter = "overlayfs"

// runcRoot is containerd-shim-runc-v2's default runc --root parent.
const runcRoot = "/run/containerd/runc"

// RepoRoot walks up from the working directory to the directory holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getwd: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// ShimBinary returns the path of bin/containerd-shim-sandbox-v1, or an error
// telling how to build it. Start does not require it, so runc-only tests run
// while the shim does not build.
func ShimBinary() (string, error) { return RepoBinary(ShimBinaryName) }

// RepoBinary returns the path of bin/NAME that `make build` makes
// (containerd-shim-sandbox-v1, sandboxctl, ...), or an error telling how
// to build it.
func RepoBinary(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s missing (run `make build`): %w", p, err)
	}
	return p, nil
}

// Daemon is a private containerd with its own root, state, sockets and namespace.
type Daemon struct {
	Dir       string // private dir: root/, state/, s/ (shim sockets), config.toml, containerd.log
	Address   string // gRPC socket path
	StateDir  string // bundles are StateDir/io.containerd.runtime.v2.task/<ns>/<id>
	Namespace string // unique per Daemon; cgroups land in /sys/fs/cgroup/<ctrl>/<ns>/<id>
	Client    *client.Client

	root   string // repo root
	config string
	env    []string

	// cri is set for a daemon with CRI (StartCRI).
	cri *criSetup

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{} // closed when proc has been waited for
}

var daemonSeq atomic.Int32

// Start starts containerd from _output/bin, waits until it serves, and
// imports _output/image.tar. It builds nothing.
func Start(ctx context.Context) (*Daemon, error) {
	return start(ctx, fmt.Sprintf("sst-%d-%d", os.Getpid(), daemonSeq.Add(1)), nil)
}

// start starts a daemon whose containers live in namespace, with CRI when
// cri is set.
func start(ctx context.Context, namespace string, cri *criSetup) (*Daemon, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	outBin := filepath.Join(root, "_output", "bin")
	for _, name := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := os.Stat(filepath.Join(outBin, name)); err != nil {
			return nil, fmt.Errorf("%s missing (run `make deps`): %w", filepath.Join(outBin, name), err)
		}
	}
	imageTar := filepath.Join(root, "_output", "image.tar")
	if _, err := os.Stat(imageTar); err != nil {
		return nil, fmt.Errorf("%s missing (run `make image`): %w", imageTar, err)
	}

	// Under /run, short: shim and daemon socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("/run", "sst-")
	if err != nil {
		return nil, fmt.Errorf("create daemon dir: %w", err)
	}
	// 0711 as containerd's own /run/containerd: a container in a user
	// namespace (its root a host uid of its own) must pass through to its
	// bundle's rootfs.
	if err := os.Chmod(dir, 0o711); err != nil {
		_ = os.Remove(dir)
		return nil, fmt.Errorf("daemon dir: %w", err)
	}
	d := &Daemon{
		Dir:       dir,
		Address:   filepath.Join(dir, "c.sock"),
		StateDir:  filepath.Join(dir, "state"),
		Namespace: namespace,
		root:      root,
		config:    filepath.Join(dir, "config.toml"),
		cri:       cri,
	}
	if err := d.writeConfig(); err != nil {
		_ = d.Stop()
		return nil, err
	}
	d.env = daemonEnv(root)
	if err := d.startProcess(ctx); err != nil {
		_ = d.Stop()
		return nil, err
	}
	if err := d.importImage(ctx, imageTar); err != nil {
		_ = d.Stop()
		return nil, err
	}
	return d, nil
}

// daemonEnv puts the project's shim first, then the pinned third-party
// binaries (the runc shim finds runc in PATH), then the caller's PATH.
func daemonEnv(root string) []string {
	path := filepath.Join(root, "bin") + ":" + filepath.Join(root, "_output", "bin")
	if p := os.Getenv("PATH"); p != "" {
		path += ":" + p
	}
	env := []string{"PATH=" + path}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	return env
}

// criPlugins are the disabled plugins a CRI daemon (StartCRI) runs.
var criPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
}

// Plugins a test daemon never needs; CRI and NRI also would want host paths.
var disabledPlugins = []string{
	"io.containerd.grpc.v1.cri",
	"io.containerd.cri.v1.images",
	"io.containerd.cri.v1.runtime",
	"io.containerd.podsandbox.controller.v1.podsandbox",
	"io.containerd.nri.v1.nri",
	"io.containerd.snapshotter.v1.aufs",
	"io.containerd.snapshotter.v1.btrfs",
	"io.containerd.snapshotter.v1.devmapper",
	"io.containerd.snapshotter.v1.zfs",
	"io.containerd.snapshotter.v1.blockfile",
	"io.containerd.snapshotter.v1.erofs",
	"io.containerd.differ.v1.erofs",
	"io.containerd.internal.v1.tracing",
	"io.containerd.tracing.processor.v1.otlp",
	"io.containerd.internal.v1.opt",
}

func (d *Daemon) writeConfig() error {
	var b strings.Builder
	fmt.Fprintf(&b, "version = 4\n")
	fmt.Fprintf(&b, "root = %q\n", filepath.Join(d.Dir, "root"))
	fmt.Fprintf(&b, "state = %q\n", d.StateDir)
	// No drop-ins from the host's /etc/containerd/conf.d.
	b.WriteString("imports = []\n")
	fmt.Fprintf(&b, "disabled_plugins = [")
	n := 0
	for _, p := range disabledPlugins {
		if d.cri != nil && slices.Contains(criPlugins, p) {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		n++
		fmt.Fprintf(&b, "%q", p)
	}
	b.WriteString("]\n\n")
	// Version 4 reads the listeners from their server plugins; top-level
	// [grpc]/[ttrpc] sections are silently ignored.
	fmt.Fprintf(&b, "[debug]\n  level = \"info\"\n\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.server.v1.grpc']\n  address = %q\n\n", d.Address)
	fmt.Fprintf(&b, "[plugins.'io.containerd.server.v1.ttrpc']\n  address = %q\n\n", d.Address+".ttrpc")
	b.WriteString("[plugins.'io.containerd.server.v1.debug']\n  address = \"\"\n\n")
	b.WriteString("[plugins.'io.containerd.server.v1.metrics']\n  address = \"\"\n\n")
	fmt.Fprintf(&b, "[plugins.'io.containerd.shim.v1.manager']\n  socket_dir = %q\n", filepath.Join(d.Dir, "s"))
	if d.cri != nil {
		if err := d.writeCRIConfig(&b); err != nil {
			return fmt.Errorf("write CRI config: %w", err)
		}
	}
	if err := os.WriteFile(d.config, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	return nil
}

// startProcess runs containerd and connects Client once it serves.
func (d *Daemon) startProcess(ctx context.Context) error {
	logf, err := os.OpenFile(filepath.Join(d.Dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open containerd log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(d.root, "_output", "bin", "containerd"), "--config", d.config)
	cmd.Env = d.env
	cmd.Dir = d.Dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	// Pdeathsig kills containerd if the test binary dies (timeout panic) so no
	// daemon outlives it. It fires when the forking thread exits, so fork from a
	// locked thread that lives exactly as long as the daemon.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	d.mu.Lock()
	d.proc, d.done = cmd, done
	d.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("containerd exited during startup: %s", d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("waiting for containerd: %w", ctx.Err())
		default:
		}
		if _, err := os.Stat(d.Address); err == nil {
			c, err := client.New(d.Address, client.WithDefaultNamespace(d.Namespace), client.WithTimeout(5*time.Second))
			if err == nil {
				pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				ok, serr := c.IsServing(pctx)
				cancel()
				if serr == nil && ok {
					d.Client = c
					return nil
				}
				_ = c.Close()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not serving after 30s: %s", d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Daemon) logTail() string {
	return "log tail:\n" + fileTail(filepath.Join(d.Dir, "containerd.log"), 4000)
}

// fileTail is the last n bytes of a file, or why it cannot be read.
func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (d *Daemon) importImage(ctx context.Context, path string) error {
	return d.importImageNamed(ctx, path, Image)
}

// importImageNamed imports and unpacks the image tar at path, which must
// hold name.
func (d *Daemon) importImageNamed(ctx context.Context, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	defer f.Close()
	ctx = namespaces.WithNamespace(ctx, d.Namespace)
	imgs, err := d.Client.Import(ctx, f)
	if err != nil {
		return fmt.Errorf("import %s: %w", path, err)
	}
	found := false
	for _, img := range imgs {
		if err := client.NewImage(d.Client, img).Unpack(ctx, snapshotter); err != nil {
			return fmt.Errorf("unpack %s: %w", img.Name, err)
		}
		found = found || img.Name == name
	}
	if !found {
		return fmt.Errorf("%s does not contain %s", path, name)
	}
	return nil
}

// stopProcess sends SIGTERM to containerd (only its own pid), then SIGKILL after 10s.
func (d *Daemon) stopProcess() error {
	d.mu.Lock()
	cmd, done := d.proc, d.done
	d.proc, d.done = nil, nil
	d.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("containerd pid %d did not exit after SIGKILL", cmd.Process.Pid)
	}
}

// Restart stops only the containerd process (shims keep running), starts it
// again with the same config and reconnects Client.
func (d *Daemon) Restart(ctx context.Context) error {
	if d.Client != nil {
		_ = d.Client.Close()
		d.Client = nil
	}
	if err := d.stopProcess(); err != nil {
		return err
	}
	// A stale socket would let the readiness check pass too early.
	_ = os.Remove(d.Address)
	return d.startProcess(ctx)
}

// FIFODir is where tests should put task stdio FIFOs (cio.WithFIFODir), so
// they stay under Dir instead of the host's /run/containerd/fifo.
func (d *Daemon) FIFODir() string { return filepath.Join(d.Dir, "fifo") }

// Ctr returns `_output/bin/ctr --address d.Address --namespace d.Namespace args...`.
func (d *Daemon) Ctr(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"--address", d.Address, "--namespace", d.Namespace}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(d.root, "_output", "bin", "ctr"), full...)
	cmd.Env = d.env
	return cmd
}

// ShimPIDs returns the pids of live shim processes (any runtime) started by
// this daemon: argv[0] is a containerd-shim-* binary and argv has
// "-address <d.Address>", which containerd passes to every shim it starts.
func (d *Daemon) ShimPIDs() ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue // gone, or a zombie
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !strings.HasPrefix(filepath.Base(args[0]), "containerd-shim-") {
			continue
		}
		// The short-lived start and delete actions and -info queries are not
		// shim servers: a server has -id and no action.
		if !slices.Contains(args, "-id") || slices.ContainsFunc(args, func(a string) bool {
			return a == "start" || a == "delete" || a == "-info" || a == "--info"
		}) {
			continue
		}
		for i := 1; i+1 < len(args); i++ {
			if args[i] == "-address" && args[i+1] == d.Address {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids, nil
}

// Stop removes every task and container, stops containerd, kills leftover
// shims and container processes of this daemon, and removes its mounts, Dir
// and cgroups. It collects all errors and carries on past them.
func (d *Daemon) Stop() error {
	var errs []error
	if d.cri != nil && d.Client != nil {
		errs = append(errs, d.stopCRI())
	}
	if d.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		errs = append(errs, d.deleteAll(ctx))
		cancel()
		_ = d.Client.Close()
		d.Client = nil
	}
	errs = append(errs, d.stopProcess())

	// Shims outlive containerd by design; end the ones it started.
	if pids, err := d.ShimPIDs(); err != nil {
		errs = append(errs, err)
	} else {
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		errs = append(errs, waitGone(pids, 10*time.Second))
	}
	// Container processes orphaned by a killed shim are found by their cgroup,
	// which is unique to this daemon's namespace.
	errs = append(errs, d.killCgroupProcs(10*time.Second))
	errs = append(errs, d.unmountAll())
	// The runc shim keeps runc's state outside Dir, keyed by namespace (a
	// CRI daemon's runc has its root in Dir).
	if d.Namespace != "" && d.cri == nil {
		if err := os.RemoveAll(filepath.Join(runcRoot, d.Namespace)); err != nil {
			errs = append(errs, fmt.Errorf("remove runc state: %w", err))
		}
		// And its parents, unless something else (another daemon) uses them:
		// Remove fails on a directory that is not empty.
		_ = os.Remove(runcRoot)
		_ = os.Remove(filepath.Dir(runcRoot))
	}
	if d.Dir != "" {
		if err := os.RemoveAll(d.Dir); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", d.Dir, err))
		}
	}
	errs = append(errs, d.removeCgroups())
	if d.cri != nil {
		errs = append(errs, d.restoreCRIHost())
	}
	return errors.Join(errs...)
}

// deleteAll kills and deletes every task and container in every namespace.
func (d *Daemon) deleteAll(ctx context.Context) error {
	nss, err := d.Client.NamespaceService().List(ctx)
	if err != nil {
		return fmt.Errorf("list namespaces: %w", err)
	}
	var errs []error
	for _, ns := range nss {
		nctx := namespaces.WithNamespace(ctx, ns)
		ctrs, err := d.Client.Containers(nctx)
		if err != nil {
			errs = append(errs, fmt.Errorf("list containers in %s: %w", ns, err))
			continue
		}
		for _, c := range ctrs {
			if task, err := c.Task(nctx, nil); err == nil {
				_ = task.Kill(nctx, syscall.SIGKILL, client.WithKillAll)
				wctx, cancel := context.WithTimeout(nctx, 10*time.Second)
				if ch, err := task.Wait(wctx); err == nil {
					select {
					case <-ch:
					case <-wctx.Done():
					}
				}
				cancel()
				if _, err := task.Delete(nctx, client.WithProcessKill); err != nil {
					errs = append(errs, fmt.Errorf("delete task %s/%s: %w", ns, c.ID(), err))
				}
			}
			if err := c.Delete(nctx, client.WithSnapshotCleanup); err != nil {
				errs = append(errs, fmt.Errorf("delete container %s/%s: %w", ns, c.ID(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// Alive reports whether pid exists and is not a zombie. Orphaned shims are
// reparented to pid 1, which on some machines (this VM's init) never reaps
// them, so a dead shim can stay a zombie indefinitely.
func Alive(pid int) bool {
	return unix.Kill(pid, 0) == nil && !isZombie(pid)
}

func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		for Alive(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("pid %d still alive after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// cgroupDirs lists /sys/fs/cgroup/*/<Namespace> and every directory below,
// deepest first.
func (d *Daemon) cgroupDirs() []string {
	if d.cri == nil {
		return cgroupTree(d.Namespace)
	}
	// CRI places containers under their pod's cgroup parent, or, for a pod
	// without one (critest's), under /k8s.io: that tree is the daemon's
	// only when it was not there before (a host CRI may use it).
	dirs := cgroupTree(strings.TrimPrefix(d.cri.cgroupParent, "/"))
	if !d.cri.namespaceCgroup {
		dirs = append(dirs, cgroupTree(CRINamespace)...)
		sort.SliceStable(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	}
	return dirs
}

// cgroupTree lists the directories of the cgroup top (a path below the
// cgroup root) in every hierarchy, the unified one too, deepest first.
func cgroupTree(top string) []string {
	tops, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", top))
	if fi, err := os.Stat(filepath.Join("/sys/fs/cgroup", top, "cgroup.procs")); err == nil && !fi.IsDir() {
		tops = append(tops, filepath.Join("/sys/fs/cgroup", top))
	}
	var dirs []string
	for _, top := range tops {
		_ = filepath.WalkDir(top, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	return dirs
}

func (d *Daemon) killCgroupProcs(timeout time.Duration) error {
	if d.Namespace == "" {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		var live []int
		for _, dir := range d.cgroupDirs() {
			b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
			if err != nil {
				continue
			}
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !isZombie(pid) {
					live = append(live, pid)
				}
			}
		}
		if len(live) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroups of %s", live, d.Namespace)
		}
		for _, pid := range live {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		// A frozen task never dies of SIGKILL: thaw every cgroup (v1 and v2).
		for _, dir := range d.cgroupDirs() {
			_ = os.WriteFile(filepath.Join(dir, "freezer.state"), []byte("THAWED"), 0)
			_ = os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *Daemon) removeCgroups() error {
	if d.Namespace == "" {
		return nil
	}
	return rmdirCgroups(d.cgroupDirs())
}

// rmdirCgroups removes cgroup directories in the order given (deepest
// first, as cgroupTree lists them).
func rmdirCgroups(dirs []string) error {
	var errs []error
	for _, dir := range dirs {
		var err error
		// rmdir of a cgroup can briefly fail with EBUSY after its last task exits.
		for i := 0; i < 50; i++ {
			if err = unix.Rmdir(dir); err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rmdir %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}

// unmountAll lazily unmounts every mount point under Dir, deepest first.
func (d *Daemon) unmountAll() error {
	if d.Dir == "" {
		return nil
	}
	return unmountUnder(d.Dir)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read mountinfo: %w", err)
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, mp := range points {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount decodes the octal escapes (\040 etc.) of mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
