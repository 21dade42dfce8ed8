/*
 * slabscope: a userspace port of the OpenZFS SPL slab allocator
 * (module/os/linux/spl/spl-kmem-cache.c, Lawrence Livermore National
 * Security, LLC), observable through USDT probes.
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * The C ABI keeps SPL's names, signatures and flag values. Differences:
 * - kmem_cache_create returns NULL on bad arguments (SPL VERIFYs), sets
 *   errno (EINVAL, or ENOSPC for objects too large) and records a message
 *   for slabscope_last_error(); `reclaim` and `vmp` must be NULL.
 * - kmem_cache_destroy returns int: 0, or -EBUSY while objects are still
 *   allocated (nothing is freed and the cache stays valid). SPL's is void.
 * - kmem_cache_alloc returns NULL for kmflags outside KM_PUBLIC_MASK.
 * - kmem_cache_free(cache, NULL) is a no-op. Unless the cache has
 *   KMC_NODEBUG, freeing a pointer the cache did not hand out (a double
 *   free, a foreign or misaligned pointer, another cache's object) prints
 *   "slabscope: cache "<name>": <pointer> is not a live object ..." to
 *   stderr and aborts. With KMC_NODEBUG nothing is checked and such a free
 *   corrupts the cache (a double-freed object is handed out twice).
 * - kmem_cache_free(NULL, obj) and a free into a destroyed cache lose the
 *   object. The cache that handed it out is found from the object and
 *   named: unless that cache has KMC_NODEBUG, a message naming the object
 *   goes to stderr and the program aborts; with KMC_NODEBUG, errno is set
 *   to EINVAL and the message recorded for slabscope_last_error(). An
 *   object no live cache handed out aborts.
 * - A destroyed cache's struct is kept (its slabs are returned), so every
 *   later call through its pointer is caught: alloc returns NULL, destroy
 *   and slabscope_cache_snapshot -EINVAL, with errno and a message saying
 *   the cache was destroyed. A pointer that was never a cache is not.
 * - kmem_cache_set_move is accepted and ignored, as in SPL.
 * A constructor returns 0 on success; non-zero makes kmem_cache_alloc
 * return NULL. Constructor and destructor run on every alloc and free, and
 * `priv` is passed to them from any thread.
 *
 * Link with -lslabscope (libslabscope.so or libslabscope.a).
 */
#ifndef SLABSCOPE_H
#define SLABSCOPE_H

#include <errno.h> /* EBUSY, EINVAL, ENOSPC: the values returned and set below */
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Cache flags (KMC_x = 1 << KMC_BIT_x), as in SPL's kmem_cache.h. */
#define KMC_NODEBUG     0x00000002
#define KMC_KVMEM       0x00000080
#define KMC_SLAB        0x00000100
#define KMC_DEADLOCKED  0x00004000 /* state bit, reported only */
#define KMC_GROWING     0x00008000 /* state bit, reported only */
#define KMC_REAPING     0x00010000 /* state bit, reported only */
#define KMC_DESTROY     0x00020000 /* state bit, reported only */
#define KMC_RECLAIMABLE 0x00200000

/* Allocation flags, as in SPL's kmem.h. */
#define KM_SLEEP        0x0000
#define KM_NOSLEEP      0x0001
#define KM_PUSHPAGE     0x0004
#define KM_PUBLIC_MASK  (KM_SLEEP | KM_NOSLEEP | KM_PUSHPAGE)

/* Magic numbers. */
#define SKM_MAGIC 0x2e2e2e2e
#define SKO_MAGIC 0x20202020
#define SKS_MAGIC 0x22222222
#define SKC_MAGIC 0x2c2c2c2c

typedef struct kmem_cache kmem_cache_t;

typedef int (*spl_kmem_ctor_t)(void *obj, void *priv, int kmflags);
typedef void (*spl_kmem_dtor_t)(void *obj, void *priv);
typedef void (*spl_kmem_reclaim_t)(void *priv);

typedef enum kmem_cbrc {
	KMEM_CBRC_YES = 0,
	KMEM_CBRC_NO = 1,
	KMEM_CBRC_LATER = 2,
	KMEM_CBRC_DONT_NEED = 3,
	KMEM_CBRC_DONT_KNOW = 4
} kmem_cbrc_t;

