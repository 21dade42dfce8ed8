// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * Large buffers of varied sizes, allocated, filled and freed over and over
 * (a compressor's windows, a server's request bodies, a decoder's frames):
 * the path of requests above an allocator's size classes.
 *
 *   buffers ROUNDS [LIVE [MIN_SIZE [MAX_SIZE [SEED]]]]
 *
 * LIVE buffers (default 16) stay allocated; each round frees one chosen at
 * random, after checking its contents, and allocates another of a random
 * size from MIN_SIZE to MAX_SIZE bytes (default 136 KiB to 1 MiB), whose
 * every byte it writes, as a program fills the buffer it asked for. The
 * line printed on stdout depends only on the arguments; the time and the
 * buffers per second go to stderr.
 *
 * Exit status: 0 on success, 1 on a content mismatch or allocation
 * failure, 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct buffer {
	uint64_t *words;
	size_t size;
	uint64_t key;
};

/* Every word of the buffer: its key plus its index; a tail shorter than a
 * word is the key's low bytes. */
static void fill(const struct buffer *b)
{
	size_t n = b->size / 8;
	for (size_t i = 0; i < n; i++)
		b->words[i] = b->key + i;
	memcpy((unsigned char *)b->words + n * 8, &b->key, b->size % 8);
}

static int intact(const struct buffer *b)
{
	size_t n = b->size / 8;
	for (size_t i = 0; i < n; i++)
		if (b->words[i] != b->key + i)
			return 0;
	return memcmp((unsigned char *)b->words + n * 8, &b->key, b->size % 8) == 0;
}

static unsigned long parse(const char *what, const char *s, unsigned long min, unsigned long max)
{
	char *end;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "buffers: %s must be a whole number from %lu to %lu, got '%s'\n", what,
			min, max, s);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 6) {
		fprintf(stderr,
			"usage: %s ROUNDS [LIVE [MIN_SIZE [MAX_SIZE [SEED]]]]\n  e.g. %s 20000 16 139264 "
			"1048576\n",
			argv[0], argv[0]);
		return 2;
	}
	unsigned long rounds = parse("ROUNDS", argv[1], 1, 1UL << 40);
	unsigned long live = argc > 2 ? parse("LIVE", argv[2], 1, 1UL << 20) : 16;
	size_t lo = argc > 3 ? parse("MIN_SIZE", argv[3], 1, 1UL << 32) : 136 << 10;
	size_t hi = argc > 4 ? parse("MAX_SIZE", argv[4], lo, 1UL << 32) : 1 << 20;
	uint64_t seed = argc > 5 ? parse("SEED", argv[5], 0, UINT64_MAX >> 1) : 1;
	struct buffer *bufs = calloc(live, sizeof(*bufs));
	if (bufs == NULL) {
		fprintf(stderr, "buffers: cannot allocate %lu buffer records\n", live);
		return 1;
	}
	uint64_t s = seed, sum = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (unsigned long r = 0; r < rounds + live; r++) {
		/* The first LIVE rounds fill the slots in turn; then a random one. */
		struct buffer *b = &bufs[r < live ? r : next(&s) % live];
		if (b->words != NULL) {
			if (!intact(b)) {
				fprintf(stderr,
					"buffers: a buffer of %zu bytes was overwritten: the allocator handed out "
					"overlapping memory or corrupted a live block\n",
					b->size);
				return 1;
			}
			sum ^= b->key + b->size;
			free(b->words);
		}
		b->size = lo + next(&s) % (hi - lo + 1);
		b->key = next(&s);
		b->words = malloc(b->size);
		if (b->words == NULL) {
			fprintf(stderr, "buffers: malloc(%zu) failed: %s\n", b->size, strerror(errno));
			return 1;
		}
		fill(b);
	}
	for (unsigned long i = 0; i < live; i++) {
		if (!intact(&bufs[i])) {
			fprintf(stderr, "buffers: a buffer was overwritten\n");
			return 1;
		}
		sum ^= bufs[i].key + bufs[i].size;
		free(bufs[i].words);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	free(bufs);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("buffers ok: %lu rounds, %lu live of %zu to %zu bytes, digest %016" PRIx64 "\n", rounds,
	       live, lo, hi, sum);
	fprintf(stderr, "buffers: %.3f s, %.0f buffers/s\n", secs, (double)rounds / secs);
	return 0;
}
