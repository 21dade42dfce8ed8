/*
 * The hostile places of a malloc, run under LD_PRELOAD of
 * libslabscope_malloc.so (or linked with -lslabscope_malloc) by
 * malloc/tests/hostile.rs. Each check prints "ok <name>" or "FAIL <name>:
 * <why>" and the program exits 1 on any failure. With an argument it runs
 * one scenario that must abort instead (see main).
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;

#define CHECK(name, cond, ...)                                  \
	do {                                                    \
		if (cond) {                                     \
			printf("ok %s\n", name);                \
		} else {                                        \
			printf("FAIL %s: ", name);              \
			printf(__VA_ARGS__);                    \
			printf("\n");                           \
			failures++;                             \
		}                                               \
	} while (0)

/* Allocated by a constructor, before main, and by a thread it started. */
static char *before_main;
static void *thread_before_main;

static void *ctor_thread(void *arg)
{
	(void)arg;
	char *p = malloc(333);
	memset(p, 'T', 333);
	return p;
}

__attribute__((constructor)) static void early(void)
{
	before_main = strdup("allocated in a constructor");
	pthread_t t;
	if (pthread_create(&t, NULL, ctor_thread, NULL) == 0)
		pthread_join(t, &thread_before_main);
}

static void fill(unsigned char *p, size_t n, unsigned char seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i);
}

static int intact(const unsigned char *p, size_t n, unsigned char seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i))
			return 0;
	return 1;
}

static long rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
		return -1;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

#define OBJS 4000
static void *handed[OBJS];

static void *make(void *arg)
{
	(void)arg;
	for (int i = 0; i < OBJS; i++) {
		handed[i] = malloc((size_t)(i % 900) + 1);
		fill(handed[i], (size_t)(i % 900) + 1, (unsigned char)i);
	}
	/* The thread exits with every object still out. */
	return NULL;
}

static void *churn(void *arg)
{
	(void)arg;
	for (int i = 0; i < 20000; i++) {
		void *p = malloc((size_t)(i % 3000));
		free(p);
	}
	return NULL;
}

static void edges(void)
{
	/* Served by slabscope, not glibc: 8 bytes come from kmem_alloc_16
	 * (glibc's smallest chunk holds 24). */
	void *probe = malloc(8);
	CHECK("preloaded", malloc_usable_size(probe) == 16,
	    "usable size %zu", malloc_usable_size(probe));
	free(probe);

	CHECK("constructor", before_main &&
	    strcmp(before_main, "allocated in a constructor") == 0, "%p",
	    (void *)before_main);
	free(before_main);
	int t_ok = thread_before_main != NULL;
	for (int i = 0; t_ok && i < 333; i++)
		t_ok = ((char *)thread_before_main)[i] == 'T';
	CHECK("thread_before_main", t_ok, "%p", thread_before_main);
	free(thread_before_main);

	void *(*dl_malloc)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "malloc");
	void *d = dl_malloc ? dl_malloc(3) : NULL;
	CHECK("dlsym", d && malloc_usable_size(d) == 16, "%p", d);
	free(d);

	void *z1 = malloc(0), *z2 = malloc(0);
	CHECK("malloc0", z1 && z2 && z1 != z2, "%p %p", z1, z2);
	free(z1);
	free(z2);
	free(NULL);

	unsigned char *r = realloc(NULL, 40);
	CHECK("realloc_from_null", r != NULL, "NULL");
	fill(r, 40, 1);
	r = realloc(r, 100000);
	CHECK("realloc_grow", r && intact(r, 40, 1), "%p", (void *)r);
	fill(r, 100000, 2);
	r = realloc(r, 3000000);
	CHECK("realloc_grow_large", r && intact(r, 100000, 2), "%p", (void *)r);
	r = realloc(r, 20);
	CHECK("realloc_shrink", r && intact(r, 20, 2), "%p", (void *)r);
	errno = 0;
	void *r0 = realloc(r, 0);
	CHECK("realloc_to_0", r0 == NULL, "%p", r0);

	/* volatile: the compiler must not see the sizes are absurd. */
	volatile size_t half = SIZE_MAX / 2, quarter = SIZE_MAX / 4;
	volatile size_t absurd = SIZE_MAX - 4096, huge = (size_t)1 << 50;
	errno = 0;
	void *o = calloc(half, 3);
	CHECK("calloc_overflow", o == NULL && errno == ENOMEM, "%p errno %d", o, errno);
	void *keep = malloc(10);
	errno = 0;
	o = reallocarray(keep, quarter, 8);
	CHECK("reallocarray_overflow", o == NULL && errno == ENOMEM, "%p errno %d", o,
	    errno);
	/* A failed reallocarray leaves the block allocated. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
	free(keep);
#pragma GCC diagnostic pop
	errno = 0;
	o = malloc(absurd);
	CHECK("absurd_size", o == NULL && errno == ENOMEM, "%p errno %d", o, errno);
	errno = 0;
	o = malloc(huge);
	CHECK("beyond_address_space", o == NULL && errno == ENOMEM, "%p errno %d", o,
	    errno);

	int al_ok = 1;
	for (size_t align = sizeof(void *); align <= ((size_t)1 << 21); align <<= 1) {
		size_t sizes[] = {1, 100, 5000, 300000};
		for (int i = 0; i < 4; i++) {
			void *p = NULL;
			if (posix_memalign(&p, align, sizes[i]) != 0 ||
			    (uintptr_t)p % align != 0 ||
			    malloc_usable_size(p) < sizes[i]) {
				printf("  posix_memalign(%zu, %zu) = %p\n", align, sizes[i], p);
				al_ok = 0;
			}
			if (p)
				memset(p, 0x5a, sizes[i]);
			free(p);
			p = aligned_alloc(align, sizes[i]);
			al_ok &= p && (uintptr_t)p % align == 0;
			free(p);
			p = memalign(align, sizes[i]);
			al_ok &= p && (uintptr_t)p % align == 0;
			free(p);
		}
	}
	CHECK("alignments", al_ok, "see above");
	long page = sysconf(_SC_PAGESIZE);
	void *v = valloc(10), *pv = pvalloc(10);
	CHECK("valloc_pvalloc", v && pv && (uintptr_t)v % page == 0 &&
	    (uintptr_t)pv % page == 0 && malloc_usable_size(pv) >= (size_t)page,
	    "%p %p", v, pv);
	free(v);
	free(pv);
	void *bad = (void *)1;
	CHECK("posix_memalign_einval", posix_memalign(&bad, 24, 8) == EINVAL &&
	    bad == (void *)1, "%p", bad);
	errno = 0;
	CHECK("aligned_alloc_einval", aligned_alloc(24, 8) == NULL && errno == EINVAL,
	    "errno %d", errno);

	/* calloc of fresh pages does not touch them: 1 GiB, little RSS. */
	long before = rss_kb();
	unsigned char *big = calloc(1, (size_t)1 << 30);
	long after = rss_kb();
	int zero = big != NULL;
	for (size_t i = 0; zero && i < ((size_t)1 << 30); i += 1 << 20)
		zero = big[i] == 0;
	CHECK("calloc_fresh_pages_untouched", zero && after - before < 16 * 1024,
	    "%p rss grew %ld KiB", (void *)big, after - before);
	free(big);
	unsigned char *dirty = malloc(4000);
	memset(dirty, 0xff, 4000);
	free(dirty);
	unsigned char *c = calloc(4000, 1);
	int cz = c != NULL;
	for (int i = 0; cz && i < 4000; i++)
		cz = c[i] == 0;
	CHECK("calloc_reused_zeroed", cz, "%p", (void *)c);
	free(c);
}

