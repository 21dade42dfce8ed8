/*
 * A C program using slabscope through libslabscope.so, for the collector
 * test that finds probes in a shared object (tests/collector_c_shared.rs).
 * It prints "ready <pid>", waits for a line on stdin, runs a fixed script on
 * one cache, waits for its grows to land and prints what the cache's own
 * counters say, as key=value pairs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <stdio.h>
#include <unistd.h>

#include "slabscope.h"

int
main(void)
{
	char line[16];
	void *objs[40];
	struct slabscope_cache_snapshot s;
	int i;

	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	if (fgets(line, sizeof (line), stdin) == NULL)
		return (1);

	kmem_cache_t *c = kmem_cache_create("c_so_cache", 512, 0, NULL, NULL,
	    NULL, NULL, NULL, 0);
	if (c == NULL) {
		fprintf(stderr, "create: %s\n", slabscope_last_error());
		return (2);
	}
	for (i = 0; i < 40; i++) {
		objs[i] = kmem_cache_alloc(c, KM_SLEEP);
		if (objs[i] == NULL)
			return (3);
	}
	for (i = 0; i < 20; i++)
		kmem_cache_free(c, objs[i]);
	kmem_cache_reap_now(c);
	do {
		usleep(5000);
		if (slabscope_cache_snapshot(c, &s) != 0)
			return (4);
	} while (s.flags & KMC_GROWING);
	printf("id=%llu slab_create=%llu slab_fail=%llu obj_deadlock=%llu\n",
	    (unsigned long long)s.cache_id, (unsigned long long)s.slab_create,
	    (unsigned long long)s.slab_fail,
	    (unsigned long long)s.obj_deadlock);
	return (0);
}
