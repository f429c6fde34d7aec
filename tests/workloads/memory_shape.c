/* memory_shape MODE ARGS... [--wait] [--linger]
 *
 * A process whose memory has one known shape over time, for `memtrace diagnose`:
 *   grow KIB_PER_TICK TICKS   every 100 ms, malloc and touch KIB_PER_TICK KiB, never freed
 *                             (a steady leak: resident memory rises along a line)
 *   flat MIB TICKS            touch MIB MiB once, then touch the same memory again every
 *                             100 ms (a fixed working set: flat after the first tick)
 *   oneoff MIB TICKS          8 MiB at the start; at a third of the run, MIB MiB more at
 *                             once; flat otherwise (one big allocation, not a leak)
 *   stack PERCENT TICKS       recurse until the stack holds PERCENT% of its soft limit,
 *                             and stay there for TICKS x 100 ms
 *   filemajor PATH TICKS      every 100 ms, drop PATH's pages from the page cache and read
 *                             it all back through a mapping (sustained major faults)
 * JSON extras: "mode", and for stack: "stack_bytes" (how deep it went), "limit_bytes".
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *usage = "memory_shape grow|flat|oneoff|stack|filemajor ARG TICKS";

static void tick(void)
{
	struct timespec ts = { 0, 100 * 1000 * 1000 };
	nanosleep(&ts, NULL);
}

__attribute__((noinline)) static void touch(volatile char *p, size_t bytes)
{
	for (size_t i = 0; i < bytes; i += page_size())
		p[i] = (char)i;
}

__attribute__((noinline)) static void grow(size_t kib, unsigned long ticks)
{
	for (unsigned long t = 0; t < ticks; t++) {
		char *p = malloc(kib << 10);
		if (!p)
			die("malloc");
		touch(p, kib << 10);
		tick();
	}
}

__attribute__((noinline)) static void flat(size_t mib, unsigned long ticks)
{
	char *p = malloc(mib << 20);
	if (!p)
		die("malloc");
	for (unsigned long t = 0; t < ticks; t++) {
		touch(p, mib << 20);
		tick();
	}
}

__attribute__((noinline)) static void oneoff(size_t mib, unsigned long ticks)
{
	char *base = malloc(8 << 20);
	if (!base)
		die("malloc");
	touch(base, 8 << 20);
	for (unsigned long t = 0; t < ticks; t++) {
		if (t == ticks / 3) {
			char *big = malloc(mib << 20);
			if (!big)
				die("malloc");
			touch(big, mib << 20);
		}
		tick();
	}
}

static char *stack_top;
static size_t stack_target;
static size_t deepest;

/* 1 KiB a frame, touched, until the target depth; then hold there. */
__attribute__((noinline)) static void recurse(unsigned long ticks)
{
	volatile char frame[1024];
	frame[0] = 1;
	frame[sizeof frame - 1] = 1;
	size_t depth = (size_t)(stack_top - (char *)frame);
	if (depth < stack_target) {
		recurse(ticks);
	} else {
		deepest = depth;
		for (unsigned long t = 0; t < ticks; t++)
			tick();
	}
	frame[1] = frame[0];
}

static void filemajor(const char *path, unsigned long ticks)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die("open");
	struct stat st;
	if (fstat(fd, &st) < 0)
		die("fstat");
	char *p = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	volatile long sum = 0;
	for (unsigned long t = 0; t < ticks; t++) {
		/* Unmapped from us and dropped from the cache: the next read goes to disk. */
		madvise(p, st.st_size, MADV_DONTNEED);
		posix_fadvise(fd, 0, st.st_size, POSIX_FADV_DONTNEED);
		for (off_t i = 0; i < st.st_size; i += page_size())
			sum += p[i];
		tick();
	}
	munmap(p, st.st_size);
	close(fd);
}

int main(int argc, char **argv)
{
	char here;
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 4)
		usage_exit(usage);
	const char *mode = argv[1];
	unsigned long ticks = arg_ulong(argc, argv, 3, 0, usage);
	struct rlimit limit = { 0, 0 };
	getrlimit(RLIMIT_STACK, &limit);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	if (!strcmp(mode, "grow")) {
		grow(arg_ulong(argc, argv, 2, 0, usage), ticks);
	} else if (!strcmp(mode, "flat")) {
		flat(arg_ulong(argc, argv, 2, 0, usage), ticks);
	} else if (!strcmp(mode, "oneoff")) {
		oneoff(arg_ulong(argc, argv, 2, 0, usage), ticks);
	} else if (!strcmp(mode, "stack")) {
		stack_top = &here;
		stack_target = (size_t)limit.rlim_cur / 100 * arg_ulong(argc, argv, 2, 0, usage);
		recurse(ticks);
	} else if (!strcmp(mode, "filemajor")) {
		filemajor(argv[2], ticks);
	} else {
		usage_exit(usage);
	}
	phase_end(&ph);

	print_json(&ph, "\"mode\":\"%s\",\"stack_bytes\":%zu,\"limit_bytes\":%llu", mode, deepest,
		   (unsigned long long)limit.rlim_cur);
	linger();
	return 0;
}
