// Command agent is the test image's stand-in control plane: an HTTP server
// that adopts its listening sockets the way a real agent should, from
// systemd's socket-activation variables (LISTEN_FDS, LISTEN_PID,
// LISTEN_FDNAMES; fds from 3). It serves files from -root and a few
// endpoints the tests and the demo use to look at it from outside:
//
//	/fds                 its LISTEN_* variables and open descriptors
//	/dial?addr=H:P       an outbound TCP connection from the control plane
//	/resolve?name=N&server=H:P  a DNS lookup over UDP to that resolver
//	/bind?port=P         whether the control plane itself can bind P
//
// With -unix it also serves on a path socket in a root-only directory.
//
// Without LISTEN_FDS it listens on -listen (the runc comparison in bench).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	root := flag.String("root", "/www", "directory to serve")
	listen := flag.String("listen", ":8080", "address to listen on without LISTEN_FDS")
	unixPath := flag.String("unix", "", "also serve on this unix path socket (never an abstract name: user code shares the network namespace and could take it first); its directory is made root-only")
	flag.Parse()
	listeners, err := adopt()
	if err != nil {
		log.Fatal(err)
	}
	if len(listeners) == 0 {
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatal(err)
		}
		listeners = []net.Listener{l}
	}
	if *unixPath != "" {
		l, err := listenUnix(*unixPath)
		if err != nil {
			log.Fatal(err)
		}
		listeners = append(listeners, l)
	}
	mux := http.NewServeMux()
	mux.Handle("/", http.FileServer(http.Dir(*root)))
	mux.HandleFunc("/fds", fds)
	mux.HandleFunc("/dial", dial)
	mux.HandleFunc("/resolve", resolve)
	mux.HandleFunc("/bind", bind)
	errc := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errc <- (&http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}).Serve(l) }()
	}
	log.Fatal(<-errc)
}

// handedOver keeps the inherited descriptors open where they arrived.
var handedOver []*os.File

// adopt takes the sockets systemd's convention hands over: LISTEN_FDS of
// them from fd 3, meant for this process when LISTEN_PID names it (a
// missing LISTEN_PID is accepted: the shim cannot know the pid of an init
// in a shared PID namespace).
func adopt() ([]net.Listener, error) {
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n <= 0 {
		return nil, nil
	}
	if pid := os.Getenv("LISTEN_PID"); pid != "" && pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	var out []net.Listener
	for i := 0; i < n; i++ {
		name := "fd"
		if i < len(names) {
			name = names[i]
		}
		f := os.NewFile(uintptr(3+i), name)
		l, err := net.FileListener(f)
		// f stays open: the tests look for the sockets at 3.. (FileListener
		// serves on a copy).
		handedOver = append(handedOver, f)
		if err != nil {
			return nil, fmt.Errorf("adopt fd %d (%s): %w", 3+i, name, err)
		}
		out = append(out, l)
	}
	return out, nil
}

// listenUnix listens on path in a directory only root may enter, so user
// code can neither squat the name nor connect.
func listenUnix(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	return net.Listen("unix", path)
}

func fds(w http.ResponseWriter, _ *http.Request) {
	for _, k := range []string{"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} {
		v, ok := os.LookupEnv(k)
		if !ok {
			v = "(unset)"
		}
		fmt.Fprintf(w, "%s=%s\n", k, v)
	}
	fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	ents, _ := os.ReadDir("/proc/self/fd")
	var list []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			list = append(list, n)
		}
	}
	sort.Ints(list)
	for _, n := range list {
		target, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", n))
		fmt.Fprintf(w, "fd %d %s\n", n, target)
	}
}

func dial(w http.ResponseWriter, r *http.Request) {
	c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 3*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer c.Close()
	fmt.Fprintf(w, "connected from %s\n", c.LocalAddr())
}

func resolve(w http.ResponseWriter, r *http.Request) {
	server := r.URL.Query().Get("server")
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "udp", server)
	}}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	addrs, err := resolver.LookupHost(ctx, r.URL.Query().Get("name"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	fmt.Fprintln(w, strings.Join(addrs, " "))
}

func bind(w http.ResponseWriter, r *http.Request) {
	l, err := net.Listen("tcp", ":"+r.URL.Query().Get("port"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
		return
	}
	l.Close()
	fmt.Fprintln(w, "bound")
}
