/*
 * slabscope from C: SPL's kmem_cache API, bad inputs, a busy destroy and
 * the /proc/spl/kmem/slab text. Prints key=value lines that the Rust test
 * `c_example` checks.
 *
 *   cargo build -p slabscope-capi
 *   cc -I include capi/examples/c/example.c -L target/debug \
 *      -lslabscope -Wl,-rpath,target/debug -o example && ./example
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slabscope.h"

struct counts {
	long ctors;
	long dtors;
};

static int
zio_ctor(void *obj, void *priv, int kmflags)
{
	(void) kmflags;
	memset(obj, 0x5a, 1104);
	__atomic_fetch_add(&((struct counts *)priv)->ctors, 1, __ATOMIC_RELAXED);
	return (0);
}

static void
zio_dtor(void *obj, void *priv)
{
	if (((unsigned char *)obj)[1103] != 0x5a) {
		fprintf(stderr, "object %p corrupted\n", obj);
		abort();
	}
	__atomic_fetch_add(&((struct counts *)priv)->dtors, 1, __ATOMIC_RELAXED);
}

static void
bad(const char *what, const char *name, size_t size, size_t align, int flags)
{
	errno = 0;
	kmem_cache_t *c = kmem_cache_create(name, size, align, NULL, NULL,
	    NULL, NULL, NULL, flags);
	printf("bad_%s=%s errno=%d msg=%s\n", what, c == NULL ? "rejected" :
	    "ACCEPTED", errno, slabscope_last_error());
}

int
main(void)
{
	struct counts counts = { 0, 0 };
	void *objs[100];
	int i;

	printf("snapshot_size=%zu\n", sizeof (struct slabscope_cache_snapshot));
#define	OFF(f)	printf("off_" #f "=%zu\n", \
	    offsetof(struct slabscope_cache_snapshot, f))
	OFF(cache_id);
	OFF(flags);
	OFF(obj_size);
	OFF(obj_align);
	OFF(obj_size_full);
	OFF(slab_size);
	OFF(slab_objs);
	OFF(mag_size);
	OFF(mag_refill);
	OFF(ncpus);
	OFF(depot_objs);
	OFF(slab_fail);
	OFF(slab_create);
	OFF(slab_destroy);
	OFF(slab_total);
	OFF(slab_alloc);
	OFF(slab_max);
	OFF(obj_total);
	OFF(obj_alloc);
	OFF(obj_max);
	OFF(obj_deadlock);
	OFF(obj_emergency);
	OFF(obj_emergency_max);
	OFF(mag_objs);
	OFF(mag_fill);
	OFF(name);

	bad("align", "c_bad", 64, 24, 0);
	bad("size", "c_bad", 0, 0, 0);
	bad("name", "", 64, 0, 0);
	bad("large", "c_bad", (size_t)64 << 20, 0, 0);
	bad("flags", "c_bad", 64, 0, KMC_GROWING);

	kmem_cache_t *zio = kmem_cache_create("c_zio_cache", 1104, 0,
	    zio_ctor, zio_dtor, NULL, &counts, NULL, 0);
	if (zio == NULL) {
		fprintf(stderr, "create: %s\n", slabscope_last_error());
		return (1);
	}
	kmem_cache_set_move(zio, NULL);
	for (i = 0; i < 100; i++) {
		objs[i] = kmem_cache_alloc(zio, KM_SLEEP);
		if (objs[i] == NULL)
			return (2);
	}
	printf("entry_size=%llu\n",
	    (unsigned long long)kmem_cache_entry_size(zio));
	printf("inuse_ge_100=%d\n", kmem_cache_inuse(zio) >= 100);
	printf("ctors=%ld\n", counts.ctors);

	int rc = kmem_cache_destroy(zio);
	printf("busy_destroy=%d ebusy=%d\n", rc, rc == -EBUSY);

	struct slabscope_cache_snapshot s;
	if (slabscope_cache_snapshot(zio, &s) != 0)
		return (3);
	printf("snap_name=%s\n", s.name);
	printf("snap_obj_size=%llu\n", (unsigned long long)s.obj_size);
	printf("snap_live=%llu\n",
	    (unsigned long long)(s.obj_alloc - s.mag_objs));
	printf("snap_kvmem=%d\n", (s.flags & KMC_KVMEM) != 0);

	for (i = 0; i < 100; i++)
		kmem_cache_free(zio, objs[i]);
	kmem_cache_free(zio, NULL);
	printf("dtors=%ld\n", counts.dtors);
	kmem_cache_reap_now(zio);
	kmem_reap();

	char text[8192];
	size_t n = slabscope_proc_slab(text, sizeof (text));
	printf("proc_len_ok=%d\n", n > 0 && n < sizeof (text));
	fputs(text, stdout);

	rc = kmem_cache_destroy(zio);
	printf("destroy=%d\n", rc);
	return (0);
}
