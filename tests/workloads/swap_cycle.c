/* swap_cycle MIB PASSES [unmap|syscall] [--wait] [--linger]
 *
 * Touches MIB MiB of fresh anonymous memory in touch_pages(), then reads one byte of every page
 * back PASSES times in read_back(). Run in a memory cgroup smaller than MIB with swap on, the
 * touch swaps out and every pass swaps in (and out again): PASSES >= 1 cycles a working set
 * larger than the limit (thrashing), PASSES 0 swaps out once and never reads back.
 * With "unmap", the memory is then unmapped: its swap entries are freed, not swapped in.
 * With "syscall", each pass is read(2) from /dev/zero into the memory instead: the swap-ins
 * happen in faults the kernel takes inside the syscall, in refill_by_syscall().
 * JSON extras: "mib", "passes", "vmswap_kb" (its own VmSwap after the passes, from
 * /proc/self/status), "vmswap_after_kb" (at the end).
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *usage = "swap_cycle MIB PASSES [unmap|syscall] [--wait] [--linger]";

__attribute__((noinline)) void touch_pages(char *p, size_t bytes)
{
	for (size_t i = 0; i < bytes; i += page_size())
		((volatile char *)p)[i] = 1;
}

__attribute__((noinline)) long read_back(const char *p, size_t bytes)
{
	long sum = 0;
	for (size_t i = 0; i < bytes; i += page_size())
		sum += ((const volatile char *)p)[i];
	return sum;
}

__attribute__((noinline)) void refill_by_syscall(char *p, size_t bytes)
{
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0)
		die("/dev/zero");
	for (size_t done = 0; done < bytes;) {
		ssize_t n = read(fd, p + done, bytes - done < (1 << 20) ? bytes - done : (1 << 20));
		if (n <= 0)
			die("read");
		done += (size_t)n;
	}
	close(fd);
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
	const char *mode = argc == 4 ? argv[3] : "";
	if (argc != 3 && !(argc == 4 && (!strcmp(mode, "unmap") || !strcmp(mode, "syscall"))))
		usage_exit(usage);
	size_t mib = arg_ulong(argc, argv, 1, 0, usage);
	size_t passes = arg_ulong(argc, argv, 2, 0, usage);
	size_t bytes = mib << 20;
	char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, bytes, MADV_NOHUGEPAGE);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	touch_pages(p, bytes);
	long sum = 0;
	for (size_t i = 0; i < passes; i++) {
		if (!strcmp(mode, "syscall"))
			refill_by_syscall(p, bytes);
		else
			sum += read_back(p, bytes);
	}
	long after_passes = vmswap_kb();
	if (!strcmp(mode, "unmap") && munmap(p, bytes) != 0)
		die("munmap");
	phase_end(&ph);

	print_json(&ph,
		   "\"mib\":%zu,\"passes\":%zu,\"vmswap_kb\":%ld,\"vmswap_after_kb\":%ld,\"sum\":%ld",
		   mib, passes, after_passes, vmswap_kb(), sum);
	linger();
	return 0;
}
