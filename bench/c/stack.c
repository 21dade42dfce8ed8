// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The C path's reference contender: the least an allocator can do. malloc
 * pops a pointer off one array and free pushes it back; a block that was
 * never freed comes from a bump pointer into a static arena, 16-aligned.
 * It is not thread-safe, never gives memory back and ignores sizes when it
 * reuses a block (the harness uses one size per process), so it is no
 * allocator: it shows what the harness's loop costs around one count and
 * one slot in memory that the next operation reads back, the floor under
 * every allocator's 1-live row. Built by slabscope-bench
 * (bench/src/cpath.rs) as a shared library and loaded like the peers.
 */
#include <stddef.h>

#define SLOTS 4096
#define ARENA ((size_t)64 << 20)

static void *stack[SLOTS];
static unsigned avail;
static unsigned char arena[ARENA] __attribute__((aligned(64)));
static size_t used;

void *malloc(size_t size)
{
	if (avail)
		return stack[--avail];
	size = (size + 15) & ~(size_t)15;
	if (size > ARENA - used)
		return NULL;
	void *p = arena + used;
	used += size;
	return p;
}

void free(void *p)
{
	if (p && avail < SLOTS)
		stack[avail++] = p;
}
