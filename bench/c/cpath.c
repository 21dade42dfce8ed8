// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The C path: allocators called the way a C program calls them, through
 * shared libraries loaded with dlopen and function pointers. slabscope is
 * called through libslabscope.so's kmem_cache_alloc / kmem_cache_free, each
 * peer through its own malloc / free (glibc's, libjemalloc.so.2's, ...).
 * Built with gcc and run by slabscope-bench (bench/src/cpath.rs).
 *
 *   cpath CPU SIZE LIVE ORDER RUNS TARGET_NS NAME=API:LIBRARY...
 *
 * SIZE is a byte count, or LO-HI for random sizes from LO to HI bytes (one
 * seeded sequence, the same for every contender; slot i of a round always
 * gets the sequence's size i, so the class changes from one call to the
 * next as a program's does; malloc contenders only, a cache has one size).
 * ORDER is lifo or random (the Rust bench's free orders, same permutation),
 * API is cache (kmem_cache_create / _alloc / _free of the library) or malloc
 * (its malloc / free). Each round allocates LIVE objects, writes one byte of
 * each and frees them in ORDER. Each contender's round count is calibrated
 * to last about TARGET_NS; then RUNS runs interleave the contenders, each
 * run starting with a different one. Output, one line each:
 *   sample NAME NS_PER_OP      (one per run and contender)
 *   missing NAME REASON        (a library that did not load)
 * Exit status 2 on bad arguments, 1 on an allocation failure.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CONTENDERS 16

typedef void *(*cache_create_fn)(const char *, size_t, size_t, void *, void *, void *, void *, void *,
				 int);
typedef void *(*cache_alloc_fn)(void *, int);
typedef void (*cache_free_fn)(void *, void *);
typedef int (*cache_destroy_fn)(void *);
typedef void *(*malloc_fn)(size_t);
typedef void (*free_fn)(void *);

struct contender {
	const char *name;
	int is_cache;
	void *cache;
	cache_alloc_fn cache_alloc;
	cache_free_fn cache_free;
	cache_destroy_fn cache_destroy;
	malloc_fn malloc;
	free_fn free;
	uint64_t rounds;
};

static size_t size, size_hi, live;
/* The random sizes of SIZE LO-HI, one per slot (NULL for one size). */
static size_t *sizes;
static uint32_t *order;
static void **slots;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void oom(const struct contender *c)
{
	fprintf(stderr, "cpath: %s could not allocate %zu bytes\n", c->name, size);
	exit(1);
}

/* One live object: allocate, write a byte, free. The loops are written
 * out per API so each call is one indirect call, as a C program's would be. */
static __attribute__((noinline)) void cache_rounds(const struct contender *c, uint64_t rounds)
{
	void *cache = c->cache;
	cache_alloc_fn alloc = c->cache_alloc;
	cache_free_fn release = c->cache_free;
	if (live == 1) {
		for (uint64_t r = 0; r < rounds; r++) {
			volatile unsigned char *p = alloc(cache, 0);
			if (p == NULL)
				oom(c);
			*p = (unsigned char)r;
			release(cache, (void *)p);
		}
		return;
	}
	for (uint64_t r = 0; r < rounds; r++) {
		for (size_t i = 0; i < live; i++) {
			volatile unsigned char *p = alloc(cache, 0);
			if (p == NULL)
				oom(c);
			*p = (unsigned char)r;
			slots[i] = (void *)p;
		}
		for (size_t i = 0; i < live; i++)
			release(cache, slots[order[i]]);
	}
}

static __attribute__((noinline)) void malloc_rounds(const struct contender *c, uint64_t rounds)
{
	malloc_fn alloc = c->malloc;
	free_fn release = c->free;
	size_t n = size;
	if (live == 1) {
		for (uint64_t r = 0; r < rounds; r++) {
			volatile unsigned char *p = alloc(n);
			if (p == NULL)
				oom(c);
			*p = (unsigned char)r;
			release((void *)p);
		}
		return;
	}
	for (uint64_t r = 0; r < rounds; r++) {
		for (size_t i = 0; i < live; i++) {
			volatile unsigned char *p = alloc(sizes ? sizes[i] : n);
			if (p == NULL)
				oom(c);
			*p = (unsigned char)r;
			slots[i] = (void *)p;
		}
		for (size_t i = 0; i < live; i++)
			release(slots[order[i]]);
	}
}

static uint64_t measure(const struct contender *c, uint64_t rounds)
{
	uint64_t t0 = now_ns();
	if (c->is_cache)
		cache_rounds(c, rounds);
	else
		malloc_rounds(c, rounds);
	return now_ns() - t0;
}

/* Rounds that make one measurement last about target_ns (as the Rust
 * bench's calibrate: grow by 4 until an eighth of the target, then scale). */
static uint64_t calibrate(const struct contender *c, uint64_t target_ns)
{
	uint64_t rounds = 1;
	for (;;) {
		uint64_t d = measure(c, rounds);
		if (d >= target_ns / 8 || rounds >= (1ull << 40)) {
			double scaled = (double)rounds * (double)target_ns / (double)(d ? d : 1);
			return scaled < 1 ? 1 : (uint64_t)scaled;
		}
		rounds *= 4;
	}
}

/* xorshift64* and the Fisher-Yates shuffle of bench/src/measure.rs's
 * free_order, so both paths free in the same order. */
static uint64_t rng_state;
static uint64_t rng_next(void)
{
	uint64_t x = rng_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545F4914F6CDD1DULL;
}

static size_t rng_below(size_t n)
{
	return (size_t)((((rng_next() >> 32) * (uint64_t)n)) >> 32);
}

static unsigned long parse(const char *what, const char *s, unsigned long min, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "cpath: %s must be a whole number from %lu to %lu, got '%s'\n", what, min, max,
			s);
		exit(2);
	}
	return v;
}

