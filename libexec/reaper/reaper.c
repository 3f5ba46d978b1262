/*
 * sandbox-reaper: the small helper the shim runs inside a sandbox's
 * workspace. Static C, so it runs in any rootfs and no runtime installs
 * signal handlers behind its back.
 *
 * With --fork-waiters it is the workspace's pid 1: it reaps orphans and
 * forks waiters for the shim. Every signal is blocked and read from a
 * signalfd, never handled: the kernel drops SIGKILL/SIGSTOP sent to a
 * namespace init from inside, and anything else is dequeued and ignored,
 * so `kill -9 -1`, `kill -TERM 1` and friends leave the workspace standing
 * (user code runs under another uid and cannot signal it at all).
 *
 * Control socket (fd 3, SOCK_SEQPACKET, a socketpair: no name anyone could
 * connect to). The reaper says "C1" first. The shim sends "F" + u64 cookie
 * with one descriptor (SCM_RIGHTS): a waiter's socket end. The reaper
 * forks; the child becomes a waiter on that socket (below) and the reaper
 * answers "P" + u64 cookie + i32 pid (its pid in the workspace), or
 * "E" + u64 cookie + i32 errno when the fork failed (a full pids limit:
 * the shim then builds the waiter the slow way). When a child it forked
 * exits, the reaper sends "X" + i32 pid + i32 wait status; orphans it
 * merely reaps are not reported, so a fork bomb costs the shim nothing.
 * Once the shim closes its end, the reaper only reaps.
 *
 * A waiter (forked, or started by libcontainer with --wait-exec on the
 * slow path) is a pre-built exec: it already sits in the workspace
 * (namespaces, seccomp, no_new_privs, rlimits, oom_score_adj), and the shim
 * has moved it into its exec cgroup leaf, so an exec costs no cgroup
 * migration when it is needed, which matters while a fork bomb makes every
 * migration slow. It waits under the reaper's uid, so user code cannot
 * signal, renice, prlimit or read it, holding only CAP_SETUID, CAP_SETGID
 * and CAP_SETPCAP, which it gives up for good (all capability sets and the
 * bounding set emptied) once it took the identity the request names, right
 * before the exec. It waits on fd 3 (a SOCK_SEQPACKET socket to the shim)
 * for one request, sets up stdio (the three descriptors sent with it, or a
 * new pty whose master goes back to the shim), changes directory and
 * execs. It first sends the hello "R3" (the request version it reads). Any
 * failure before the exec is reported as one "E<message>" packet; a
 * successful exec closes the socket (close-on-exec), which the shim reads
 * as success.
 *
 * Request (written by spec.ExecRequest.Encode, host byte order): u32
 * version (3), u32 flags (1 = terminal), u16 rows, u16 cols, u32 uid,
 * u32 gid, u32 argc, u32 envc, u32 nrlimits, u32 ngroups, nrlimits x
 * (u32 resource, u32 pad, u64 soft, u64 hard), ngroups x u32 gid, then
 * NUL-terminated cwd, argv[argc], envp[envc]; SCM_RIGHTS: stdin, stdout,
 * stderr (non-terminal only). uid, gid and every group must be non-zero.
 * A terminal exec sends "M" with the pty master and waits for "A" before
 * it goes on.
 *
 * With --fork-waiters --seccomp-fd-4 (a secure exec's container, whose
 * libcontainer config has no seccomp profile) it first installs the
 * seccomp program read from fd 4 (to EOF: u32 filter flags, then the
 * struct sock_filter array, host byte order): the one libcontainer would have installed, compiled once
 * by the shim (internal/seccompprogram) instead of in every container's
 * init. no_new_privs is already set; anything failing exits 126 before the
 * hello, and the shim's build fails with it. Everything the reaper forks
 * inherits the filter.
 *
 * Where the kernel has Landlock scoping (ABI 6, Linux 6.12), each exec
 * runs in its own domain that cannot connect to abstract unix sockets
 * created outside it: the control plane shares the network namespace, and
 * abstract sockets live there, not in the filesystem.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define SOCK_FD 3
#define MAX_REQ (4 * 1024 * 1024)
#define HDR_LEN 36
#define MAX_GROUPS 64
#define WAITER_ARG "--wait-exec"
#define REAPER_ARG "--fork-waiters"
#define SECCOMP_ARG "--seccomp-fd-4"
#define SECCOMP_FD 4
#define BPF_MAX_INSNS 4096

/* close_from closes every descriptor from fd up. */
static void close_from(int fd)
{
	if (syscall(SYS_close_range, fd, ~0U, 0) == 0)
		return;
	for (; fd < 1024; fd++)
		close(fd);
}

