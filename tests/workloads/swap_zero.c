/* swap_zero MIB ZERO_OF_4 PASSES [--wait] [--linger]
 *
 * Fills MIB MiB of fresh anonymous memory in fill_pages(): of every 4 pages in a row, the
 * first ZERO_OF_4 are written with a zero byte (allocated, zero-filled) and the others with a
 * non-zero one, so any stretch of the memory holds that mix. Then reads one byte of every
 * page back PASSES times in read_back(). Run in a memory cgroup smaller than MIB with swap on,
 * the fill swaps out and every pass swaps in: on Linux 6.12+ the kernel neither writes nor
 * reads the zero-filled pages (swpout_zero, swpin_zero), it writes and reads the others
 * (pswpout, pswpin). Huge pages are off for the memory, so no folio mixes both kinds.
 * JSON extras: "mib", "pages", "zero_pages", "passes", "vmswap_kb" (its VmSwap at the end).
 */
#include "common.h"
#include <sys/mman.h>

static const char *usage = "swap_zero MIB ZERO_OF_4 PASSES [--wait] [--linger]";

__attribute__((noinline)) void fill_pages(char *p, size_t bytes, size_t zero_of_4)
{
	for (size_t i = 0; i < bytes / page_size(); i++)
		((volatile char *)p)[i * page_size()] = i % 4 < zero_of_4 ? 0 : 1;
}

__attribute__((noinline)) long read_back(const char *p, size_t bytes)
{
	long sum = 0;
	for (size_t i = 0; i < bytes; i += page_size())
		sum += ((const volatile char *)p)[i];
	return sum;
}

static long vmswap_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmSwap: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 4)
		usage_exit(usage);
	size_t mib = arg_ulong(argc, argv, 1, 0, usage);
	size_t zero_of_4 = arg_ulong(argc, argv, 2, 0, usage);
	size_t passes = arg_ulong(argc, argv, 3, 0, usage);
	if (zero_of_4 > 4)
		usage_exit(usage);
	size_t bytes = mib << 20, pages = bytes / page_size();
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, bytes, MADV_NOHUGEPAGE);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	fill_pages(p, bytes, zero_of_4);
	long sum = 0;
	for (size_t i = 0; i < passes; i++)
		sum += read_back(p, bytes);
	phase_end(&ph);

	size_t zero_pages = pages / 4 * zero_of_4 + (pages % 4 < zero_of_4 ? pages % 4 : zero_of_4);
	print_json(&ph,
		   "\"mib\":%zu,\"pages\":%zu,\"zero_pages\":%zu,\"passes\":%zu,\"vmswap_kb\":%ld,"
		   "\"sum\":%ld",
		   mib, pages, zero_pages, passes, vmswap_kb(), sum);
	linger();
	return 0;
}
