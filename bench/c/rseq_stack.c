// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * The C path's per-CPU reference: stack.c with one array per CPU, popped
 * and pushed in one restartable sequence through glibc's rseq
 * registration, as slabscope's magazine hit is, but with nothing else: no
 * table between the CPU number and its array (they sit 32 KiB apart), no
 * class, no check of the pointer. The least a per-CPU allocator (SPL's
 * magazines, slabscope) can do on a hit. Like stack.c it is no allocator
 * (one size per process, nothing given back, the arena's bump pointer not
 * thread-safe; a full array drops the block). Built by slabscope-bench
 * (bench/src/cpath.rs) as a shared library and loaded like the peers;
 * x86-64 only, as slabscope's own sequences are.
 */
#include <stddef.h>
#include <stdint.h>

/* 64 bytes of count and 4088 slots: 32 KiB per CPU, found by a shift. */
#define SLOTS 4088
#define CPUS 256
#define ARENA ((size_t)64 << 20)
#define RSEQ_SIG 0x53053053

extern const ptrdiff_t __rseq_offset;
extern const unsigned int __rseq_size;

_Static_assert(64 + SLOTS * 8 == 1 << 15, "a CPU's array is 32 KiB");

struct percpu {
	uint32_t avail;
	uint32_t pad[15];
	void *slot[SLOTS];
} __attribute__((aligned(64)));

static struct percpu cpus[CPUS];
static unsigned char arena[ARENA] __attribute__((aligned(64)));
static size_t used;

static void *bump(size_t size)
{
	size = (size + 15) & ~(size_t)15;
	if (size > ARENA - used)
		return NULL;
	void *p = arena + used;
	used += size;
	return p;
}

/* Each sequence: the rseq area's rseq_cs set to its descriptor, the CPU's
 * array found from cpu_id (the miss path for a CPU past the arrays, or
 * a negative id: an unregistered thread), then the body, whose last instruction is the commit store; the
 * kernel restarts at the abort handler (84) if the thread is preempted,
 * migrated or signalled in between. */
void *malloc(size_t size)
{
	void *p;
	if (__rseq_size == 0)
		return bump(size);
	__asm__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n"
		"80:\n\t"
		".long 0, 0\n\t"
		".quad 81f, (82f - 81f), 84f\n\t"
		".popsection\n\t"
		"leaq 80b(%%rip), %%rax\n\t"
		"movq %%rax, %%fs:8(%[off])\n"
		"81:\n\t"
		"movslq %%fs:4(%[off]), %%rax\n\t"
		"cmpq %[cpus], %%rax\n\t"
		"jae %l[miss]\n\t"
		"shlq $15, %%rax\n\t"
		"addq %[base], %%rax\n\t"
		"movl (%%rax), %%ecx\n\t"
		"subl $1, %%ecx\n\t"
		"jb %l[miss]\n\t"
		"movq 64(%%rax, %%rcx, 8), %[out]\n\t"
		"movl %%ecx, (%%rax)\n"
		"82:\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t"
		".long %c[sig]\n"
		"84:\n\t"
		"jmp %l[miss]\n\t"
		".popsection\n\t"
		: [out] "=&r"(p)
		: [off] "r"(__rseq_offset), [base] "r"(cpus), [cpus] "i"(CPUS), [sig] "i"(RSEQ_SIG)
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
	__asm__ goto(
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n"
		"80:\n\t"
		".long 0, 0\n\t"
		".quad 81f, (82f - 81f), 84f\n\t"
		".popsection\n\t"
		"leaq 80b(%%rip), %%rax\n\t"
		"movq %%rax, %%fs:8(%[off])\n"
		"81:\n\t"
		"movslq %%fs:4(%[off]), %%rax\n\t"
		"cmpq %[cpus], %%rax\n\t"
		"jae %l[full]\n\t"
		"shlq $15, %%rax\n\t"
		"addq %[base], %%rax\n\t"
		"movl (%%rax), %%ecx\n\t"
		"cmpl %[slots], %%ecx\n\t"
		"jae %l[full]\n\t"
		"movq %[p], 64(%%rax, %%rcx, 8)\n\t"
		"addl $1, %%ecx\n\t"
		"movl %%ecx, (%%rax)\n"
		"82:\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t"
		".long %c[sig]\n"
		"84:\n\t"
		"jmp %l[full]\n\t"
		".popsection\n\t"
		:
		: [off] "r"(__rseq_offset), [base] "r"(cpus), [cpus] "i"(CPUS), [sig] "i"(RSEQ_SIG), [p] "r"(p),
		  [slots] "i"(SLOTS)
		: "rax", "rcx", "memory", "cc"
		: full);
	return;
full:
	return; /* dropped: the reference never gives a block back */
}
