// Command logger is a containerd logging binary for the integration tests
// (binary:// log URIs). The shim passes the URI's query as key value
// arguments; this one takes:
//
//	dir DIR    where to write: stdout and stderr (the container's streams,
//	           fds 3 and 4), pid, env (its environment) and fds (the
//	           descriptors it inherited, as "fd target" lines)
//	mode MODE  "exit-before-ready": exit 3 without signalling readiness;
//	           "never-ready": sleep an hour without signalling it
//
// It signals readiness through containerd's logging package, as real
// loggers (nerdctl's) do, and exits once both streams reached EOF or on
// SIGTERM.
//
// The Go runtime's cgroup-aware GOMAXPROCS keeps cgroup files open; off, so
// that the descriptors it lists are only the inherited ones.
//
//go:debug containermaxprocs=0
//go:debug updatemaxprocs=0
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/runtime/v2/logging"
)

func main() {
	args := map[string]string{}
	for i := 1; i+1 < len(os.Args); i += 2 {
		args[os.Args[i]] = os.Args[i+1]
	}
	dir := args["dir"]
	if dir == "" {
		fmt.Fprintln(os.Stderr, "logger: no dir argument")
		os.Exit(2)
	}
	// Recorded first, before this program opens descriptors of its own.
	fds := inheritedFDs()
	if err := record(dir, fds); err != nil {
		fmt.Fprintln(os.Stderr, "logger:", err)
		os.Exit(2)
	}
	switch args["mode"] {
	case "exit-before-ready":
		fmt.Fprintln(os.Stderr, "logger: exiting before ready, as asked")
		os.Exit(3)
	case "never-ready":
		time.Sleep(time.Hour)
		os.Exit(4)
	}
	logging.Run(func(ctx context.Context, cfg *logging.Config, ready func() error) error {
		return copyStreams(ctx, dir, cfg, ready)
	})
}

// inheritedFDs lists the open descriptors as "fd target" lines, leaving out
// the one reading the directory.
func inheritedFDs() string {
	self := fmt.Sprintf("/proc/%d/fd", os.Getpid())
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	var b strings.Builder
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil || target == self {
			continue
		}
		fmt.Fprintf(&b, "%s %s\n", e.Name(), target)
	}
	return b.String()
}

func record(dir, fds string) error {
	files := map[string]string{
		"pid": strconv.Itoa(os.Getpid()) + "\n",
		"env": strings.Join(os.Environ(), "\n") + "\n",
		"fds": fds,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// copyStreams copies the container's stdout and stderr into their files
// until both end; SIGTERM (ctx) ends it early, as containerd asks loggers.
func copyStreams(ctx context.Context, dir string, cfg *logging.Config, ready func() error) error {
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	var files []*os.File
	for _, stream := range []struct {
		name string
		src  io.Reader
	}{{"stdout", cfg.Stdout}, {"stderr", cfg.Stderr}} {
		f, err := os.OpenFile(filepath.Join(dir, stream.name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		files = append(files, f)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := io.Copy(f, stream.src); err != nil {
				errs <- fmt.Errorf("copy %s: %w", stream.name, err)
			}
		}()
	}
	if err := ready(); err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
	for _, f := range files {
		f.Close()
	}
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