static void threads(void)
{
	pthread_t t;
	pthread_create(&t, NULL, make, NULL);
	pthread_join(t, NULL);
	int ok = 1;
	for (int i = 0; i < OBJS; i++) {
		ok &= intact(handed[i], (size_t)(i % 900) + 1, (unsigned char)i);
		free(handed[i]); /* freed on another thread */
	}
	CHECK("remote_free_after_thread_exit", ok, "corrupted");

	pthread_t ts[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&ts[i], NULL, churn, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(ts[i], NULL);
	CHECK("threads_churn", 1, "%s", "never");
}

static void forks(void)
{
	pthread_t t;
	pthread_create(&t, NULL, churn, NULL);
	int ok = 1;
	for (int i = 0; i < 20; i++) {
		pid_t pid = fork();
		if (pid == 0) {
			char *s[200];
			for (int j = 0; j < 200; j++) {
				s[j] = malloc((size_t)j * 13 + 1);
				fill((unsigned char *)s[j], (size_t)j * 13 + 1, (unsigned char)j);
			}
			int good = 1;
			for (int j = 0; j < 200; j++) {
				good &= intact((unsigned char *)s[j], (size_t)j * 13 + 1,
				    (unsigned char)j);
				free(s[j]);
			}
			_exit(good ? 0 : 1);
		}
		int status = 0;
		ok &= pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
		    WEXITSTATUS(status) == 0;
	}
	pthread_join(t, NULL);
	CHECK("fork", ok, "a child failed");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "hello") == 0) {
		char *s = strdup("hello");
		printf("%s\n", s);
		free(s);
		return 0;
	}
	if (argc > 1) {
		/* Scenarios that must abort with a message naming the pointer. */
		void *p = NULL;
		if (strcmp(argv[1], "foreign") == 0) {
			/* Memory of "another allocator": a mapping of its own. */
			char *m = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			p = m + 64;
		} else if (strcmp(argv[1], "double") == 0) {
			p = malloc(48);
			free(p);
		} else if (strcmp(argv[1], "interior") == 0) {
			p = (char *)malloc(500) + 32;
		} else if (strcmp(argv[1], "interior_small") == 0) {
			p = (char *)malloc(64) + 16;
		}
		printf("PTR=%p\n", p);
		fflush(stdout);
		free(p);
		printf("survived\n");
		return 0;
	}
	edges();
	threads();
	forks();
	printf("failures=%d\n", failures);
	return failures ? 1 : 0;
}
