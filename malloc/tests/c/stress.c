/*
 * Random calls of the whole malloc API, on several threads, each block
 * filled to its last usable byte and checked whenever it is touched: run
 * under LD_PRELOAD of libslabscope_malloc.so by malloc/tests/stress.rs.
 *
 *   stress SEED [STEPS]
 *
 * Each thread keeps an array of blocks and, step by step from a seeded
 * generator, allocates one (malloc, calloc, posix_memalign, aligned_alloc,
 * memalign or valloc, sizes from 0 bytes to 1 MiB, alignments to 64 KiB),
 * frees one, reallocs one (grown or shrunk, reallocarray too), checks
 * one, or hands one to another thread to check and free. A block is
 * filled with a pattern of its own over all of malloc_usable_size, as a
 * program may use it (redis does), so two blocks that overlap, a usable
 * size that reaches into a neighbour, a realloc that loses contents, a
 * calloc that is not zero, or a block changed while it is live shows as
 * a byte that differs. Prints "ok stress SEED: N calls" and exits 0, or
 * "FAIL ..." naming the block, the byte and the call, and exits 1.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define THREADS 4
#define SLOTS 256
#define MAILBOX 64

struct block {
	unsigned char *p;
	size_t req;    /* bytes asked for */
	size_t usable; /* malloc_usable_size when filled */
	size_t align;  /* alignment asked for (16: none) */
	uint32_t tag;  /* the pattern's seed */
	const char *how;
};

struct mailbox {
	pthread_mutex_t lock;
	struct block b[MAILBOX];
	int n;
};

static struct mailbox mail[THREADS];
static long steps = 50000;
static uint64_t seed;
static long calls[THREADS];

static uint64_t next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned char pattern(uint32_t tag, size_t i)
{
	return (unsigned char)(tag + i * 7 + (i >> 8));
}

static void fill(struct block *b)
{
	b->usable = malloc_usable_size(b->p);
	for (size_t i = 0; i < b->usable; i++)
		b->p[i] = pattern(b->tag, i);
}

static void fail(const struct block *b, const char *what, size_t at, const char *call)
{
	printf("FAIL stress %llu: block %p (%s of %zu bytes, alignment %zu, usable %zu, tag %u): "
	       "%s at byte %zu, after %s\n",
	       (unsigned long long)seed, (void *)b->p, b->how, b->req, b->align, b->usable, b->tag,
	       what, at, call);
	fflush(stdout);
	_exit(1);
}

/* The block as filled: its usable size unchanged and every byte its own. */
static void check(const struct block *b, const char *call)
{
	size_t u = malloc_usable_size(b->p);
	if (u != b->usable)
		fail(b, "malloc_usable_size changed", u, call);
	for (size_t i = 0; i < b->usable; i++)
		if (b->p[i] != pattern(b->tag, i))
			fail(b, "a byte differs", i, call);
}

static size_t random_size(uint64_t *s)
{
	uint64_t r = next(s);
	switch (r % 16) {
	case 0:
		return (r >> 8) % 3; /* 0 to 2 bytes */
	case 1: case 2: case 3: case 4: case 5: case 6: case 7:
		return 1 + (r >> 8) % 64;
	case 8: case 9: case 10: case 11:
		return 65 + (r >> 8) % 960;
	case 12: case 13:
		return 1025 + (r >> 8) % 15360;
	case 14:
		return 16385 + (r >> 8) % 114688; /* to the largest class */
	default:
		/* Mappings of their own, one call in 64: to 1 MiB, or 8 MiB. */
		if ((r >> 4) % 4)
			return 1025 + (r >> 8) % 15360;
		return 131073 + (r >> 8) % ((r >> 6) % 8 ? 917504 : 8257536);
	}
}

