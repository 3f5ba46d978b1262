// Command sandbox-hook is an OCI createRuntime hook that reserves a
// container's control-plane ports under any OCI runtime (runc, crun): it
// reads the container's state on stdin, makes one listening dual-stack
// socket per port in the container's network namespace (internal/reserve,
// the code the shim uses) and sends them over SCM_RIGHTS to the holder
// listening on --socket, which keeps them for the container's life.
//
//	"hooks": {"createRuntime": [{"path": "/usr/local/bin/sandbox-hook",
//	    "args": ["sandbox-hook", "--socket", "/run/sandbox-holder.sock"]}]}
//
// The ports are --ports, else the container's io.sandbox.reserved-ports
// annotation, else 8080,8888. The socket must be a path (never an abstract
// name: those belong to a network namespace and anyone in it can take one
// first). The hook fails, and with it the container's creation, when any
// port cannot be reserved or handed over.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sandbox-shim/sandbox-shim/api"
	"github.com/sandbox-shim/sandbox-shim/internal/reserve"
)

// state is the part of the OCI state (runtime-spec's state.json) the hook
// reads.
type state struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Annotations map[string]string `json:"annotations"`
}

func main() {
	if err := run(os.Args[1:], os.Stdin); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox-hook:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader) error {
	flags := flag.NewFlagSet("sandbox-hook", flag.ContinueOnError)
	socket := flags.String("socket", "", "unix path socket of the holder that keeps the listeners")
	portList := flags.String("ports", "", "comma-separated TCP ports (default: the "+api.AnnotationReservedPorts+" annotation, else "+api.DefaultReservedPorts+")")
	timeout := flags.Duration("timeout", 5*time.Second, "how long to wait for the holder")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if !filepath.IsAbs(*socket) {
		return fmt.Errorf("--socket %q: want an absolute path (abstract names are refused)", *socket)
	}
	var st state
	if err := json.NewDecoder(stdin).Decode(&st); err != nil {
		return fmt.Errorf("read the OCI state on stdin: %w", err)
	}
	if st.Pid <= 0 {
		return fmt.Errorf("container %s: the OCI state has no pid (run the hook as createRuntime)", st.ID)
	}
	value, source := *portList, "--ports"
	if value == "" {
		value, source = api.DefaultReservedPorts, "default"
		if v, ok := st.Annotations[api.AnnotationReservedPorts]; ok {
			value, source = v, api.AnnotationReservedPorts
		}
	}
	ports, err := parsePorts(value)
	if err != nil {
		return fmt.Errorf("container %s: %s=%q: %w", st.ID, source, value, err)
	}
	if len(ports) == 0 {
		return nil
	}
	ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", st.Pid))
	if err != nil {
		return fmt.Errorf("container %s: network namespace: %w", st.ID, err)
	}
	defer ns.Close()
	res, err := reserve.Make(reserve.Request{SandboxID: st.ID, NetworkNamespace: ns, Ports: ports})
	if err != nil {
		return err
	}
	defer res.Close() // the holder has its copies once Send returned
	conn, err := net.DialTimeout("unix", *socket, *timeout)
	if err != nil {
		return fmt.Errorf("container %s: holder: %w", st.ID, err)
	}
	defer conn.Close()
	return reserve.Send(conn.(*net.UnixConn), res)
}

// parsePorts reads a comma-separated list of TCP ports; blank is none.
func parsePorts(v string) ([]uint16, error) {
	if strings.TrimSpace(v) == "" {
		return nil, nil
	}
	var out []uint16
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16)
		if err != nil || n == 0 {
			return nil, errors.New("want comma-separated TCP ports 1-65535")
		}
		out = append(out, uint16(n))
	}
	return out, nil
}
