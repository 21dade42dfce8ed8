/* The first fork of a process whose small size classes have empty
 * magazines: slabscope's fork handler must not allocate through malloc
 * while it holds the caches' locks (a thread-local's first use registers
 * its destructor with calloc). Before the fix this hung in the parent. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
	FILE *f = fopen("/proc/self/stat", "r");
	char buf[64];

	if (f == NULL || fgets(buf, sizeof buf, f) == NULL) {
		perror("fopen /proc/self/stat");
		return 1;
	}
	fclose(f);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		return 1;
	}
	if (pid == 0) {
		void *p = malloc(100);
		free(p);
		_exit(p == NULL ? 1 : 0);
	}
	int status;
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
	    WEXITSTATUS(status) != 0) {
		printf("FAIL child status %d\n", status);
		return 1;
	}
	printf("ok fork_first\n");
	return 0;
}
