// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The C path's references: the least an allocator can do. malloc pops a
 * pointer off an array and free pushes it back; a block that was never
 * freed comes from a bump pointer into a static arena, 16-aligned. None
 * is thread-safe past its arrays (the bump pointer is shared) or gives
 * memory back, so none is an allocator: each shows the floor under one
 * design's hit. Built by slabscope-bench (bench/src/cpath.rs) four ways,
 * each a shared library loaded like the peers:
 *
 *   (no macro)   stack: one array, what the harness's loop costs around
 *                one count and one slot in memory that the next
 *                operation reads back;
 *   -DPER_THREAD tls_stack: the array in the calling thread's storage
 *                (initial-exec TLS), as glibc's tcache and jemalloc's,
 *                mimalloc's and tcmalloc's thread caches are reached;
 *   -DPER_CPU    rseq_stack: one array per CPU, 32 KiB apart so that the
 *                CPU number finds its array by a shift, popped and pushed
 *                in one restartable sequence through glibc's rseq
 *                registration, as slabscope's magazine hit is, with no
 *                table, class or check besides (x86-64, glibc 2.35);
 *   -DPER_CPU -DCLASSES
 *                rseq_classes: rseq_stack with one array per CPU and size
 *                class (16-byte steps to 256 bytes, one class above), the
 *                class found from the size by malloc and from the address
 *                by free (each class bumps in an arena of its own), as
 *                slabscope's headerless classes are found from their
 *                windows: the least a per-CPU allocator of size classes
 *                does, so it runs random sizes too.
 *
 * The first three ignore sizes when they reuse a block (the harness gives
 * them one size per process).
 */
#include <stddef.h>
#include <stdint.h>

#ifdef CLASSES
#define NCLASSES 17
#define ARENA_SHIFT 23 /* 8 MiB per class */
/* 16-byte steps to 256 bytes; class 0 is 0 and everything above 256. */
#define CLASS_OF_SIZE(size) ((size) <= 256 ? ((size) + 15) >> 4 : 0)
#define CLASS_OF_PTR(p) ((size_t)((unsigned char *)(p) - arena) >> ARENA_SHIFT)
#else
#define NCLASSES 1
#define ARENA_SHIFT 26 /* 64 MiB */
#define CLASS_OF_SIZE(size) 0
#define CLASS_OF_PTR(p) 0
#endif
#define ARENA ((size_t)1 << ARENA_SHIFT)

#ifndef PER_CPU

#define SLOTS 4096

#ifdef PER_THREAD
#define LOCAL __thread __attribute__((tls_model("initial-exec")))
#else
#define LOCAL
#endif

static LOCAL void *stack[SLOTS];
static LOCAL unsigned avail;

#endif /* !PER_CPU */

/*
 * Class c's arrays and arena start COLOR(c) bytes into their space, so
 * that the classes' counts and first blocks do not all fall in one L1
 * set (addresses equal modulo 4 KiB): 7 lines apart, distinct for 64
 * classes.
 */
#define COLOR(c) ((size_t)(c) * 7 * 64 % 4096)

static unsigned char arena[NCLASSES * ARENA] __attribute__((aligned(64)));
static size_t used[NCLASSES];

static void *bump(size_t size)
{
	size_t c = CLASS_OF_SIZE(size);
	if (used[c] == 0)
		used[c] = COLOR(c);
	size = (size + 15) & ~(size_t)15;
	if (size > ARENA - used[c])
		return NULL;
	void *p = arena + c * ARENA + used[c];
	used[c] += size;
	return p;
}

#ifndef PER_CPU

void *malloc(size_t size)
{
	if (avail)
		return stack[--avail];
	return bump(size);
}

void free(void *p)
{
	if (p && avail < SLOTS)
		stack[avail++] = p;
}

#else /* PER_CPU */

#define CPUS 256
#define RSEQ_SIG 0x53053053

#ifdef CLASSES
/* A count, padded to 64 bytes, and 1016 slots: 8 KiB per CPU and class. */
#define SLOTS 1016
#define SHIFT 13
#else
/* A count, padded to 64 bytes, and 4088 slots: 32 KiB per CPU. */
#define SLOTS 4088
#define SHIFT 15
#endif
#define STR(x) #x
#define XSTR(x) STR(x)

