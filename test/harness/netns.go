package harness

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTPGet fetches http://127.0.0.1:<port><path> inside the network
// namespace of pid, from the host: the check "from outside" that a
// sandbox's control plane still answers. The socket is created on a locked
// thread moved into that namespace, which is moved back before unlocking.
func HTTPGet(pid, port int, path string, timeout time.Duration) (string, error) {
	return HTTPGetAt(pid, "tcp", fmt.Sprintf("127.0.0.1:%d", port), path, timeout)
}

// HTTPGetAt is HTTPGet to any address of the namespace (network "tcp",
// "tcp4" or "tcp6", as net.Dial takes; "localhost:8080" resolves as on the
// host).
func HTTPGetAt(pid int, network, addr, path string, timeout time.Duration) (string, error) {
	conn, err := dialInNetns(pid, network, addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufioReader(conn), nil)
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

func dialInNetns(pid int, network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := inNetns(fmt.Sprintf("/proc/%d/ns/net", pid), func() error {
		var err error
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
