/* oom_heap [--wait]
 *
 * Allocates until the OOM killer ends it, from known stacks: hold_a() allocates 16 blocks of
 * 1 MiB, then grow_b() allocates 1 MiB blocks without end. Every block is written (resident),
 * and after each one the workload prints what it holds ("a 16", then "b N"), so whoever reads
 * its output knows what it had allocated when it was killed (the block it was allocating
 * then, at most one more).
 */
#include "common.h"

static const char *usage = "oom_heap [--wait]";

enum { MIB = 1 << 20, A_BLOCKS = 16 };

static void *block(void)
{
	void *p = malloc(MIB);
	if (!p)
		die("malloc");
	memset(p, 1, MIB);
	return p;
}

__attribute__((noinline)) void hold_a(void)
{
	for (int i = 0; i < A_BLOCKS; i++)
		block();
	printf("a %d\n", A_BLOCKS);
	fflush(stdout);
}

__attribute__((noinline)) void grow_b(void)
{
	for (long n = 1;; n++) {
		block();
		printf("b %ld\n", n);
		fflush(stdout);
	}
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 1)
		usage_exit(usage);
	wait_for_go();
	hold_a();
	grow_b();
	return 0;
}