static void fail(const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	msg[0] = 'E';
	va_start(ap, fmt);
	vsnprintf(msg + 1, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	send(SOCK_FD, msg, strlen(msg), MSG_NOSIGNAL);
	_exit(127);
}

static void send_fd(int fd)
{
	char c = 'M';
	struct iovec iov = {.iov_base = &c, .iov_len = 1};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(SOCK_FD, &msg, MSG_NOSIGNAL) < 0)
		_exit(127);
}

/* home finds the user's home in /etc/passwd, as runc does when HOME is unset. */
static const char *home(void)
{
	static char line[1024];
	FILE *f = fopen("/etc/passwd", "re");
	uid_t uid = getuid();

	if (!f)
		return "/";
	while (fgets(line, sizeof(line), f)) {
		char *field[7];
		char *p = line;
		int n = 0;
		for (; n < 7; n++) {
			field[n] = p;
			p = strchr(p, n == 6 ? '\n' : ':');
			if (!p)
				break;
			*p++ = 0;
		}
		if (n >= 6 && (uid_t)strtoul(field[2], NULL, 10) == uid) {
			fclose(f);
			return field[5];
		}
	}
	fclose(f);
	return "/";
}

/* become switches to the requested identity and drops every capability. */
static void become(uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups)
{
	struct __user_cap_header_struct {
		uint32_t version;
		int pid;
	} hdr = {0x20080522, 0}; /* _LINUX_CAPABILITY_VERSION_3 */
	struct __user_cap_data_struct {
		uint32_t effective, permitted, inheritable;
	} data[2] = {{0, 0, 0}, {0, 0, 0}};

	if (setgroups(ngroups, groups) < 0)
		fail("setgroups: %s", strerror(errno));
	if (setresgid(gid, gid, gid) < 0)
		fail("setresgid %u: %s", gid, strerror(errno));
	if (setresuid(uid, uid, uid) < 0)
		fail("setresuid %u: %s", uid, strerror(errno));
	/* The uid change from non-root kept our capabilities: drop them all. */
	for (int cap = 0; cap <= 63; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
			fail("drop bounding capability %d: %s", cap, strerror(errno));
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	if (syscall(SYS_capset, &hdr, data) < 0)
		fail("capset: %s", strerror(errno));
}

#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#define SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)

/* scope_abstract_sockets puts the exec in a Landlock domain of its own that
 * may not connect to abstract unix sockets from outside it. Kernels without
 * Landlock scoping (before 6.12) go without. */
static void scope_abstract_sockets(void)
{
	struct {
		uint64_t handled_access_fs, handled_access_net, scoped;
	} attr = {0, 0, SCOPE_ABSTRACT_UNIX_SOCKET};
	long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);

	if (abi < 6)
		return;
	int fd = syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (fd < 0)
		fail("landlock ruleset: %s", strerror(errno));
	if (syscall(SYS_landlock_restrict_self, fd, 0) < 0)
		fail("landlock restrict: %s", strerror(errno));
	close(fd);
}

