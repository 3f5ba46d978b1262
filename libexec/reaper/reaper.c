/*
 * sandbox-reaper: pid 1 of a sandbox's workspace PID namespace.
 *
 * It only reaps orphans. Every signal is blocked and consumed with
 * sigwaitinfo, never handled: the kernel drops SIGKILL/SIGSTOP sent to a
 * namespace init from inside, and anything else user code sends is
 * dequeued and ignored, so `kill -9 -1`, `kill -TERM 1` and friends leave
 * the workspace standing. Written in C and linked statically so it runs in
 * any rootfs and holds no runtime that installs its own handlers.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	sigset_t all;
	struct rlimit core = {0, 0};

	setrlimit(RLIMIT_CORE, &core);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	/* Inherited descriptors have no business here. */
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	for (;;) {
		siginfo_t info;
		if (sigwaitinfo(&all, &info) < 0)
			continue;
		if (info.si_signo == SIGCHLD)
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
	}
}
