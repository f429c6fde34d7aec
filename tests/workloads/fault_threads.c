/* fault_threads THREADS PAGES_PER_THREAD [--wait] [--linger]
 *
 * Main phase: starts THREADS pthreads; each mmaps PAGES_PER_THREAD fresh anonymous pages
 * (MADV_NOHUGEPAGE) and writes one byte per page in thread_touch_pages(); then joins them all.
 * phase_minflt >= THREADS * PAGES_PER_THREAD (thread stacks fault too).
 * JSON extras: "threads":THREADS, "pages_per_thread":N, "tids":[...] (the threads' kernel tids).
 */
#include "common.h"
#include <pthread.h>
#include <sys/mman.h>

static const char *usage = "fault_threads THREADS PAGES_PER_THREAD [--wait] [--linger]";

static size_t pages_per_thread;

__attribute__((noinline)) void thread_touch_pages(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

static void *thread_main(void *arg)
{
	pid_t *tid = arg;
	*tid = gettid();
	size_t len = pages_per_thread * page_size() + 1;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, len, MADV_NOHUGEPAGE);
	thread_touch_pages(p, pages_per_thread);
	munmap(p, len);
	return NULL;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 3)
		usage_exit(usage);
	size_t nthreads = arg_ulong(argc, argv, 1, 0, usage);
	pages_per_thread = arg_ulong(argc, argv, 2, 0, usage);
	pthread_t *threads = calloc(nthreads + 1, sizeof *threads);
	pid_t *tids = calloc(nthreads + 1, sizeof *tids);
	if (!threads || !tids)
		die("calloc");

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t i = 0; i < nthreads; i++) {
		int err = pthread_create(&threads[i], NULL, thread_main, &tids[i]);
		if (err) {
			errno = err;
			die("pthread_create");
		}
	}
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	phase_end(&ph);

	/* The tid list is built before printing so the JSON line is written in one go. */
	char *list = malloc(nthreads * 12 + 1);
	if (!list)
		die("malloc");
	size_t off = 0;
	for (size_t i = 0; i < nthreads; i++)
		off += sprintf(list + off, "%s%d", i ? "," : "", (int)tids[i]);
	list[off] = 0;
	print_json(&ph, "\"threads\":%zu,\"pages_per_thread\":%zu,\"tids\":[%s]", nthreads,
		   pages_per_thread, list);
	linger();
	return 0;
}
