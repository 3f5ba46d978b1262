package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// exhaustWorkers bounds the processes exhaust-ports starts; each holds as
// many sockets as its RLIMIT_NOFILE allows.
const exhaustWorkers = 64

// exhaustPorts: LOW HIGH takes every TCP and UDP port it can in the
// ephemeral range LOW-HIGH, by every means user code has (explicit binds,
// bind(0), UDP's autobind at the first sendto), spread over worker
// processes, prints how many it holds in the range, READY, and holds them
// until killed. It reports, it does not judge: the test checks from
// outside that the control plane still connects out and resolves names.
func exhaustPorts(args []string) []string {
	if len(args) != 2 {
		return []string{"usage: exhaust-ports LOW HIGH"}
	}
	low, _ := strconv.Atoi(args[0])
	high, _ := strconv.Atoi(args[1])
	var tcp, udp, tcpAny, udpAny int
	next := low
	for w := 0; w < exhaustWorkers; w++ {
		cmd := exec.Command("/proc/self/exe", "exhaust-worker", strconv.Itoa(low), strconv.Itoa(high), strconv.Itoa(next))
		// Workers die with this process, so killing the exec frees every port.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return []string{err.Error()}
		}
		if err := cmd.Start(); err != nil {
			fmt.Printf("worker %d: %v\n", w, err)
			break
		}
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		var t, u, ta, ua, n int
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "HELD %d %d %d %d %d", &t, &u, &ta, &ua, &n); err != nil {
			fmt.Printf("worker %d: %q\n", w, line)
			break
		}
		tcp, udp, tcpAny, udpAny, next = tcp+t, udp+u, tcpAny+ta, udpAny+ua, n
		if ta == 0 && ua == 0 {
			break // nothing more to take
		}
	}
	fmt.Printf("holding ephemeral ports %d-%d: tcp %d udp %d (sockets bound anywhere: tcp %d udp %d)\n", low, high, tcp, udp, tcpAny, udpAny)
	fmt.Println("READY")
	holdForever()
	return nil
}

// exhaustWorker: LOW HIGH NEXT fills its descriptor table with bound
// sockets, half TCP and half UDP, and prints "HELD tcp udp tcpAny udpAny
// next" (the first two in the range), then holds them.
func exhaustWorker(args []string) {
	low, _ := strconv.Atoi(args[0])
	high, _ := strconv.Atoi(args[1])
	next, _ := strconv.Atoi(args[2])
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	budget := int(lim.Cur) - 16
	minPort, maxPort := map[int]int{}, map[int]int{}
	inRange := func(fd, kind int) bool {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return false
		}
		p := sa.(*unix.SockaddrInet4).Port
		if minPort[kind] == 0 || p < minPort[kind] {
			minPort[kind] = p
		}
		maxPort[kind] = max(maxPort[kind], p)
		return p >= low && p <= high
	}
	var tcp, udp, tcpAny, udpAny int
	discard := &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}
	for i := 0; i < budget; i++ {
		kind := unix.SOCK_DGRAM
		if i%2 == 0 {
			kind = unix.SOCK_STREAM
		}
		fd, err := unix.Socket(unix.AF_INET, kind|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			if kind == unix.SOCK_DGRAM {
				continue // the UDP socket limit, say: TCP may still go on
			}
			break
		}
		// An explicit port of the range first, then whatever else gets one.
		bound := false
		for next <= high && !bound {
			bound = unix.Bind(fd, &unix.SockaddrInet4{Port: next}) == nil
			next++
			if !bound && next-low > 64 && tcp+udp == 0 {
				next = high + 1 // explicit binds in the range are refused: stop trying
			}
		}
		if !bound {
			if kind == unix.SOCK_STREAM {
				bound = unix.Bind(fd, &unix.SockaddrInet4{}) == nil
			} else {
				// UDP autobinds at its first send, before any bind hook.
				_ = unix.Sendto(fd, []byte("x"), 0, discard)
				if sa, err := unix.Getsockname(fd); err == nil {
					bound = sa.(*unix.SockaddrInet4).Port != 0
				}
			}
		}
		if !bound {
			unix.Close(fd)
			continue
		}
		if kind == unix.SOCK_STREAM {
			tcpAny++
			if inRange(fd, kind) {
				tcp++
			}
		} else {
			udpAny++
			if inRange(fd, kind) {
				udp++
			}
		}
	}
	fmt.Fprintf(os.Stderr, "worker: tcp ports %d-%d, udp ports %d-%d\n", minPort[unix.SOCK_STREAM], maxPort[unix.SOCK_STREAM], minPort[unix.SOCK_DGRAM], maxPort[unix.SOCK_DGRAM])
	fmt.Printf("HELD %d %d %d %d %d\n", tcp, udp, tcpAny, udpAny, next)
	holdForever()
}

// holdForever keeps the process and what it holds until it is killed (a
// bare select{} would be the runtime's deadlock, which exits).
func holdForever() {
	for {
		time.Sleep(time.Hour)
	}
}