kmem_cache_t *kmem_cache_create(const char *name, size_t size, size_t align,
    spl_kmem_ctor_t ctor, spl_kmem_dtor_t dtor, spl_kmem_reclaim_t reclaim,
    void *priv, void *vmp, int flags);
int kmem_cache_destroy(kmem_cache_t *cache);
void *kmem_cache_alloc(kmem_cache_t *cache, int kmflags);
void kmem_cache_free(kmem_cache_t *cache, void *obj);
void kmem_cache_reap_now(kmem_cache_t *cache);
void kmem_reap(void);
uint64_t kmem_cache_inuse(kmem_cache_t *cache);
uint64_t kmem_cache_entry_size(kmem_cache_t *cache);
void kmem_cache_set_move(kmem_cache_t *cache,
    kmem_cbrc_t (*move)(void *, void *, size_t, void *));

/* The message of this thread's last failing slabscope call ("" if none);
 * valid until this thread's next failing call. Never NULL. */
const char *slabscope_last_error(void);

#define SLABSCOPE_NAME_LEN 64
#define SLABSCOPE_MAX_CPUS 64

/*
 * Every counter of one cache: the last argument of every USDT probe of
 * provider "slabscope" (CacheSnapshot in the slabscope-probes crate), and
 * what slabscope_cache_snapshot() fills in.
 */
struct slabscope_cache_snapshot {
	uint64_t cache_id;      /* address of the cache */
	uint64_t flags;         /* KMC_*, state bits included */
	uint64_t obj_size;
	uint64_t obj_align;
	uint64_t obj_size_full; /* bytes per object in a slab, header included */
	uint64_t slab_size;     /* 0 for KMC_SLAB caches */
	uint64_t slab_objs;     /* 0 for KMC_SLAB caches */
	uint32_t mag_size;
	uint32_t mag_refill;
	uint32_t ncpus;         /* entries of mag_fill used */
	uint32_t depot_objs;    /* objects in the depot (also in mag_objs) */
	/* SPL's counters: SlabCounters in the slabscope-probes crate, inline. */
	uint64_t slab_fail;
	uint64_t slab_create;
	uint64_t slab_destroy;
	uint64_t slab_total;
	uint64_t slab_alloc;
	uint64_t slab_max;
	uint64_t obj_total;
	uint64_t obj_alloc;     /* in use or held in magazines */
	uint64_t obj_max;
	uint64_t obj_deadlock;
	uint64_t obj_emergency;
	uint64_t obj_emergency_max;
	uint64_t mag_objs;      /* objects held in all magazines and the depot */
	uint32_t mag_fill[SLABSCOPE_MAX_CPUS];
	char name[SLABSCOPE_NAME_LEN]; /* NUL padded */
};

/* Fills *out with the cache's counters now. 0, or -EINVAL for NULL. */
int slabscope_cache_snapshot(kmem_cache_t *cache,
    struct slabscope_cache_snapshot *out);

/* Writes the /proc/spl/kmem/slab text of every cache into buf (snprintf
 * semantics) and returns its full length. */
size_t slabscope_proc_slab(char *buf, size_t len);

/*
 * General allocation (SPL's kmem.h), on size-class caches named
 * kmem_alloc_<size> (8, then 24 to 264 16 bytes apart, then eight per
 * doubling up to 131072: at most 12.5 % waste from 128 bytes on); larger
 * requests are mappings of their own, counted in the row kmem_alloc_large.
 * Blocks are
 * 16-aligned. kmem_alloc returns NULL (errno EINVAL) for kmflags outside
 * KM_PUBLIC_MASK, and NULL (errno ENOMEM) when the system refuses a request
 * above the largest class, even with KM_SLEEP. kmem_free(NULL, n) is a
 * no-op; a size larger than the block, a double free or a pointer slabscope
 * did not hand out prints "slabscope: kmem_free(<pointer>): ..." and
 * aborts. vmem_* are the same functions.
 */
void *kmem_alloc(size_t size, int kmflags);
void *kmem_zalloc(size_t size, int kmflags);
void kmem_free(const void *ptr, size_t size);
void *vmem_alloc(size_t size, int kmflags);
void *vmem_zalloc(size_t size, int kmflags);
void vmem_free(const void *ptr, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* SLABSCOPE_H */
