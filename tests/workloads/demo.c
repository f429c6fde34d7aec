/* demo [TICKS] [--wait] [--linger]     (default TICKS: 100, about 1.5 s)
 *
 * The README's demo: a small "leaky service" to look at with `memtrace faults -- demo`.
 *   load_config()     writes a config file, drops it from the page cache and reads it back
 *                     through mmap (major faults, on a disk-backed $TMPDIR or /var/tmp);
 *   handle_requests() serves a few requests per tick: serve_request() mallocs a buffer of
 *                     varying size (4 KiB .. 1 MiB) and touches it; every 8th one is leaked;
 *   grow_cache()      keeps growing one anonymous mapping (mremap) and touches the new part.
 * The main phase is the whole run. JSON extras: "ticks", "requests", "leaked_bytes",
 * "cache_bytes", "config_lines".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>

static const char *usage = "demo [TICKS] [--wait] [--linger]";

#define CONFIG_PAGES 64
#define CACHE_STEP (256 << 10)

static size_t leaked_bytes, requests;
static char *cache;
static size_t cache_bytes;

static char config_path[4096];

static void remove_config(void)
{
	unlink(config_path);
}

/* Writes a config file, drops it from the page cache and reads it through a mapping that stays
 * for the whole run (as a service keeps its config mapped): one major fault per page. */
__attribute__((noinline)) size_t load_config(void)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
	snprintf(config_path, sizeof config_path, "%s/memtrace-demo-config.XXXXXX", dir);
	int fd = mkstemp(config_path);
	if (fd < 0)
		die(config_path);
	atexit(remove_config);
	size_t len = CONFIG_PAGES * page_size();
	FILE *f = fdopen(fd, "w+");
	for (size_t i = 0; (size_t)ftell(f) < len; i++)
		fprintf(f, "worker.%zu.buffer_kib = %zu\n", i, 4 + i % 1024);
	fflush(f);
	fsync(fd);
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);

	char *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, len, MADV_RANDOM);
	size_t lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += p[i] == '\n';
	return lines;
}

/* Touch memory in our own frame-pointer code, one write per page, so the fault stacks name the
 * demo's functions (libc's memset has no frame pointer and would hide its caller). */
__attribute__((noinline)) void fill_pages(char *p, size_t size, char value)
{
	for (size_t i = 0; i < size; i += 4096)
		p[i] = value;
}

__attribute__((noinline)) void serve_request(size_t size)
{
	char *buf = malloc(size);
	if (!buf)
		die("malloc");
	fill_pages(buf, size, (char)requests);
	requests++;
	if (requests % 8 == 0)
		leaked_bytes += size; /* the bug: this path forgets to free */
	else
		free(buf);
}

__attribute__((noinline)) void handle_requests(size_t tick)
{
	static const size_t kib[] = {4, 16, 64, 200, 512, 1024, 48, 300};
	for (size_t i = 0; i < 4; i++)
		serve_request(kib[(tick * 3 + i) % 8] << 10);
}

__attribute__((noinline)) void grow_cache(void)
{
	size_t new_bytes = cache_bytes + CACHE_STEP;
	char *p = cache ? mremap(cache, cache_bytes, new_bytes, MREMAP_MAYMOVE)
			: mmap(NULL, new_bytes, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("grow_cache");
	madvise(p, new_bytes, MADV_NOHUGEPAGE);
	fill_pages(p + cache_bytes, CACHE_STEP, 0x5a);
	cache = p;
	cache_bytes = new_bytes;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 2)
		usage_exit(usage);
	size_t ticks = arg_ulong(argc, argv, 1, 100, usage);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	size_t lines = load_config();
	for (size_t t = 0; t < ticks; t++) {
		handle_requests(t);
		grow_cache();
		usleep(15000);
	}
	phase_end(&ph);

	print_json(&ph,
		   "\"ticks\":%zu,\"requests\":%zu,\"leaked_bytes\":%zu,\"cache_bytes\":%zu,"
		   "\"config_lines\":%zu",
		   ticks, requests, leaked_bytes, cache_bytes, lines);
	linger();
	return 0;
}
