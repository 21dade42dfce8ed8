/*
 * A malloc_usable_size that says 16 bytes more than the malloc behind it
 * (the next library in the search order): preloaded ahead of
 * libslabscope_malloc.so by malloc/tests/stress.rs, it makes stress.c
 * write past each block, which stress.c must then report. A checker that
 * cannot see a block reaching into its neighbour would pass anyway.
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

size_t malloc_usable_size(void *p)
{
	static size_t (*real)(void *);
	if (!real)
		real = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
	size_t n = real ? real(p) : 0;
	return n ? n + 16 : 0;
}