static void allocate(struct block *b, uint64_t *s, uint32_t tag)
{
	size_t n = random_size(s);
	size_t align = (size_t)16 << (next(s) % 13); /* 16 to 64 KiB */
	void *p = NULL;
	memset(b, 0, sizeof(*b));
	b->align = 16;
	switch (next(s) % 8) {
	case 0: case 1: case 2:
		b->how = "malloc";
		p = malloc(n);
		break;
	case 3: {
		size_t k = 1 + next(s) % 8;
		b->how = "calloc";
		n = (n + k - 1) / k * k;
		p = calloc(n / k, k);
		for (size_t i = 0; p && i < n; i++)
			if (((unsigned char *)p)[i] != 0) {
				b->p = p;
				b->req = n;
				fail(b, "calloc's byte is not zero", i, "calloc");
			}
		break;
	}
	case 4:
		b->how = "posix_memalign";
		b->align = align;
		if (posix_memalign(&p, align, n) != 0)
			p = NULL;
		break;
	case 5:
		b->how = "aligned_alloc";
		b->align = align;
		p = aligned_alloc(align, (n + align - 1) / align * align);
		n = (n + align - 1) / align * align;
		break;
	case 6:
		b->how = "memalign";
		b->align = align;
		p = memalign(align, n);
		break;
	default:
		b->how = "valloc";
		b->align = 4096;
		p = valloc(n);
		break;
	}
	b->p = p;
	b->req = n;
	b->tag = tag;
	if (!p)
		fail(b, "the call returned NULL", 0, b->how);
	if ((uintptr_t)p % b->align)
		fail(b, "misaligned", (uintptr_t)p % b->align, b->how);
	if (malloc_usable_size(p) < n)
		fail(b, "malloc_usable_size is below the size asked for", malloc_usable_size(p), b->how);
	fill(b);
}

static void resize(struct block *b, uint64_t *s, uint32_t tag)
{
	check(b, "before realloc");
	/* Not 0: realloc(p, 0) frees p (hostile.c checks that). */
	size_t n = random_size(s) + 1;
	const char *how = "realloc";
	unsigned char *p;
	if (next(s) % 4 == 0) {
		how = "reallocarray";
		size_t k = 1 + next(s) % 16;
		n = (n + k - 1) / k * k;
		p = reallocarray(b->p, n / k, k);
	} else {
		p = realloc(b->p, n);
	}
	if (!p)
		fail(b, "realloc returned NULL", n, how);
	/* Kept: the lesser of the two sizes asked for. */
	size_t kept = n < b->req ? n : b->req;
	struct block old = *b;
	b->p = p;
	for (size_t i = 0; i < kept; i++)
		if (p[i] != pattern(old.tag, i))
			fail(&old, "realloc lost a byte", i, how);
	if (malloc_usable_size(p) < n)
		fail(b, "malloc_usable_size is below the size asked for", malloc_usable_size(p), how);
	b->req = n;
	b->align = 16;
	b->tag = tag;
	b->how = how;
	fill(b);
}

static void release(struct block *b, const char *call)
{
	check(b, call);
	free(b->p);
	b->p = NULL;
}

/* Checks and frees what other threads handed this one. */
static void drain(int self)
{
	struct mailbox *m = &mail[self];
	pthread_mutex_lock(&m->lock);
	for (int i = 0; i < m->n; i++)
		release(&m->b[i], "a handover to another thread");
	m->n = 0;
	pthread_mutex_unlock(&m->lock);
}

static void *run(void *arg)
{
	int self = (int)(intptr_t)arg;
	uint64_t s = seed * 1000003 + (uint64_t)self;
	struct block *blocks = calloc(SLOTS, sizeof(*blocks));
	uint32_t tag = (uint32_t)self << 24;
	for (long step = 0; step < steps; step++) {
		struct block *b = &blocks[next(&s) % SLOTS];
		unsigned op = next(&s) % 100;
		calls[self]++;
		if (step % 64 == 0)
			drain(self);
		if (!b->p) {
			allocate(b, &s, ++tag);
		} else if (op < 35) {
			release(b, "free");
		} else if (op < 60) {
			resize(b, &s, ++tag);
		} else if (op < 85) {
			check(b, "a later call");
		} else {
			int to = (int)(next(&s) % THREADS);
			struct mailbox *m = &mail[to];
			pthread_mutex_lock(&m->lock);
			if (m->n < MAILBOX) {
				m->b[m->n++] = *b;
				b->p = NULL;
			}
			pthread_mutex_unlock(&m->lock);
		}
	}
	for (int i = 0; i < SLOTS; i++)
		if (blocks[i].p)
			release(&blocks[i], "the end");
	free(blocks);
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: stress SEED [STEPS]\n");
		return 2;
	}
	seed = strtoull(argv[1], NULL, 10);
	if (argc > 2)
		steps = strtol(argv[2], NULL, 10);
	for (int i = 0; i < THREADS; i++)
		pthread_mutex_init(&mail[i].lock, NULL);
	pthread_t t[THREADS];
	for (int i = 0; i < THREADS; i++)
		if (pthread_create(&t[i], NULL, run, (void *)(intptr_t)i) != 0) {
			printf("FAIL stress: pthread_create\n");
			return 1;
		}
	for (int i = 0; i < THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < THREADS; i++)
		drain(i);
	long total = 0;
	for (int i = 0; i < THREADS; i++)
		total += calls[i];
	printf("ok stress %llu: %ld calls\n", (unsigned long long)seed, total);
	return 0;
}
