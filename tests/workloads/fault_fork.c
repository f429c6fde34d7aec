/* fault_fork CHILDREN PAGES_PER_CHILD [--wait] [--linger]
 *
 * Main phase: forks CHILDREN processes; each mmaps PAGES_PER_CHILD fresh anonymous pages
 * (MADV_NOHUGEPAGE), writes one byte per page in child_touch_pages() and exits; the parent
 * waits for all of them. The parent's phase_* are its own deltas (the children's faults are
 * not in them). JSON extras: "children_minflt"/"children_majflt" (getrusage(RUSAGE_CHILDREN):
 * all the children's faults, >= CHILDREN * PAGES_PER_CHILD), "children_count":CHILDREN,
 * "pages_per_child":N, "children":[pids].
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/wait.h>

static const char *usage = "fault_fork CHILDREN PAGES_PER_CHILD [--wait] [--linger]";

__attribute__((noinline)) void child_touch_pages(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

static void child_main(size_t pages)
{
	size_t len = pages * page_size() + 1;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		_exit(1);
	madvise(p, len, MADV_NOHUGEPAGE);
	child_touch_pages(p, pages);
	_exit(0);
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 3)
		usage_exit(usage);
	size_t nchildren = arg_ulong(argc, argv, 1, 0, usage);
	size_t pages = arg_ulong(argc, argv, 2, 0, usage);
	pid_t *pids = calloc(nchildren + 1, sizeof *pids);
	char *list = malloc(nchildren * 12 + 1);
	if (!pids || !list)
		die("malloc");

	wait_for_go();
	fflush(stdout);
	struct phase ph;
	phase_begin(&ph);
	for (size_t i = 0; i < nchildren; i++) {
		pids[i] = fork();
		if (pids[i] < 0)
			die("fork");
		if (pids[i] == 0)
			child_main(pages);
	}
	int failed = 0;
	for (size_t i = 0; i < nchildren; i++) {
		int status;
		if (waitpid(pids[i], &status, 0) < 0)
			die("waitpid");
		failed |= !WIFEXITED(status) || WEXITSTATUS(status);
	}
	phase_end(&ph);

	struct rusage children;
	getrusage(RUSAGE_CHILDREN, &children);
	size_t off = 0;
	for (size_t i = 0; i < nchildren; i++)
		off += sprintf(list + off, "%s%d", i ? "," : "", (int)pids[i]);
	list[off] = 0;
	print_json(&ph,
		   "\"children_minflt\":%ld,\"children_majflt\":%ld,\"children_count\":%zu,"
		   "\"pages_per_child\":%zu,\"children\":[%s]",
		   children.ru_minflt, children.ru_majflt, nchildren, pages, list);
	linger();
	if (failed)
		fprintf(stderr, "fault_fork: a child failed\n");
	return failed;
}
