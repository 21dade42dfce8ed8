/*
 * A single-threaded program on the library: allocates and frees blocks of
 * many sizes for 1.5 s (past a statistics interval, so the deferred
 * publisher has run from its slow paths), forks children that allocate
 * and free with blocks of the parent's still live (the fork handlers do
 * nothing in a single-threaded process), then prints how many threads
 * it has and tries unshare(CLONE_NEWUSER), which the kernel refuses with
 * EINVAL in a multithreaded process. Driven by malloc/tests/hostile.rs.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static int threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	int n = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Threads:", 8) == 0)
			n = atoi(line + 8);
	fclose(f);
	return n;
}

int main(void)
{
	static void *keep[1000];
	struct timespec t0;
	unsigned long round = 0;
	/* A hang (a child finding a lock held) fails the test, not CI. */
	alarm(60);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (int i = 0; i < 1000; i++) {
			free(keep[i]);
			keep[i] = malloc(16 + (round * 7 + i) % 4000);
			if (!keep[i])
				return 2;
			memset(keep[i], i, 16);
		}
		round++;
	} while (elapsed_ms(&t0) < 1500);
	for (int f = 0; f < 20; f++) {
		pid_t pid = fork();
		if (pid < 0)
			return 3;
		if (pid == 0) {
			/* The parent's blocks, freed here, and new ones. */
			for (int i = f; i < 1000; i += 20)
				free(keep[i]);
			for (int i = 0; i < 2000; i++) {
				char *p = malloc(16 + (i * 13) % 5000);
				if (!p)
					_exit(4);
				memset(p, f, 16);
				free(p);
			}
			_exit(0);
		}
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			printf("fork %d: child failed (status %#x)\n", f, status);
			return 5;
		}
	}
	printf("forks ok\n");
	for (int i = 0; i < 1000; i++)
		free(keep[i]);
	printf("threads %d\n", threads());
	if (unshare(CLONE_NEWUSER) == 0)
		printf("unshare ok\n");
	else
		printf("unshare %s\n", strerror(errno));
	return 0;
}
