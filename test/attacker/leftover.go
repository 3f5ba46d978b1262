package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Memory the kernel keeps after the processes that allocated it are gone:
// files in tmpfs, SysV shared memory, message queues and semaphores, POSIX
// message queues. fillLeftover takes as much of each as the kernel gives,
// up to fillCap per kind (so a host without any cap is not brought down by
// the test itself), and reports what it got.

// fillCap bounds what one kind may take, in bytes.
const fillCap = 2 << 30

// fillTime bounds the time spent on one kind.
const fillTime = 20 * time.Second

// mqPrefix names the attacker's POSIX message queues.
const mqPrefix = "attacker-"

// fillLeftover fills every kind and prints one line per kind. With "hold"
// it then keeps its shm attachments and queue descriptors and prints
// "holding" (to be killed by kill -9 -1); otherwise it exits.
func fillLeftover(args []string) []string {
	hold := len(args) > 0 && args[0] == "hold"
	for _, dir := range []string{"/tmp", "/dev/shm"} {
		n, err := fillDir(dir)
		fmt.Printf("%s: %d MiB of data (%v)\n", dir, n>>20, err)
		files, err := fillInodes(dir)
		fmt.Printf("%s: %d empty files (%v)\n", dir, files, err)
	}
	n, segs, err := fillShm()
	fmt.Printf("sysv-shm: %d MiB in %d segments (%v)\n", n>>20, segs, err)
	n, queues, err := fillMsg()
	fmt.Printf("sysv-msg: %d KiB in %d queues (%v)\n", n>>10, queues, err)
	sems, arrays, err := fillSem()
	fmt.Printf("sysv-sem: %d semaphores in %d arrays (%v)\n", sems, arrays, err)
	n, queues, err = fillMqueue()
	fmt.Printf("posix-mq: %d KiB in %d queues (%v)\n", n>>10, queues, err)
	if hold {
		fmt.Println("holding")
		for {
			time.Sleep(time.Hour)
		}
	}
	return nil
}

// fillDir writes 1 MiB files into dir until a write fails.
func fillDir(dir string) (int64, error) {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	var total int64
	deadline := time.Now().Add(fillTime)
	for i := 0; total < fillCap && time.Now().Before(deadline); i++ {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("fill-%d", i)))
		if err != nil {
			return total, err
		}
		n, err := f.Write(chunk)
		total += int64(n)
		f.Close()
		if err != nil {
			return total, err
		}
	}
	return total, errors.New("stopped at the attacker's own cap")
}

// fillInodes creates empty files with long names (inodes and dentries are
// kernel memory too, not counted in a tmpfs size) until one fails.
func fillInodes(dir string) (int, error) {
	d := filepath.Join(dir, "inodes")
	if err := os.Mkdir(d, 0o755); err != nil {
		return 0, err
	}
	long := strings.Repeat("n", 200)
	deadline := time.Now().Add(fillTime)
	for i := 0; i < 4_000_000 && time.Now().Before(deadline); i++ {
		fd, err := unix.Open(filepath.Join(d, long+strconv.Itoa(i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return i, err
		}
		unix.Close(fd)
	}
	return 0, errors.New("stopped at the attacker's own cap")
}

// fillShm creates SysV segments and touches every page, keeping each
// attached until the namespace refuses more (with shm_rmid_forced a
// segment nobody has attached is removed at once, so only attached ones
// count against kernel.shmall); then it detaches them all, unless holding.
func fillShm() (int64, int, error) {
	size := 16 << 20
	if b, err := os.ReadFile("/proc/sys/kernel/shmmax"); err == nil {
		if m, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && m < uint64(size) {
			size = int(m) &^ 4095
		}
	}
	var total int64
	var attached [][]byte
	defer func() {
		if !holding() {
			for _, b := range attached {
				_ = unix.SysvShmDetach(b)
			}
		}
	}()
	deadline := time.Now().Add(fillTime)
	for total < fillCap && time.Now().Before(deadline) {
		id, err := unix.SysvShmGet(unix.IPC_PRIVATE, size, unix.IPC_CREAT|0o600)
		if err != nil {
			return total, len(attached), fmt.Errorf("shmget %d bytes: %w", size, err)
		}
		b, err := unix.SysvShmAttach(id, 0, 0)
		if err != nil {
			return total, len(attached), fmt.Errorf("shmat: %w", err)
		}
		attached = append(attached, b)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		total += int64(size)
	}
	return total, len(attached), errors.New("stopped at the attacker's own cap")
}

// holding tells whether the attack keeps what it took attached.
func holding() bool { return len(os.Args) > 2 && os.Args[2] == "hold" }

// fillMsg creates SysV message queues and fills each to its byte limit
// with one-byte messages (each costs a kernel header far larger than its
// byte), until msgget or msgsnd fails.
func fillMsg() (int64, int, error) {
	var total int64
	deadline := time.Now().Add(fillTime)
	msg := struct {
		mtype int64
		text  [1]byte
	}{mtype: 1}
	for queues := 0; total < fillCap && time.Now().Before(deadline); queues++ {
		id, _, errno := unix.Syscall(unix.SYS_MSGGET, unix.IPC_PRIVATE, unix.IPC_CREAT|0o600, 0)
		if errno != 0 {
			return total, queues, fmt.Errorf("msgget: %w", errno)
		}
		for time.Now().Before(deadline) {
			_, _, errno := unix.Syscall6(unix.SYS_MSGSND, id, uintptr(unsafe.Pointer(&msg)), 1, unix.IPC_NOWAIT, 0, 0)
			if errno == unix.EAGAIN {
				break // this queue is full
			}
			if errno != 0 {
				return total, queues + 1, fmt.Errorf("msgsnd: %w", errno)
			}
			total += 64 // the kernel's allocation for a 1-byte message
		}
	}
	return total, 0, errors.New("stopped at the attacker's own cap or time")
}

// fillSem creates SysV semaphore arrays of SEMMSL semaphores until semget fails.
func fillSem() (int, int, error) {
	msl := 250
	if b, err := os.ReadFile("/proc/sys/kernel/sem"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 4 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 0 {
				msl = n
			}
		}
	}
	sems := 0
	deadline := time.Now().Add(fillTime)
	for arrays := 0; sems < fillCap/64 && time.Now().Before(deadline); arrays++ {
		_, _, errno := unix.Syscall(unix.SYS_SEMGET, unix.IPC_PRIVATE, uintptr(msl), unix.IPC_CREAT|0o600)
		if errno != 0 {
			return sems, arrays, fmt.Errorf("semget %d: %w", msl, errno)
		}
		sems += msl
	}
	return sems, 0, errors.New("stopped at the attacker's own cap or time")
}

// mqAttr is struct mq_attr.
type mqAttr struct {
	flags, maxmsg, msgsize, curmsgs int64
	_                               [4]int64
}

// fillMqueue opens POSIX message queues as large as the namespace allows
// and fills them, until mq_open fails.
func fillMqueue() (int64, int, error) {
	read := func(name string, def int64) int64 {
		b, err := os.ReadFile("/proc/sys/fs/mqueue/" + name)
		if err != nil {
			return def
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return def
		}
		return n
	}
	attr := mqAttr{maxmsg: read("msg_max", 10), msgsize: read("msgsize_max", 8192)}
	msg := make([]byte, attr.msgsize)
	var total int64
	deadline := time.Now().Add(fillTime)
	for queues := 0; total < fillCap && time.Now().Before(deadline); queues++ {
		name, err := unix.BytePtrFromString(mqPrefix + strconv.Itoa(queues))
		if err != nil {
			return total, queues, err
		}
		fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)),
			unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_NONBLOCK, 0o600, uintptr(unsafe.Pointer(&attr)), 0, 0)
		if errno != 0 {
			return total, queues, fmt.Errorf("mq_open (%d x %d bytes): %w", attr.maxmsg, attr.msgsize, errno)
		}
		for i := int64(0); i < attr.maxmsg; i++ {
			_, _, errno := unix.Syscall6(unix.SYS_MQ_TIMEDSEND, fd, uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)), 0, 0, 0)
			if errno != 0 {
				return total, queues + 1, fmt.Errorf("mq_send: %w", errno)
			}
			total += int64(len(msg))
		}
		if !holding() {
			unix.Close(int(fd))
		}
	}
	return total, 0, errors.New("stopped at the attacker's own cap")
}

