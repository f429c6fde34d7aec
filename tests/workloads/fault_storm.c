/* fault_storm [MIB [ROUNDS]] [--wait] [--linger]     (defaults: 512 4)
 *
 * The benchmark workload. Main phase: ROUNDS times, mmap MIB MiB anonymous (MADV_NOHUGEPAGE),
 * write one byte per page in storm_touch(), munmap. With the defaults that is about 524k minor
 * faults. elapsed_s is the time of the whole loop.
 * JSON extras: "mib":MIB, "rounds":ROUNDS, "pages_touched":N (MIB MiB in pages times ROUNDS).
 */
#include "common.h"
#include <sys/mman.h>

static const char *usage = "fault_storm [MIB [ROUNDS]] [--wait] [--linger]";

__attribute__((noinline)) void storm_touch(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 3)
		usage_exit(usage);
	size_t mib = arg_ulong(argc, argv, 1, 512, usage);
	size_t rounds = arg_ulong(argc, argv, 2, 4, usage);
	size_t len = mib << 20;
	size_t pages = len / page_size();

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t r = 0; r < rounds; r++) {
		char *p = mmap(NULL, len + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED)
			die("mmap");
		madvise(p, len + 1, MADV_NOHUGEPAGE);
		storm_touch(p, pages);
		munmap(p, len + 1);
	}
	phase_end(&ph);

	print_json(&ph, "\"mib\":%zu,\"rounds\":%zu,\"pages_touched\":%zu", mib, rounds,
		   pages * rounds);
	linger();
	return 0;
}
