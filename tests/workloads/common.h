/* Shared helpers for the memtrace test workloads.
 *
 * Every workload:
 *   - takes positional arguments plus the flags --wait and --linger (anywhere in argv);
 *   - --wait:   prints "ready <pid>" (flushed) and blocks until one line (or EOF) arrives on
 *               stdin before its main phase, so a test can attach a tracer first;
 *   - --linger: after printing its JSON line, blocks again on stdin before exiting, so a test
 *               can look at a tracer's view of a process that is still alive;
 *   - prints exactly one JSON line on stdout at the end, with its own oracle figures:
 *     {"pid":N,"minflt":N,"majflt":N,"phase_minflt":N,"phase_majflt":N,"elapsed_s":F,...}
 *     minflt/majflt: getrusage(RUSAGE_SELF) at the end; phase_*: deltas around the main phase
 *     only; elapsed_s: wall time of the main phase (CLOCK_MONOTONIC).
 */
#ifndef MEMTRACE_WORKLOAD_COMMON_H
#define MEMTRACE_WORKLOAD_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static int opt_wait, opt_linger;

static inline void die(const char *what)
{
	perror(what);
	exit(1);
}

static inline void usage_exit(const char *usage)
{
	fprintf(stderr, "usage: %s\n", usage);
	exit(2);
}

/* Removes --wait and --linger from argv (setting opt_wait/opt_linger); returns the new argc. */
static inline int parse_common_flags(int argc, char **argv, const char *usage)
{
	int n = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--wait"))
			opt_wait = 1;
		else if (!strcmp(argv[i], "--linger"))
			opt_linger = 1;
		else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			usage_exit(usage);
		else if (!strncmp(argv[i], "--", 2))
			usage_exit(usage);
		else
			argv[n++] = argv[i];
	}
	argv[n] = NULL;
	return n;
}

/* Positional argument i as an unsigned number, dflt when absent. */
static inline unsigned long arg_ulong(int argc, char **argv, int i, unsigned long dflt,
				      const char *usage)
{
	if (i >= argc)
		return dflt;
	char *end;
	errno = 0;
	unsigned long v = strtoul(argv[i], &end, 10);
	if (errno || end == argv[i] || *end || argv[i][0] == '-')
		usage_exit(usage);
	return v;
}

static inline size_t page_size(void)
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

static inline double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline void read_stdin_line(void)
{
	char line[256];
	if (!fgets(line, sizeof line, stdin))
		clearerr(stdin);
}

/* With --wait: announce our pid and block until the test says go. */
static inline void wait_for_go(void)
{
	if (!opt_wait)
		return;
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	read_stdin_line();
}

/* With --linger: block until the test releases us (after the JSON line was printed). */
static inline void linger(void)
{
	if (opt_linger)
		read_stdin_line();
}

struct phase {
	struct rusage start;
	double t0;
	long minflt, majflt;
	double elapsed_s;
};

static inline void phase_begin(struct phase *p)
{
	getrusage(RUSAGE_SELF, &p->start);
	p->t0 = now_s();
}

static inline void phase_end(struct phase *p)
{
	double t1 = now_s();
	struct rusage end;
	getrusage(RUSAGE_SELF, &end);
	p->elapsed_s = t1 - p->t0;
	p->minflt = end.ru_minflt - p->start.ru_minflt;
	p->majflt = end.ru_majflt - p->start.ru_majflt;
}

/* Prints the JSON line: the common fields, then extra_fmt (already-formatted JSON members,
 * without a leading comma; may be NULL), then flushes. */
__attribute__((format(printf, 2, 3))) static inline void print_json(const struct phase *p,
								     const char *extra_fmt, ...)
{
	struct rusage self;
	getrusage(RUSAGE_SELF, &self);
	printf("{\"pid\":%d,\"minflt\":%ld,\"majflt\":%ld,\"phase_minflt\":%ld,\"phase_majflt\":%ld,"
	       "\"elapsed_s\":%.6f",
	       (int)getpid(), self.ru_minflt, self.ru_majflt, p->minflt, p->majflt, p->elapsed_s);
	if (extra_fmt) {
		va_list ap;
		va_start(ap, extra_fmt);
		putchar(',');
		vprintf(extra_fmt, ap);
		va_end(ap);
	}
	printf("}\n");
	fflush(stdout);
}

#endif