extern const ptrdiff_t __rseq_offset;
extern const unsigned int __rseq_size;

struct percpu {
	uint32_t avail;
	uint32_t pad[15];
	void *slot[SLOTS];
} __attribute__((aligned(64)));
_Static_assert(sizeof(struct percpu) == (size_t)1 << SHIFT, "a CPU's array is found by a shift");

/* Class by class, each class's arrays CPU by CPU, from its color on. */
static unsigned char cpus[NCLASSES][CPUS * sizeof(struct percpu) + 4096]
	__attribute__((aligned(64)));
#define CLASS_BASE(c) (cpus[c] + COLOR(c))

/*
 * A sequence's start: the rseq area's rseq_cs set to its descriptor (the
 * kernel restarts at the abort handler, label 84, if the thread is
 * preempted, migrated or signalled before label 82), then %rax = the
 * current CPU's array of the class at [base], or a jump to MISS for a CPU
 * past the arrays or a negative id (an unregistered thread). The body
 * that follows ends with the commit store, then RSEQ_END.
 */
#define RSEQ_BEGIN(MISS)                                    \
	".pushsection __rseq_cs, \"aw\"\n\t"                \
	".balign 32\n"                                      \
	"80:\n\t"                                           \
	".long 0, 0\n\t"                                    \
	".quad 81f, (82f - 81f), 84f\n\t"                   \
	".popsection\n\t"                                   \
	"leaq 80b(%%rip), %%rax\n\t"                        \
	"movq %%rax, %%fs:8(%[off])\n"                      \
	"81:\n\t"                                           \
	"movslq %%fs:4(%[off]), %%rax\n\t"                  \
	"cmpq %[cpus], %%rax\n\t"                           \
	"jae %l[" MISS "]\n\t"                              \
	"shlq $" XSTR(SHIFT) ", %%rax\n\t"                  \
	"addq %[base], %%rax\n\t"
#define RSEQ_END(MISS)                                      \
	"82:\n\t"                                           \
	".pushsection __rseq_failure, \"ax\"\n\t"           \
	".byte 0x0f, 0xb9, 0x3d\n\t"                        \
	".long %c[sig]\n"                                   \
	"84:\n\t"                                           \
	"jmp %l[" MISS "]\n\t"                              \
	".popsection\n\t"
#define RSEQ_INPUTS(CLASS)                                                             \
	[off] "r"(__rseq_offset), [base] "r"(CLASS_BASE(CLASS)), [cpus] "i"(CPUS), \
		[sig] "i"(RSEQ_SIG)

void *malloc(size_t size)
{
	void *p;
	size_t c = CLASS_OF_SIZE(size);
	if (__rseq_size == 0)
		return bump(size);
	__asm__ goto(RSEQ_BEGIN("miss")
		     "movl (%%rax), %%ecx\n\t"
		     "subl $1, %%ecx\n\t"
		     "jb %l[miss]\n\t"
		     "movq 64(%%rax, %%rcx, 8), %[out]\n\t"
		     "movl %%ecx, (%%rax)\n"
		     RSEQ_END("miss")
		     : [out] "=&r"(p)
		     : RSEQ_INPUTS(c)
		     : "rax", "rcx", "memory", "cc"
		     : miss);
	return p;
miss:
	return bump(size);
}

void free(void *p)
{
	if (p == NULL || __rseq_size == 0)
		return;
	size_t c = CLASS_OF_PTR(p);
	if (c >= NCLASSES)
		return; /* not the arena's: dropped */
	__asm__ goto(RSEQ_BEGIN("full")
		     "movl (%%rax), %%ecx\n\t"
		     "cmpl %[slots], %%ecx\n\t"
		     "jae %l[full]\n\t"
		     "movq %[p], 64(%%rax, %%rcx, 8)\n\t"
		     "addl $1, %%ecx\n\t"
		     "movl %%ecx, (%%rax)\n"
		     RSEQ_END("full")
		     :
		     : RSEQ_INPUTS(c), [p] "r"(p), [slots] "i"(SLOTS)
		     : "rax", "rcx", "memory", "cc"
		     : full);
full:
	return; /* a full array drops the block: the reference never gives one back */
}

#endif /* PER_CPU */