static void *need(void *handle, const char *lib, const char *sym, char *why, size_t len)
{
	void *p = dlsym(handle, sym);
	if (p == NULL && why[0] == '\0')
		snprintf(why, len, "%s has no symbol %s", lib, sym);
	return p;
}

/* Load one NAME=API:LIBRARY; 0 and a reason in why when it cannot be used. */
static int load(struct contender *c, char *spec, char *why, size_t len)
{
	char *eq = strchr(spec, '=');
	char *colon = eq ? strchr(eq + 1, ':') : NULL;
	if (eq == NULL || colon == NULL) {
		fprintf(stderr, "cpath: contender '%s' is not NAME=API:LIBRARY\n", spec);
		exit(2);
	}
	*eq = '\0';
	*colon = '\0';
	c->name = spec;
	const char *api = eq + 1, *lib = colon + 1;
	if (strcmp(api, "cache") == 0)
		c->is_cache = 1;
	else if (strcmp(api, "malloc") != 0) {
		fprintf(stderr, "cpath: contender %s: API must be cache or malloc, got '%s'\n", spec, api);
		exit(2);
	}
	why[0] = '\0';
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		snprintf(why, len, "dlopen: %s", dlerror());
		return 0;
	}
	if (c->is_cache && sizes != NULL) {
		fprintf(stderr, "cpath: contender %s: a cache has one object size; SIZE LO-HI is for malloc contenders\n",
			spec);
		exit(2);
	}
	if (c->is_cache) {
		cache_create_fn create = (cache_create_fn)need(h, lib, "kmem_cache_create", why, len);
		c->cache_alloc = (cache_alloc_fn)need(h, lib, "kmem_cache_alloc", why, len);
		c->cache_free = (cache_free_fn)need(h, lib, "kmem_cache_free", why, len);
		c->cache_destroy = (cache_destroy_fn)need(h, lib, "kmem_cache_destroy", why, len);
		if (why[0])
			return 0;
		char name[64];
		snprintf(name, sizeof(name), "cpath_%zu", size);
		c->cache = create(name, size, 0, NULL, NULL, NULL, NULL, NULL, 0);
		if (c->cache == NULL) {
			snprintf(why, len, "kmem_cache_create(%s, %zu) failed", name, size);
			return 0;
		}
	} else {
		c->malloc = (malloc_fn)need(h, lib, "malloc", why, len);
		c->free = (free_fn)need(h, lib, "free", why, len);
		if (why[0])
			return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	if (argc < 8) {
		fprintf(stderr, "usage: %s CPU SIZE LIVE ORDER RUNS TARGET_NS NAME=API:LIBRARY...\n", argv[0]);
		return 2;
	}
	unsigned long cpu = parse("CPU", argv[1], 0, CPU_SETSIZE - 1);
	char *dash = strchr(argv[2], '-');
	if (dash != NULL) {
		*dash = '\0';
		size = parse("SIZE's LO", argv[2], 1, 1ul << 30);
		size_hi = parse("SIZE's HI", dash + 1, size, 1ul << 30);
	} else {
		size = size_hi = parse("SIZE", argv[2], 1, 1ul << 30);
	}
	live = parse("LIVE", argv[3], 1, 1ul << 24);
	if (size_hi > size && live < 2) {
		fprintf(stderr, "cpath: random sizes (SIZE LO-HI) need LIVE of 2 or more\n");
		return 2;
	}
	int random_order = strcmp(argv[4], "random") == 0;
	if (!random_order && strcmp(argv[4], "lifo") != 0) {
		fprintf(stderr, "cpath: ORDER must be lifo or random, got '%s'\n", argv[4]);
		return 2;
	}
	unsigned long runs = parse("RUNS", argv[5], 1, 1000);
	unsigned long target = parse("TARGET_NS", argv[6], 1, 60000000000ul);
	if (argc - 7 > MAX_CONTENDERS) {
		fprintf(stderr, "cpath: at most %d contenders\n", MAX_CONTENDERS);
		return 2;
	}

	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		fprintf(stderr, "cpath: pinning to CPU %lu: %s\n", cpu, strerror(errno));
		return 1;
	}

	order = calloc(live, sizeof(*order));
	slots = calloc(live, sizeof(*slots));
	if (order == NULL || slots == NULL) {
		fprintf(stderr, "cpath: cannot allocate the order of %zu objects\n", live);
		return 1;
	}
	for (size_t i = 0; i < live; i++)
		order[i] = (uint32_t)(live - 1 - i);
	if (size_hi > size) {
		sizes = calloc(live, sizeof(*sizes));
		if (sizes == NULL) {
			fprintf(stderr, "cpath: cannot allocate the sizes of %zu objects\n", live);
			return 1;
		}
		rng_state = 0x51a55c0fe5eed5ULL | 1;
		for (size_t i = 0; i < live; i++)
			sizes[i] = size + rng_below(size_hi - size + 1);
	}
	if (random_order) {
		rng_state = (0x5eed0f5ab5c09e00ULL ^ (uint64_t)live) | 1;
		for (size_t i = live - 1; i >= 1; i--) {
			size_t j = rng_below(i + 1);
			uint32_t t = order[i];
			order[i] = order[j];
			order[j] = t;
		}
	}

	struct contender cs[MAX_CONTENDERS];
	size_t n = 0;
	for (int a = 7; a < argc; a++) {
		char why[512];
		memset(&cs[n], 0, sizeof(cs[n]));
		if (load(&cs[n], argv[a], why, sizeof(why)))
			n++;
		else
			printf("missing %s %s\n", cs[n].name, why);
	}
	/* Warm up first: a cold contender's first round maps memory (slabscope
	 * waits for its grow worker), which would make calibration choose a
	 * handful of rounds and the samples measure the clock. */
	for (size_t i = 0; i < n; i++) {
		measure(&cs[i], 1 + 100000 / live);
		cs[i].rounds = calibrate(&cs[i], target);
	}
	for (unsigned long run = 0; run < runs; run++) {
		for (size_t j = 0; j < n; j++) {
			struct contender *c = &cs[(j + run) % n];
			uint64_t d = measure(c, c->rounds);
			printf("sample %s %.4f\n", c->name, (double)d / (double)(c->rounds * live * 2));
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (cs[i].is_cache)
			cs[i].cache_destroy(cs[i].cache);
	}
	return 0;
}
