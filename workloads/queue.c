// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * A producer and a consumer: one thread allocates blocks and passes them
 * through a ring to another thread, which checks and frees them, so every
 * block is freed on another thread than the one that allocated it (a work
 * queue, a logger, a pipeline stage).
 *
 *   queue BLOCKS [SIZE [RING]]
 *
 * The producer allocates BLOCKS blocks of SIZE bytes (default 100; at
 * least 16), writes a key derived from the block's number into its first
 * and last 8 bytes, and puts it in a ring of RING slots (default 1024)
 * that the consumer empties: it checks both keys and frees the block. The
 * line printed on stdout depends only on the arguments; the time and the
 * blocks per second go to stderr.
 *
 * Exit status: 0 on success, 1 on a content mismatch or allocation failure,
 * 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long blocks, ring_slots;
static size_t size;
static unsigned char **ring;
/* Blocks put in the ring, and blocks taken out, so far: each on a cache
 * line of its own, as each is written by one thread and read by the other. */
static _Alignas(64) _Atomic unsigned long produced;
static _Alignas(64) _Atomic unsigned long consumed;

/* Waits for the other thread: spins a little, then yields, so that a
 * busy machine does not leave the other thread waiting behind a spinner. */
static void pause_a_little(unsigned *spins)
{
	if (++*spins % 64 == 0)
		sched_yield();
}

static uint64_t key(unsigned long n)
{
	uint64_t x = n + 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void *producer(void *arg)
{
	unsigned spins = 0;
	for (unsigned long n = 0; n < blocks; n++) {
		while (n - atomic_load_explicit(&consumed, memory_order_acquire) >= ring_slots)
			pause_a_little(&spins);
		unsigned char *p = malloc(size);
		if (p == NULL) {
			fprintf(stderr, "queue: malloc(%zu) failed: %s\n", size, strerror(errno));
			exit(1);
		}
		uint64_t k = key(n);
		memcpy(p, &k, 8);
		memcpy(p + size - 8, &k, 8);
		ring[n % ring_slots] = p;
		atomic_store_explicit(&produced, n + 1, memory_order_release);
	}
	return arg;
}

static void *consumer(void *arg)
{
	uint64_t *sum = arg;
	unsigned spins = 0;
	for (unsigned long n = 0; n < blocks; n++) {
		while (atomic_load_explicit(&produced, memory_order_acquire) == n)
			pause_a_little(&spins);
		unsigned char *p = ring[n % ring_slots];
		uint64_t a, b;
		memcpy(&a, p, 8);
		memcpy(&b, p + size - 8, 8);
		if (a != key(n) || b != key(n)) {
			fprintf(stderr,
				"queue: block %lu was overwritten: the allocator handed out overlapping memory or "
				"corrupted a live block\n",
				n);
			exit(1);
		}
		*sum ^= a;
		free(p);
		atomic_store_explicit(&consumed, n + 1, memory_order_release);
	}
	return NULL;
}

static unsigned long parse(const char *what, const char *s, unsigned long min, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "queue: %s must be a whole number from %lu to %lu, got '%s'\n", what, min, max, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 4) {
		fprintf(stderr, "usage: %s BLOCKS [SIZE [RING]]\n  e.g. %s 5000000 100\n", argv[0], argv[0]);
		return 2;
	}
	blocks = parse("BLOCKS", argv[1], 1, 1UL << 40);
	size = argc > 2 ? parse("SIZE", argv[2], 16, 1UL << 30) : 100;
	ring_slots = argc > 3 ? parse("RING", argv[3], 1, 1UL << 24) : 1024;
	ring = calloc(ring_slots, sizeof(*ring));
	if (ring == NULL) {
		fprintf(stderr, "queue: cannot allocate a ring of %lu slots\n", ring_slots);
		return 1;
	}
	uint64_t sum = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pthread_t p, c;
	int err = pthread_create(&c, NULL, consumer, &sum);
	if (err == 0)
		err = pthread_create(&p, NULL, producer, NULL);
	if (err != 0) {
		fprintf(stderr, "queue: pthread_create: %s\n", strerror(err));
		return 1;
	}
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(ring);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("queue ok: %lu blocks of %zu bytes, digest %016" PRIx64 "\n", blocks, size, sum);
	fprintf(stderr, "queue: %.3f s, %.0f blocks/s\n", secs, (double)blocks / secs);
	return 0;
}
