/* fault_touch PAGES [--wait] [--linger]
 *
 * mmaps PAGES fresh anonymous private pages (MADV_NOHUGEPAGE: one fault per page) and writes
 * one byte per page in touch_pages(): the main phase, so phase_minflt >= PAGES.
 * JSON extras: "pages":PAGES, "page_size":N, "addr":"0x..." (start of the mapping).
 */
#include "common.h"
#include <sys/mman.h>

static const char *usage = "fault_touch PAGES [--wait] [--linger]";

__attribute__((noinline)) void touch_pages(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 2)
		usage_exit(usage);
	size_t pages = arg_ulong(argc, argv, 1, 0, usage);
	size_t psz = page_size();

	char *p = mmap(NULL, pages * psz + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, pages * psz + 1, MADV_NOHUGEPAGE);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	touch_pages(p, pages);
	phase_end(&ph);

	print_json(&ph, "\"pages\":%zu,\"page_size\":%zu,\"addr\":\"%p\"", pages, psz, (void *)p);
	linger();
	munmap(p, pages * psz + 1);
	return 0;
}