// removeIPC is the platform's cleanup of what IPC objects are left (busybox
// has no ipcrm): every SysV shm segment, message queue and semaphore array
// it can see, and the attacker's POSIX queues. It fails if one is left.
func removeIPC([]string) []string {
	var out []string
	for _, kind := range []struct {
		file string
		rm   func(id int) error
	}{
		{"/proc/sysvipc/shm", func(id int) error { _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); return err }},
		{"/proc/sysvipc/msg", func(id int) error {
			_, _, errno := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), unix.IPC_RMID, 0)
			return errnoErr(errno)
		}},
		{"/proc/sysvipc/sem", func(id int) error {
			_, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID, 0, 0, 0)
			return errnoErr(errno)
		}},
	} {
		ids, err := sysvIDs(kind.file)
		if err != nil {
			out = append(out, err.Error())
			continue
		}
		for _, id := range ids {
			if err := kind.rm(id); err != nil {
				out = append(out, fmt.Sprintf("remove %s id %d: %v", kind.file, id, err))
			}
		}
		fmt.Printf("%s: removed %d\n", kind.file, len(ids))
	}
	removed := 0
	for i := 0; ; i++ {
		name, _ := unix.BytePtrFromString(mqPrefix + strconv.Itoa(i))
		if _, _, errno := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0); errno != 0 {
			break
		}
		removed++
	}
	fmt.Printf("posix-mq: removed %d\n", removed)
	if len(out) > 0 {
		// A cleanup that fails is not a breach: report it on stderr.
		for _, o := range out {
			fmt.Fprintln(os.Stderr, o)
		}
		os.Exit(3)
	}
	return nil
}

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// sysvIDs lists the ids in a /proc/sysvipc table (second column).
func sysvIDs(file string) ([]int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var ids []int
	for i, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 2 {
			continue
		}
		if id, err := strconv.Atoi(f[1]); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// holdPtys opens the workspace's /dev/ptmx until it fails, tries the
// platform's pty instance, prints what it got, then keeps them all.
func holdPtys(args []string) []string {
	var held []int
	var err error
	for len(held) < 100000 {
		fd, e := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if e != nil {
			err = e
			break
		}
		held = append(held, fd)
	}
	fmt.Printf("held %d ptys (%v)\n", len(held), err)
	var breached []string
	for _, p := range args {
		if _, e := os.ReadDir(p); e == nil {
			breached = append(breached, "listed "+p)
			continue
		}
		fd, e := unix.Open(p, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if e == unix.EISDIR {
			_, e = os.ReadDir(p)
		}
		if e == nil {
			breached = append(breached, "opened "+p)
			held = append(held, fd)
			continue
		}
		fmt.Printf("open %s: %v\n", p, e)
	}
	fmt.Println("holding")
	for _, b := range breached {
		fmt.Println("BREACH:", b)
	}
	for {
		time.Sleep(time.Hour)
	}
}