static int wait_exec(void)
{
	static char req[MAX_REQ + 1];
	int fds[3] = {-1, -1, -1}, nfds = 0;
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = req, .iov_len = MAX_REQ};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t n;

	struct rlimit core = {0, 0};

	/* Before any request (and its secrets) arrives: the shim may have set
	 * no rlimits on this process (Settings.SelfRlimits). */
	setrlimit(RLIMIT_CORE, &core);
	fcntl(SOCK_FD, F_SETFD, FD_CLOEXEC);
	/* The hello names the request layout this binary reads: a shim of
	 * another version refuses it instead of misreading it. */
	if (send(SOCK_FD, "R3", 2, MSG_NOSIGNAL) < 0)
		_exit(127);
	do
		n = recvmsg(SOCK_FD, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		_exit(0); /* the shim dropped this pooled exec */
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			if (nfds > 3)
				fail("too many descriptors");
			memcpy(fds, CMSG_DATA(cm), nfds * sizeof(int));
		}
	if (n < HDR_LEN || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		fail("malformed exec request");
	req[n] = 0;

	uint32_t version, flags, uid, gid, argc, envc, nrl, ngr;
	uint16_t rows, cols;
	memcpy(&version, req, 4);
	memcpy(&flags, req + 4, 4);
	memcpy(&rows, req + 8, 2);
	memcpy(&cols, req + 10, 2);
	memcpy(&uid, req + 12, 4);
	memcpy(&gid, req + 16, 4);
	memcpy(&argc, req + 20, 4);
	memcpy(&envc, req + 24, 4);
	memcpy(&nrl, req + 28, 4);
	memcpy(&ngr, req + 32, 4);
	if (version != 3 || argc == 0 || argc > MAX_REQ / 2 || envc > MAX_REQ / 2 || nrl > 64 ||
	    ngr > MAX_GROUPS || HDR_LEN + (size_t)nrl * 24 + (size_t)ngr * 4 > (size_t)n)
		fail("malformed exec request");
	gid_t groups[MAX_GROUPS];
	for (uint32_t i = 0; i < ngr; i++) {
		uint32_t g;
		memcpy(&g, req + HDR_LEN + nrl * 24 + i * 4, 4);
		if (g == 0)
			fail("refusing to run user code in group 0");
		groups[i] = g;
	}
	if (uid == 0 || gid == 0)
		fail("refusing to run user code as root");
	char **argv = calloc(argc + 1, sizeof(char *));
	char **envp = calloc(envc + 2, sizeof(char *));
	if (!argv || !envp)
		fail("out of memory");
	char *rl = req + HDR_LEN;
	char *p = rl + nrl * 24 + ngr * 4, *end = req + n;
	char *cwd = p;
	p += strlen(p) + 1;
	for (uint32_t i = 0; i < argc; i++) {
		if (p >= end)
			fail("malformed exec request");
		argv[i] = p;
		p += strlen(p) + 1;
	}
	int has_home = 0;
	for (uint32_t i = 0; i < envc; i++) {
		if (p >= end)
			fail("malformed exec request");
		envp[i] = p;
		has_home |= strncmp(p, "HOME=", 5) == 0;
		p += strlen(p) + 1;
	}

	become(uid, gid, groups, ngr);
	/* The exec's own limits: lowering works unprivileged; raising a hard
	 * limit does not, and is reported. */
	for (uint32_t i = 0; i < nrl; i++) {
		uint32_t res;
		struct rlimit lim;
		uint64_t soft, hard;
		memcpy(&res, rl + i * 24, 4);
		memcpy(&soft, rl + i * 24 + 8, 8);
		memcpy(&hard, rl + i * 24 + 16, 8);
		lim.rlim_cur = soft;
		lim.rlim_max = hard;
		if (res == RLIMIT_CORE)
			continue; /* stays 0: core dumps would write memory to disk */
		if (setrlimit(res, &lim) < 0)
			fail("setrlimit %u (soft %llu, hard %llu): %s", res,
			     (unsigned long long)soft, (unsigned long long)hard, strerror(errno));
	}
	scope_abstract_sockets();
	if (!has_home) {
		const char *h = home();
		char *e = malloc(strlen(h) + 6);
		if (!e)
			fail("out of memory");
		sprintf(e, "HOME=%s", h);
		envp[envc] = e;
	}

	int std[3];
	if (flags & 1) {
		/* fd 0 of a waiter is the ptmx of the platform's own devpts
		 * instance, opened by the shim (see spec.PlatformPtyDir): reopening
		 * it makes a new pty there, which user code can neither reach nor
		 * exhaust. dup2 below replaces it before the exec. */
		int master = open("/proc/self/fd/0", O_RDWR | O_NOCTTY | O_CLOEXEC);
		int unlock = 0;
		if (master < 0)
			fail("open a pty of the platform's instance (/proc/self/fd/0): %s", strerror(errno));
		if (ioctl(master, TIOCSPTLCK, &unlock) < 0)
			fail("unlock pty: %s", strerror(errno));
		int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY);
		if (slave < 0)
			fail("open pty peer: %s", strerror(errno));
		if (rows && cols) {
			struct winsize ws = {.ws_row = rows, .ws_col = cols};
			ioctl(master, TIOCSWINSZ, &ws);
		}
		send_fd(master);
		close(master);
		/* Wait until the shim reads the master: output of a program that
		 * exits at once would be flushed by the hangup of its terminal if
		 * nobody were reading yet. */
		char ack;
		if (recv(SOCK_FD, &ack, 1, 0) != 1 || ack != 'A')
			_exit(127);
		std[0] = std[1] = std[2] = slave;
	} else {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		for (int i = 0; i < 3; i++)
			std[i] = i < nfds && fds[i] >= 0 ? fds[i] : null;
	}
	/* Lift the descriptors out of the 0-2 range before placing them. */
	for (int i = 0; i < 3; i++) {
		int fd = fcntl(std[i], F_DUPFD_CLOEXEC, 10);
		if (fd < 0)
			fail("dup: %s", strerror(errno));
		std[i] = fd;
	}
	for (int i = 0; i < 3; i++)
		if (dup2(std[i], i) < 0)
			fail("dup2: %s", strerror(errno));
	if ((flags & 1) && ioctl(0, TIOCSCTTY, 0) < 0)
		fail("set controlling terminal: %s", strerror(errno));
	/* Only 0-2 and the close-on-exec socket survive the exec. */
	close_from(SOCK_FD + 1);

	if (chdir(cwd) < 0)
		fail("chdir to cwd (\"%s\") set in config.json failed: %s", cwd, strerror(errno));

	const char *file = argv[0];
	if (strchr(file, '/')) {
		execve(file, argv, envp);
		fail("exec: \"%s\": %s", file, strerror(errno));
	}
	const char *path = NULL;
	for (uint32_t i = 0; envp[i]; i++)
		if (strncmp(envp[i], "PATH=", 5) == 0)
			path = envp[i] + 5;
	if (!path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	/* As execvp: a candidate that exists but cannot run explains the failure
	 * better than "not found". */
	int found_err = 0;
	for (const char *dir = path; dir; ) {
		const char *colon = strchr(dir, ':');
		size_t len = colon ? (size_t)(colon - dir) : strlen(dir);
		char full[PATH_MAX];
		if (snprintf(full, sizeof(full), "%.*s/%s", (int)len, len ? dir : ".", file) < (int)sizeof(full)) {
			execve(full, argv, envp);
			if (errno != ENOENT && errno != ENOTDIR && !found_err)
				found_err = errno;
		}
		dir = colon ? colon + 1 : NULL;
	}
	if (found_err)
		fail("exec: \"%s\": %s", file, strerror(found_err));
	fail("exec: \"%s\": executable file not found in $PATH", file);
	return 127;
}

