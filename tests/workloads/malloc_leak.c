/* malloc_leak LEAKS SIZE CHURN [DEPTH] [--wait] [--linger]
 *
 * Leaks exactly LEAKS blocks of SIZE bytes, allocated in leaky_function(), and frees
 * everything else: CHURN malloc/free pairs of 16-272 bytes in churn(). Then it exits (or
 * lingers), so the leaked blocks are still allocated at the end. With DEPTH, leaky_function
 * is called DEPTH calls of descend() deep, each frame 300 bytes from the next.
 *
 * MALLOC_LEAK_THEN_EXEC=1 in the environment: after leaking, the process execs itself (same
 * arguments, LEAKS 0), and the new image first allocates and frees LEAKS blocks of SIZE in
 * reused_function(). With address randomization off (setarch -R) they land where the old
 * image's leaked blocks were: a tracer must not take their frees for frees of those.
 *
 * JSON extras: "leaks", "size", "churn", "mallocs" (its own malloc calls), "bytes" (the
 * bytes they asked for), "reused" (blocks reused_function allocated and freed).
 */
#include "common.h"

static const char *usage = "malloc_leak LEAKS SIZE CHURN [DEPTH] [--wait] [--linger]";

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

__attribute__((noinline)) void reused_function(size_t count, size_t size)
{
	void **blocks = NULL;
	for (size_t i = 0; i < count; i++) {
		void *p = malloc(size);
		if (!p)
			die("malloc");
		/* a chain through the blocks themselves: no other allocation in between */
		*(void **)p = blocks;
		blocks = p;
	}
	while (blocks) {
		void *next = *blocks;
		free(blocks);
		blocks = next;
	}
}

/* Frames far apart: a stack walker's window over the stack cannot hold them all. */
__attribute__((noinline)) void *descend(size_t depth, size_t size)
{
	volatile char pad[300];
	pad[0] = (char)depth;
	void *p = depth ? descend(depth - 1, size) : leaky_function(size);
	pad[1] = pad[0]; /* used after the call: no tail call */
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
	if (argc != 4 && argc != 5)
		usage_exit(usage);
	size_t leaks = arg_ulong(argc, argv, 1, 0, usage);
	size_t size = arg_ulong(argc, argv, 2, 1, usage);
	size_t pairs = arg_ulong(argc, argv, 3, 0, usage);
	size_t depth = argc == 5 ? arg_ulong(argc, argv, 4, 1, usage) : 0;

	/* The second image: the first one's block addresses, allocated and freed. */
	const char *reuse = getenv("MALLOC_LEAK_REUSE");
	size_t reused = reuse ? strtoul(reuse, NULL, 10) : 0;
	reused_function(reused, size);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t i = 0; i < leaks; i++)
		sink = depth ? descend(depth - 1, size) : leaky_function(size);
	if (getenv("MALLOC_LEAK_THEN_EXEC")) {
		char count[32];
		snprintf(count, sizeof count, "%zu", leaks);
		unsetenv("MALLOC_LEAK_THEN_EXEC");
		setenv("MALLOC_LEAK_REUSE", count, 1);
		argv[1] = "0";
		execv(argv[0], argv);
		die("execv");
	}
	churn(pairs);
	phase_end(&ph);

	size_t bytes = leaks * size;
	for (size_t i = 0; i < pairs; i++)
		bytes += churn_size(i);
	print_json(&ph,
		   "\"leaks\":%zu,\"size\":%zu,\"churn\":%zu,\"mallocs\":%zu,\"bytes\":%zu,"
		   "\"reused\":%zu",
		   leaks, size, pairs, leaks + pairs, bytes, reused);
	linger();
	return 0;
}
