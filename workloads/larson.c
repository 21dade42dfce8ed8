// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A larson-style malloc workload: THREADS threads replace objects of random
 * sizes in arrays of SLOTS slots, and the arrays move between threads every
 * round, so most objects are freed on another thread than the one that
 * allocated them (Larson and Krishnan's server benchmark, as mimalloc-bench
 * runs it).
 *
 *   larson THREADS ROUNDS OPS [SLOTS [MIN_SIZE [MAX_SIZE [SEED [MOVE]]]]]
 *
 * There are THREADS arrays. In round r, thread t works on array (t + r) mod
 * THREADS: OPS times it picks a slot, checks the object there, frees it and
 * allocates a new one of a size in [MIN_SIZE, MAX_SIZE] (defaults 1000, 8,
 * 4096, 1). Each object holds a key in every 64-byte line and in its last
 * byte, checked before it is freed. A barrier separates rounds, and every
 * random choice comes from a generator seeded by (SEED, array, round), so
 * the work, and the line printed on stdout, depend only on the arguments:
 * never on scheduling or addresses.
 *
 * With MOVE 0 (the default is 1) thread t keeps array t in every round:
 * once a thread has replaced the objects the main thread allocated, it
 * frees only objects it allocated itself. The work, and the line printed,
 * are the same as with MOVE 1, so the two times tell what the moves cost
 * an allocator apart from what its calls cost. The time and throughput go
 * to stderr.
 *
 * Exit status: 0 on success, 1 on a content mismatch or allocation failure,
 * 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct obj {
	uint64_t key;
	size_t size;
};

struct array {
	struct obj *slots;
	unsigned char **ptrs;
};

struct config {
	unsigned threads;
	unsigned long rounds;
	unsigned long ops;
	unsigned long slots;
	size_t min_size;
	size_t max_size;
	uint64_t seed;
	int move;
};

static struct config cfg;
static struct array *arrays;
static pthread_barrier_t barrier;

/* splitmix64: one step of a counter-based generator. */
static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t next(uint64_t *state)
{
	*state += 0x9e3779b97f4a7c15ULL;
	return mix(*state);
}

static size_t pick_size(uint64_t *state)
{
	return cfg.min_size + (size_t)(next(state) % (cfg.max_size - cfg.min_size + 1));
}

/* The byte written at every 64th offset and at the end of an object. */
static unsigned char key_byte(uint64_t key, size_t at)
{
	return (unsigned char)(key ^ (key >> 8) ^ (at >> 6) ^ 0x5a);
}

static void fill(unsigned char *p, uint64_t key, size_t size)
{
	for (size_t at = 0; at < size; at += 64)
		p[at] = key_byte(key, at);
	p[size - 1] = key_byte(key, size - 1);
}

static void check(const unsigned char *p, uint64_t key, size_t size, unsigned long array, unsigned long slot)
{
	for (size_t at = 0; at < size; at += 64) {
		if (p[at] != key_byte(key, at))
			goto bad;
	}
	if (p[size - 1] == key_byte(key, size - 1))
		return;
bad:
	fprintf(stderr,
		"larson: object in array %lu slot %lu (%zu bytes) was overwritten: the allocator handed out "
		"overlapping memory or corrupted a live object\n",
		array, slot, size);
	exit(1);
}

static unsigned char *allocate(size_t size)
{
	unsigned char *p = malloc(size);
	if (p == NULL) {
		fprintf(stderr, "larson: malloc(%zu) failed: %s\n", size, strerror(errno));
		exit(1);
	}
	return p;
}

static void replace(struct array *a, unsigned long array, unsigned long slot, uint64_t *state)
{
	struct obj *o = &a->slots[slot];
	check(a->ptrs[slot], o->key, o->size, array, slot);
	free(a->ptrs[slot]);
	o->key = next(state);
	o->size = pick_size(state);
	a->ptrs[slot] = allocate(o->size);
	fill(a->ptrs[slot], o->key, o->size);
}

static void *worker(void *arg)
{
	unsigned t = (unsigned)(uintptr_t)arg;
	for (unsigned long r = 0; r < cfg.rounds; r++) {
		unsigned long array = cfg.move ? (t + r) % cfg.threads : t;
		struct array *a = &arrays[array];
		uint64_t state = mix(cfg.seed ^ mix(array + 1) ^ mix((r + 1) << 20));
		for (unsigned long i = 0; i < cfg.ops; i++)
			replace(a, array, next(&state) % cfg.slots, &state);
		pthread_barrier_wait(&barrier);
	}
	return NULL;
}