static int send_all(int fd, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(fd, buf, len, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)len ? 0 : -1;
}

/* The children the reaper forked for the shim and has not reaped yet. */
static pid_t *forked;
static size_t nforked, capforked;

static int forked_index(pid_t pid)
{
	for (size_t i = 0; i < nforked; i++)
		if (forked[i] == pid)
			return (int)i;
	return -1;
}

/* The argv area, so a forked waiter shows as "--wait-exec" in ps. */
static char *arg_area;
static size_t arg_len;

static void __attribute__((noreturn)) become_waiter(int sock, int stdin_fd, int sigfd)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	close(sigfd);
	/* fd 3 was the control socket: the waiter's socket takes its place. */
	if (dup2(sock, SOCK_FD) < 0)
		_exit(127);
	/* fd 0 is what the shim sent with the request (the platform ptmx), as
	 * a waiter libcontainer starts has it as its stdin. */
	if (stdin_fd >= 0 && dup2(stdin_fd, 0) < 0)
		_exit(127);
	close_from(SOCK_FD + 1);
	setsid(); /* a session of its own, as a libcontainer exec: TIOCSCTTY needs it */
	if (arg_area && arg_len >= sizeof(WAITER_ARG)) {
		memset(arg_area, 0, arg_len);
		memcpy(arg_area, WAITER_ARG, sizeof(WAITER_ARG));
	}
	_exit(wait_exec());
}

