// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The C path's per-thread reference: stack.c with its array in the
 * calling thread's own storage (initial-exec TLS, as glibc's tcache,
 * jemalloc's and mimalloc's thread caches are reached), the least a
 * thread-cache allocator can do on a hit. Like stack.c it is no allocator
 * (one size per process, nothing given back, the arena's bump pointer not
 * thread-safe). Built by slabscope-bench (bench/src/cpath.rs) as a shared
 * library and loaded like the peers.
 */
#include <stddef.h>

#define SLOTS 4096
#define ARENA ((size_t)64 << 20)

static __thread struct {
	unsigned avail;
	void *slot[SLOTS];
} cache __attribute__((tls_model("initial-exec")));
static unsigned char arena[ARENA] __attribute__((aligned(64)));
static size_t used;

void *malloc(size_t size)
{
	if (cache.avail)
		return cache.slot[--cache.avail];
	size = (size + 15) & ~(size_t)15;
	if (size > ARENA - used)
		return NULL;
	void *p = arena + used;
	used += size;
	return p;
}

void free(void *p)
{
	if (p && cache.avail < SLOTS)
		cache.slot[cache.avail++] = p;
}
