/* The nonewprivs stand-in (Kubernetes' e2e image of that name): installed
 * setuid root, it prints the effective uid it got, 0 unless no_new_privs
 * kept the setuid bit from taking effect. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
