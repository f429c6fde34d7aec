/* heap_peak [BLOCK] [--wait] [--linger]
 *
 * A heap with a known peak, from known stacks: grow_a() allocates 200 blocks of BLOCK bytes
 * (default 1 MiB) and grow_b() 100 more: 300 blocks allocated, the peak. Then 150 of grow_a's
 * blocks and all of grow_b's are freed (50 left), and grow_c() allocates 150: 200 blocks at
 * the end, fewer than at the peak. Every block is written, so it is memory the program uses.
 *
 * JSON extras: "block" (bytes), "peak_bytes" (what was allocated at the peak, by the
 * workload's own count), "a_at_peak", "b_at_peak", "c_at_peak" (each function's bytes
 * allocated then), "live_bytes" (allocated at the end, the workload's blocks only).
 */
#include "common.h"

static const char *usage = "heap_peak [BLOCK] [--wait] [--linger]";

enum { A_BLOCKS = 200, B_BLOCKS = 100, A_FREED = 150, C_BLOCKS = 150 };

static void *a_blocks[A_BLOCKS], *b_blocks[B_BLOCKS], *c_blocks[C_BLOCKS];

static void *block_of(size_t size)
{
	void *p = malloc(size);
	if (!p)
		die("malloc");
	memset(p, 1, size);
	return p;
}

__attribute__((noinline)) void grow_a(size_t size)
{
	for (size_t i = 0; i < A_BLOCKS; i++)
		a_blocks[i] = block_of(size);
}

__attribute__((noinline)) void grow_b(size_t size)
{
	for (size_t i = 0; i < B_BLOCKS; i++)
		b_blocks[i] = block_of(size);
}

__attribute__((noinline)) void grow_c(size_t size)
{
	for (size_t i = 0; i < C_BLOCKS; i++)
		c_blocks[i] = block_of(size);
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 2)
		usage_exit(usage);
	size_t size = argc == 2 ? arg_ulong(argc, argv, 1, 1, usage) : 1 << 20;

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	grow_a(size);
	grow_b(size);
	for (size_t i = 0; i < A_FREED; i++)
		free(a_blocks[i]);
	for (size_t i = 0; i < B_BLOCKS; i++)
		free(b_blocks[i]);
	grow_c(size);
	phase_end(&ph);

	print_json(&ph,
		   "\"block\":%zu,\"peak_bytes\":%zu,\"a_at_peak\":%zu,\"b_at_peak\":%zu,"
		   "\"c_at_peak\":0,\"live_bytes\":%zu",
		   size, (size_t)(A_BLOCKS + B_BLOCKS) * size, (size_t)A_BLOCKS * size,
		   (size_t)B_BLOCKS * size, (size_t)(A_BLOCKS - A_FREED + C_BLOCKS) * size);
	linger();
	return 0;
}
