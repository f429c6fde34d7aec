/* heap_retained [trim] [--wait] [--linger]
 *
 * A big heap freed in small blocks: build_heap() allocates 100000 blocks of 1000 bytes (about
 * 100 MB, each written), then every block is freed but one in 64 and the last. glibc keeps
 * the freed memory (the blocks still allocated pin its pages, the last one the heap's top),
 * so RSS stays near 100 MB for 1.6 MB allocated. With trim, malloc_trim(0) then gives the
 * free pages back to the kernel.
 *
 * JSON extras: "heap_bytes" (allocated in all), "live_bytes" (still allocated, by the
 * workload's count), "rss_anon_bytes" (its RssAnon from /proc/self/status, read after the
 * frees and the trim).
 */
#include <malloc.h>

#include "common.h"

static const char *usage = "heap_retained [trim] [--wait] [--linger]";

enum { BLOCKS = 100000, SIZE = 1000, KEEP_EVERY = 64 };

static void *blocks[BLOCKS];

__attribute__((noinline)) void build_heap(void)
{
	for (int i = 0; i < BLOCKS; i++) {
		blocks[i] = malloc(SIZE);
		if (!blocks[i])
			die("malloc");
		memset(blocks[i], 1, SIZE);
	}
}

static unsigned long rss_anon_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		die("/proc/self/status");
	char line[256];
	unsigned long kb = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "RssAnon: %lu kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	int trim = argc == 2 && strcmp(argv[1], "trim") == 0;
	if (argc > 2 || (argc == 2 && !trim))
		usage_exit(usage);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	build_heap();
	size_t live = 0;
	for (int i = 0; i < BLOCKS; i++) {
		if (i % KEEP_EVERY == 0 || i == BLOCKS - 1)
			live += SIZE;
		else
			free(blocks[i]);
	}
	if (trim)
		malloc_trim(0);
	phase_end(&ph);

	print_json(&ph, "\"heap_bytes\":%lu,\"live_bytes\":%zu,\"rss_anon_bytes\":%lu",
		   (unsigned long)BLOCKS * SIZE, live, rss_anon_bytes());
	linger();
	return 0;
}