static unsigned long parse(const char *what, const char *s, unsigned long min, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "larson: %s must be a whole number from %lu to %lu, got '%s'\n", what, min, max, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4 || argc > 9) {
		fprintf(stderr,
			"usage: %s THREADS ROUNDS OPS [SLOTS [MIN_SIZE [MAX_SIZE [SEED [MOVE]]]]]\n"
			"  e.g. %s 2 20 100000    (2 threads, 20 rounds of 100000 replacements each)\n",
			argv[0], argv[0]);
		return 2;
	}
	cfg.threads = (unsigned)parse("THREADS", argv[1], 1, 1024);
	cfg.rounds = parse("ROUNDS", argv[2], 1, 1UL << 32);
	cfg.ops = parse("OPS", argv[3], 1, 1UL << 40);
	cfg.slots = argc > 4 ? parse("SLOTS", argv[4], 1, 1UL << 24) : 1000;
	cfg.min_size = argc > 5 ? parse("MIN_SIZE", argv[5], 1, 1UL << 30) : 8;
	cfg.max_size = argc > 6 ? parse("MAX_SIZE", argv[6], cfg.min_size, 1UL << 30) : 4096;
	cfg.seed = argc > 7 ? parse("SEED", argv[7], 0, ~0UL) : 1;
	cfg.move = argc > 8 ? (int)parse("MOVE", argv[8], 0, 1) : 1;
	if (cfg.max_size < cfg.min_size) {
		fprintf(stderr, "larson: MAX_SIZE (%zu) must be at least MIN_SIZE (%zu)\n", cfg.max_size,
			cfg.min_size);
		return 2;
	}

	arrays = calloc(cfg.threads, sizeof(*arrays));
	if (arrays == NULL) {
		fprintf(stderr, "larson: cannot allocate %u arrays\n", cfg.threads);
		return 1;
	}
	for (unsigned long a = 0; a < cfg.threads; a++) {
		uint64_t state = mix(cfg.seed ^ mix(a + 1));
		arrays[a].slots = calloc(cfg.slots, sizeof(struct obj));
		arrays[a].ptrs = calloc(cfg.slots, sizeof(unsigned char *));
		if (arrays[a].slots == NULL || arrays[a].ptrs == NULL) {
			fprintf(stderr, "larson: cannot allocate %lu slots\n", cfg.slots);
			return 1;
		}
		for (unsigned long s = 0; s < cfg.slots; s++) {
			arrays[a].slots[s].key = next(&state);
			arrays[a].slots[s].size = pick_size(&state);
			arrays[a].ptrs[s] = allocate(arrays[a].slots[s].size);
			fill(arrays[a].ptrs[s], arrays[a].slots[s].key, arrays[a].slots[s].size);
		}
	}

	int err = pthread_barrier_init(&barrier, NULL, cfg.threads);
	if (err != 0) {
		fprintf(stderr, "larson: pthread_barrier_init: %s\n", strerror(err));
		return 1;
	}
	pthread_t *tids = calloc(cfg.threads, sizeof(pthread_t));
	if (tids == NULL) {
		fprintf(stderr, "larson: cannot allocate %u thread ids\n", cfg.threads);
		return 1;
	}
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned t = 0; t < cfg.threads; t++) {
		err = pthread_create(&tids[t], NULL, worker, (void *)(uintptr_t)t);
		if (err != 0) {
			fprintf(stderr, "larson: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}
	for (unsigned t = 0; t < cfg.threads; t++)
		pthread_join(tids[t], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);

	/* Check and free everything; fold keys and sizes into the result. */
	uint64_t digest = 0, bytes = 0;
	for (unsigned long a = 0; a < cfg.threads; a++) {
		for (unsigned long s = 0; s < cfg.slots; s++) {
			struct obj *o = &arrays[a].slots[s];
			check(arrays[a].ptrs[s], o->key, o->size, a, s);
			free(arrays[a].ptrs[s]);
			digest = mix(digest ^ o->key ^ ((uint64_t)o->size << 48));
			bytes += o->size;
		}
		free(arrays[a].slots);
		free(arrays[a].ptrs);
	}
	free(arrays);
	free(tids);
	pthread_barrier_destroy(&barrier);

	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	unsigned long long total = (unsigned long long)cfg.threads * cfg.rounds * cfg.ops;
	printf("larson ok: %u threads, %lu rounds, %llu replacements, %" PRIu64 " live bytes at the end, digest %016" PRIx64 "\n",
	       cfg.threads, cfg.rounds, total, bytes, digest);
	fprintf(stderr, "larson: %.3f s, %.0f replacements/s\n", secs, (double)total / secs);
	return 0;
}
