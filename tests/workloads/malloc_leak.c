/* malloc_leak LEAKS SIZE CHURN [--wait] [--linger]
 *
 * Leaks exactly LEAKS blocks of SIZE bytes, allocated in leaky_function(), and frees
 * everything else: CHURN malloc/free pairs of 16-272 bytes in churn(). Then it exits (or
 * lingers), so the leaked blocks are still allocated at the end.
 * JSON extras: "leaks", "size", "churn", "mallocs" (its own malloc calls), "bytes" (the
 * bytes they asked for).
 */
#include "common.h"

static const char *usage = "malloc_leak LEAKS SIZE CHURN [--wait] [--linger]";

/* Kept reachable so the compiler cannot drop the allocations. */
static void *volatile sink;

__attribute__((noinline)) void *leaky_function(size_t size)
{
	void *p = malloc(size);
	if (!p)
		die("malloc");
	memset(p, 1, size);
	return p;
}

static size_t churn_size(size_t i)
{
	return 16 + (i % 257);
}

__attribute__((noinline)) void churn(size_t pairs)
{
	for (size_t i = 0; i < pairs; i++) {
		void *p = malloc(churn_size(i));
		if (!p)
			die("malloc");
		sink = p;
		free(p);
	}
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 4)
		usage_exit(usage);
	size_t leaks = arg_ulong(argc, argv, 1, 0, usage);
	size_t size = arg_ulong(argc, argv, 2, 1, usage);
	size_t pairs = arg_ulong(argc, argv, 3, 0, usage);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t i = 0; i < leaks; i++)
		sink = leaky_function(size);
	churn(pairs);
	phase_end(&ph);

	size_t bytes = leaks * size;
	for (size_t i = 0; i < pairs; i++)
		bytes += churn_size(i);
	print_json(&ph, "\"leaks\":%zu,\"size\":%zu,\"churn\":%zu,\"mallocs\":%zu,\"bytes\":%zu",
		   leaks, size, pairs, leaks + pairs, bytes);
	linger();
	return 0;
}
