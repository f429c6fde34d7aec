/* fault_file PATH PAGES STRIDE [--wait] [--linger]
 *
 * Writes PATH (PAGES pages of data, overwriting it), fsyncs it and drops it from the page cache
 * (posix_fadvise DONTNEED, checked with mincore, retried; a warning on stderr if pages stay
 * resident), mmaps it read-only MAP_SHARED with MADV_RANDOM (no readahead), then in the main
 * phase read_file_pages() reads one byte every STRIDE pages: each read is one major fault.
 * PATH must be on a disk-backed filesystem (not tmpfs) for the faults to be major. PATH is left
 * in place for the caller to remove.
 * JSON extras: "pages":PAGES, "stride":STRIDE, "reads":N (pages read: ceil(PAGES/STRIDE)),
 * "resident_before":N (pages of PATH still in the page cache when the phase began),
 * "sum":N (sum of the bytes read), "addr":"0x..." (start of the mapping).
 */
#include "common.h"
#include <fcntl.h>
#include <sys/mman.h>

static const char *usage = "fault_file PATH PAGES STRIDE [--wait] [--linger]";

static volatile unsigned long sink;

__attribute__((noinline)) unsigned long read_file_pages(const char *p, size_t pages, size_t stride)
{
	size_t psz = page_size();
	unsigned long sum = 0;
	for (size_t i = 0; i < pages; i += stride)
		sum += ((const volatile char *)p)[i * psz];
	sink = sum;
	return sum;
}

static void write_file(int fd, size_t pages)
{
	size_t psz = page_size();
	char *buf = malloc(psz);
	if (!buf)
		die("malloc");
	for (size_t i = 0; i < pages; i++) {
		memset(buf, 'a' + (int)(i % 26), psz);
		for (size_t off = 0; off < psz;) {
			ssize_t n = write(fd, buf + off, psz - off);
			if (n < 0)
				die("write");
			off += n;
		}
	}
	free(buf);
	if (fsync(fd))
		die("fsync");
}

static size_t resident_pages(void *p, size_t pages)
{
	unsigned char *vec = calloc(pages ? pages : 1, 1);
	if (!vec)
		die("calloc");
	if (mincore(p, pages * page_size(), vec))
		die("mincore");
	size_t n = 0;
	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	free(vec);
	return n;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 4)
		usage_exit(usage);
	const char *path = argv[1];
	size_t pages = arg_ulong(argc, argv, 2, 0, usage);
	size_t stride = arg_ulong(argc, argv, 3, 1, usage);
	if (pages == 0 || stride == 0)
		usage_exit(usage);
	size_t len = pages * page_size();

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path);
	write_file(fd, pages);

	char *p = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, len, MADV_RANDOM);
	size_t resident = pages;
	for (int attempt = 0; attempt < 5 && resident; attempt++) {
		if (attempt)
			usleep(20000);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		resident = resident_pages(p, pages);
	}
	if (resident)
		fprintf(stderr, "fault_file: warning: %zu of %zu pages of %s still resident\n",
			resident, pages, path);

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	unsigned long sum = read_file_pages(p, pages, stride);
	phase_end(&ph);

	print_json(&ph,
		   "\"pages\":%zu,\"stride\":%zu,\"reads\":%zu,\"resident_before\":%zu,\"sum\":%lu,"
		   "\"addr\":\"%p\"",
		   pages, stride, (pages + stride - 1) / stride, resident, sum, (void *)p);
	linger();
	munmap(p, len);
	close(fd);
	return 0;
}