static void reply(int ctl, char kind, uint64_t cookie, int32_t value)
{
	char msg[13];

	msg[0] = kind;
	memcpy(msg + 1, &cookie, 8);
	memcpy(msg + 9, &value, 4);
	send_all(ctl, msg, sizeof(msg));
}

/* fork_waiter forks one waiter on sock for the shim's request cookie, with
 * stdin_fd (or the reaper's /dev/null when -1) as its fd 0. */
static void fork_waiter(int ctl, int sigfd, uint64_t cookie, int sock, int stdin_fd)
{
	if (nforked == capforked) {
		size_t cap = capforked ? 2 * capforked : 16;
		pid_t *p = realloc(forked, cap * sizeof(pid_t));
		if (!p) {
			close(sock);
			if (stdin_fd >= 0)
				close(stdin_fd);
			reply(ctl, 'E', cookie, ENOMEM);
			return;
		}
		forked = p;
		capforked = cap;
	}
	pid_t pid = fork();
	if (pid == 0)
		become_waiter(sock, stdin_fd, sigfd);
	int err = errno;
	close(sock);
	if (stdin_fd >= 0)
		close(stdin_fd);
	if (pid < 0) {
		reply(ctl, 'E', cookie, err);
		return;
	}
	forked[nforked++] = pid;
	/* Sent before this loop can reap the child: its "P" always comes
	 * before its "X". */
	reply(ctl, 'P', cookie, pid);
}

