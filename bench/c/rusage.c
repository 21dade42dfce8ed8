// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Run a program and report its peak resident memory and wall time:
 *
 *   rusage OUTFILE [NAME=VALUE...] -- PROGRAM [ARG...]
 *
 * writes "maxrss_kib N\nwall_ns N\n" to OUTFILE and exits with the
 * program's status (128 + the signal if a signal ended it). The program
 * inherits stdin, stdout, stderr and the environment, plus each NAME=VALUE,
 * which is set in the child only: LD_PRELOAD goes there, so the allocator
 * under test runs the program and not this launcher.
 *
 * Why a launcher: a process's ru_maxrss keeps the peak of the memory it had
 * before exec, and a child forked from the benchmark starts as a copy of
 * it (tens of MiB). Forked from this small process instead, the program's
 * ru_maxrss is its own.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int prog = 2;
	while (prog < argc && strcmp(argv[prog], "--") != 0)
		prog++;
	if (prog + 1 >= argc) {
		fprintf(stderr, "usage: %s OUTFILE [NAME=VALUE...] -- PROGRAM [ARG...]\n", argv[0]);
		return 2;
	}
	for (int i = 2; i < prog; i++) {
		if (strchr(argv[i], '=') == NULL || argv[i][0] == '=') {
			fprintf(stderr, "rusage: '%s' is not NAME=VALUE\n", argv[i]);
			return 2;
		}
	}
	prog++;
	FILE *out = fopen(argv[1], "w");
	if (out == NULL) {
		fprintf(stderr, "rusage: cannot write %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "rusage: fork: %s\n", strerror(errno));
		return 2;
	}
	if (pid == 0) {
		fclose(out);
		for (int i = 2; argv[i] != NULL && strcmp(argv[i], "--") != 0; i++) {
			if (putenv(argv[i]) != 0) {
				fprintf(stderr, "rusage: setting %s: %s\n", argv[i], strerror(errno));
				_exit(127);
			}
		}
		execvp(argv[prog], argv + prog);
		fprintf(stderr, "rusage: cannot run %s: %s\n", argv[prog], strerror(errno));
		_exit(127);
	}
	int status;
	struct rusage ru;
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "rusage: wait4: %s\n", strerror(errno));
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	fprintf(out, "maxrss_kib %ld\nwall_ns %lld\n", ru.ru_maxrss, ns);
	if (fclose(out) != 0) {
		fprintf(stderr, "rusage: writing %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + WTERMSIG(status);
}
