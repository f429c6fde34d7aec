/* malloc_kinds K [--wait] [--linger]
 *
 * Each allocator function, with results known exactly. Left allocated at the end, by the
 * function that allocated (the innermost frame of its stack):
 *   calloc_leak          K blocks of 10*100 bytes (calloc)
 *   posix_memalign_leak  K blocks of 1000 bytes (posix_memalign, alignment 64)
 *   aligned_alloc_leak   K blocks of 1024 bytes (aligned_alloc, alignment 64)
 *   reallocarray_grow    1 block of K*100 bytes, grown by K reallocarray calls
 *   realloc_from_null    1 block of 777 bytes (realloc(NULL, 777))
 *   mmap_leak            K anonymous mappings of 64 KiB (mmap), never unmapped
 * and nothing from realloc_cycle: malloc(16), grown to 100000, shrunk to 8, then realloc(p, 0),
 * which frees it, and nothing from mmap_cycle: one mapping, unmapped.
 * JSON extras: "k", and the calls it made: "calloc", "realloc", "reallocarray",
 * "posix_memalign", "aligned_alloc", "malloc", "mmap", "munmap".
 */
#include "common.h"
#include <sys/mman.h>

static const char *usage = "malloc_kinds K [--wait] [--linger]";

static void *volatile sink;

__attribute__((noinline)) void calloc_leak(size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (!(sink = calloc(10, 100)))
			die("calloc");
}

__attribute__((noinline)) void posix_memalign_leak(size_t k)
{
	for (size_t i = 0; i < k; i++) {
		void *p;
		if (posix_memalign(&p, 64, 1000))
			die("posix_memalign");
		sink = p;
	}
}

__attribute__((noinline)) void aligned_alloc_leak(size_t k)
{
	for (size_t i = 0; i < k; i++)
		if (!(sink = aligned_alloc(64, 1024)))
			die("aligned_alloc");
}

__attribute__((noinline)) void reallocarray_grow(size_t k)
{
	void *p = NULL;
	for (size_t i = 1; i <= k; i++)
		if (!(p = reallocarray(p, i, 100)))
			die("reallocarray");
	sink = p;
}

__attribute__((noinline)) void realloc_from_null(void)
{
	/* volatile: gcc turns realloc(NULL, n) into malloc(n) */
	void *volatile none = NULL;
	if (!(sink = realloc(none, 777)))
		die("realloc");
}

__attribute__((noinline)) void realloc_cycle(void)
{
	void *p = malloc(16);
	if (!p || !(p = realloc(p, 100000)) || !(p = realloc(p, 8)))
		die("realloc");
	p = realloc(p, 0); /* glibc frees p and returns NULL */
	if (p)
		free(p);
}

static void *map(size_t bytes)
{
	void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

__attribute__((noinline)) void mmap_leak(size_t k)
{
	for (size_t i = 0; i < k; i++)
		sink = map(64 << 10);
}

__attribute__((noinline)) void mmap_cycle(void)
{
	void *p = map(1 << 20);
	if (munmap(p, 1 << 20))
		die("munmap");
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 2)
		usage_exit(usage);
	size_t k = arg_ulong(argc, argv, 1, 1, usage);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	calloc_leak(k);
	posix_memalign_leak(k);
	aligned_alloc_leak(k);
	reallocarray_grow(k);
	realloc_from_null();
	realloc_cycle();
	mmap_leak(k);
	mmap_cycle();
	phase_end(&ph);

	print_json(&ph,
		   "\"k\":%zu,\"calloc\":%zu,\"realloc\":4,\"reallocarray\":%zu,"
		   "\"posix_memalign\":%zu,\"aligned_alloc\":%zu,\"malloc\":1,\"mmap\":%zu,"
		   "\"munmap\":1",
		   k, k, k, k, k, k + 1);
	linger();
	return 0;
}