/* control reads one request; it returns -1 once the shim closed its end. */
static int control(int ctl, int sigfd)
{
	char buf[64];
	int fds[4], nfds = 0;
	union {
		char buf[CMSG_SPACE(sizeof(fds))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
	ssize_t n = recvmsg(ctl, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	if (n == 0)
		return -1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			int k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (int i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (nfds < 4)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
	if (n == 9 && buf[0] == 'F' && (nfds == 1 || nfds == 2) && !(msg.msg_flags & MSG_CTRUNC)) {
		uint64_t cookie;
		memcpy(&cookie, buf + 1, 8);
		fork_waiter(ctl, sigfd, cookie, fds[0], nfds == 2 ? fds[1] : -1);
		return 0;
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	return 0;
}

/* reap collects every exited child, reporting those it forked. */
static void reap(int ctl)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		int i = forked_index(pid);
		if (i < 0)
			continue;
		forked[i] = forked[--nforked];
		if (ctl >= 0) {
			char msg[9];
			int32_t p = pid, st = status;
			msg[0] = 'X';
			memcpy(msg + 1, &p, 4);
			memcpy(msg + 5, &st, 4);
			send_all(ctl, msg, sizeof(msg));
		}
	}
}

static void __attribute__((noreturn)) reaper(void)
{
	sigset_t all;
	struct rlimit core = {0, 0};
	int ctl = SOCK_FD;

	setrlimit(RLIMIT_CORE, &core);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	/* Inherited descriptors have no business here; fd 3 is the shim's. */
	close_from(SOCK_FD + 1);
	int sigfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fcntl(ctl, F_SETFD, FD_CLOEXEC) < 0 || send_all(ctl, "C1", 2) < 0) {
		close(ctl);
		ctl = -1;
	}
	for (;;) {
		struct pollfd pfd[2] = {{.fd = sigfd, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
		if (sigfd < 0) {
			/* No signalfd (cannot happen short of ENOMEM): poll for children. */
			poll(pfd + 1, ctl >= 0, 100);
			reap(ctl);
			if (ctl >= 0 && (pfd[1].revents & POLLIN) && control(ctl, sigfd) < 0) {
				close(ctl);
				ctl = -1;
			}
			continue;
		}
		if (poll(pfd, ctl >= 0 ? 2 : 1, -1) < 0)
			continue;
		if (pfd[0].revents & (POLLNVAL | POLLERR)) {
			sigfd = -1;
			continue;
		}
		if (pfd[0].revents & POLLIN) {
			struct signalfd_siginfo si[16];
			while (read(sigfd, si, sizeof(si)) > 0)
				;
			reap(ctl);
		}
		if (ctl >= 0 && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) && control(ctl, sigfd) < 0) {
			close(ctl);
			ctl = -1;
		}
	}
}

/* install_seccomp installs the program on SECCOMP_FD, or exits 126. */
static void install_seccomp(void)
{
	/* u32 flags, then the filter. */
	static char buf[4 + BPF_MAX_INSNS * sizeof(struct sock_filter) + 1];
	size_t got = 0;
	for (;;) {
		ssize_t n = read(SECCOMP_FD, buf + got, sizeof(buf) - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "sandbox-reaper: read seccomp program: %s\n", strerror(errno));
			_exit(126);
		}
		if (n == 0)
			break;
		got += n;
		if (got == sizeof(buf)) {
			fprintf(stderr, "sandbox-reaper: seccomp program over %d instructions\n", BPF_MAX_INSNS);
			_exit(126);
		}
	}
	close(SECCOMP_FD);
	if (got < 4 + sizeof(struct sock_filter) || (got - 4) % sizeof(struct sock_filter) != 0) {
		fprintf(stderr, "sandbox-reaper: seccomp program of %zu bytes\n", got);
		_exit(126);
	}
	uint32_t flags;
	memcpy(&flags, buf, 4);
	static struct sock_filter filter[BPF_MAX_INSNS];
	memcpy(filter, buf + 4, got - 4);
	struct sock_fprog prog = {.len = (got - 4) / sizeof(struct sock_filter), .filter = filter};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) < 0) {
		fprintf(stderr, "sandbox-reaper: install seccomp program: %s\n", strerror(errno));
		_exit(126);
	}
}

int main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], WAITER_ARG) == 0)
		return wait_exec();
	if ((argc == 2 || (argc == 3 && strcmp(argv[2], SECCOMP_ARG) == 0)) && strcmp(argv[1], REAPER_ARG) == 0) {
		if (argc == 3)
			install_seccomp();
		/* ps shows pid 1 as the reaper; a forked waiter rewrites the
		 * area to show itself as one. */
		arg_area = argv[1];
		arg_len = strlen(argv[argc - 1]) + (argv[argc - 1] - argv[1]);
		memset(arg_area, 0, arg_len);
		reaper();
	}
	fprintf(stderr, "sandbox-reaper: unknown arguments (a shim of another version?)\n");
	return 127;
}
