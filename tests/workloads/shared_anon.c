/* shared_anon PAGES [--wait] [--linger]
 *
 * Shared memory of two kinds, each PAGES pages, written one byte per page (write faults on a
 * shared mapping take no fault-around: one fault per page):
 *   - an mmap(MAP_SHARED | MAP_ANONYMOUS) mapping, in touch_shared() (maps: /dev/zero (deleted));
 *   - a System V segment (shmget IPC_PRIVATE, shmat), in touch_sysv() (maps: /SYSV00000000
 *     (deleted)); removed with IPC_RMID at once, so it goes when the process does.
 * The main phase is both. JSON extras: "pages", "shmid" (shmget's answer), and each part's
 * own getrusage minor-fault delta: "shared_minflt", "sysv_minflt".
 */
#include "common.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

static const char *usage = "shared_anon PAGES [--wait] [--linger]";

__attribute__((noinline)) void touch_shared(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

__attribute__((noinline)) void touch_sysv(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
}

static long minflt_now(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 2)
		usage_exit(usage);
	size_t pages = arg_ulong(argc, argv, 1, 0, usage);
	size_t len = pages * page_size();

	char *shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		die("mmap");
	int shmid = shmget(IPC_PRIVATE, len, IPC_CREAT | 0600);
	if (shmid < 0)
		die("shmget");
	char *sysv = shmat(shmid, NULL, 0);
	if (sysv == (void *)-1)
		die("shmat");
	if (shmctl(shmid, IPC_RMID, NULL))
		die("shmctl");
	/* Shared memory may be given huge pages (shmem_enabled): one fault per small page here. */
	madvise(shared, len, MADV_NOHUGEPAGE);
	madvise(sysv, len, MADV_NOHUGEPAGE);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	long before = minflt_now();
	touch_shared(shared, pages);
	long shared_minflt = minflt_now() - before;
	before = minflt_now();
	touch_sysv(sysv, pages);
	long sysv_minflt = minflt_now() - before;
	phase_end(&ph);

	print_json(&ph, "\"pages\":%zu,\"shmid\":%d,\"shared_minflt\":%ld,\"sysv_minflt\":%ld", pages,
		   shmid, shared_minflt, sysv_minflt);
	linger();
	shmdt(sysv);
	munmap(shared, len);
	return 0;
}
