/* unwind_storm [MIB [ROUNDS [DEPTH [RUN]]]] [--wait] [--linger]     (defaults: 512 4 10 0)
 *
 * The fault storm (fault_storm.c) at a realistic call depth, built -O2 -fomit-frame-pointer
 * (tests/build.rs): the benchmark of .eh_frame unwinding (`cargo xtask bench unwind`). Main
 * phase: ROUNDS times, mmap MIB MiB anonymous (MADV_NOHUGEPAGE), then descend DEPTH levels
 * through three functions of different frame sizes calling each other in turn (level_a ->
 * level_b -> level_c -> level_a ...), and write one byte per page in storm_touch() at the
 * bottom, then munmap. Every fault's user stack is storm_touch, DEPTH levels, main and libc's
 * start-up frames: DEPTH + 5 frames down to _start (15 with the defaults). With the defaults
 * that is about 524k minor faults. elapsed_s is the time of the whole loop.
 * RUN > 0: each page is touched by a descent of its own (DEPTH levels, as above), through
 * via_left for RUN pages, then through via_right for RUN pages, and so on, both called from
 * alternate() with the same frame: the faults of both have the same registers and stack
 * pointer, and only the return address into via_left or via_right tells them apart (stacks
 * that a walk must not take from the walk before: with RUN 1, every fault's stack is walked
 * whole). Their faults are "left_pages" and "right_pages"; each stack is storm_touch, DEPTH
 * levels, via_left or via_right, alternate, main and libc's start-up: DEPTH + 7 frames.
 * JSON extras: "mib":MIB, "rounds":ROUNDS, "depth":DEPTH, "run":RUN, "pages_touched":N,
 * "left_pages":L, "right_pages":R.
 */
#include "common.h"
#include <sys/mman.h>

static const char *usage = "unwind_storm [MIB [ROUNDS [DEPTH [RUN]]]] [--wait] [--linger]";

/* noinline and noclone keep each level a frame of its own, under its own name; work after
 * the call (AFTER_CALL, or using a local after it) keeps gcc from turning calls into jumps. */
#define LEVEL __attribute__((noinline, noclone))
#define AFTER_CALL() __asm__ volatile("" ::: "memory")

LEVEL size_t storm_touch(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
	return pages;
}

LEVEL size_t level_a(char *p, size_t pages, unsigned depth);

/* A mid-sized frame (a buffer on the stack). */
LEVEL size_t level_c(char *p, size_t pages, unsigned depth)
{
	volatile char pad[96];
	pad[0] = (char)depth;
	size_t n = depth ? level_a(p, pages, depth - 1) : storm_touch(p, pages);
	return n + pad[0] - (char)depth;
}

/* A large frame. */
LEVEL size_t level_b(char *p, size_t pages, unsigned depth)
{
	volatile char pad[1000];
	pad[depth % sizeof pad] = 1;
	size_t n = depth ? level_c(p, pages, depth - 1) : storm_touch(p, pages);
	return n + pad[depth % sizeof pad] - 1;
}

/* A small frame: callee-saved registers only. */
LEVEL size_t level_a(char *p, size_t pages, unsigned depth)
{
	size_t n = depth ? level_b(p, pages, depth - 1) : storm_touch(p, pages);
	AFTER_CALL();
	return n;
}

/* Two callers with the same frame, told apart by their return addresses only. */
LEVEL size_t via_left(char *p, unsigned depth)
{
	size_t n = level_a(p, 1, depth - 1);
	AFTER_CALL();
	return n;
}

LEVEL size_t via_right(char *p, unsigned depth)
{
	size_t n = level_a(p, 1, depth - 1);
	/* Code of its own, so that no linker or compiler folds the two into one. */
	__asm__ volatile("" ::"r"(n + 2) : "memory");
	return n;
}

/* Touches the pages RUN at a time through via_left, then via_right; counts each side's. */
LEVEL void alternate(char *p, size_t pages, size_t run, unsigned depth, size_t *left,
		     size_t *right)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++) {
		if ((i / run) % 2 == 0)
			*left += via_left(p + i * psz, depth);
		else
			*right += via_right(p + i * psz, depth);
	}
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 5)
		usage_exit(usage);
	size_t mib = arg_ulong(argc, argv, 1, 512, usage);
	size_t rounds = arg_ulong(argc, argv, 2, 4, usage);
	unsigned depth = (unsigned)arg_ulong(argc, argv, 3, 10, usage);
	size_t run = arg_ulong(argc, argv, 4, 0, usage);
	size_t left = 0, right = 0;
	if (depth < 1)
		usage_exit(usage);
	size_t len = mib << 20;
	size_t pages = len / page_size();
	size_t touched = 0;

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t r = 0; r < rounds; r++) {
		char *p = mmap(NULL, len + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED)
			die("mmap");
		madvise(p, len + 1, MADV_NOHUGEPAGE);
		if (run) {
			alternate(p, pages, run, depth, &left, &right);
			touched += pages;
		} else {
			/* level_a counts as the first of the DEPTH levels */
			touched += level_a(p, pages, depth - 1);
		}
		munmap(p, len + 1);
	}
	phase_end(&ph);

	print_json(&ph,
		   "\"mib\":%zu,\"rounds\":%zu,\"depth\":%u,\"run\":%zu,\"pages_touched\":%zu,"
		   "\"left_pages\":%zu,\"right_pages\":%zu",
		   mib, rounds, depth, run, touched, left, right);
	linger();
	return 0;
}
