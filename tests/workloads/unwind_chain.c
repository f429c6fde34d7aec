/* unwind_chain MODE [COUNT] [--wait] [--linger]
 *
 * A call chain known exactly, built without frame pointers (gcc -O2 -fomit-frame-pointer
 * -fasynchronous-unwind-tables, see tests/build.rs), for testing stack unwinding from
 * .eh_frame. Every function of the chain is noipa (never inlined, cloned or renamed) and does
 * something after each call, so no call is a tail call and every frame stays on the stack:
 *
 *   DEEPEST <- level_alloca <- big_frame <- recurse x5 <- unwind_lib_call <- run_chain <- ...
 *
 *   level_alloca      alloca of a size known at run time (its CFA is rbp-based); it first
 *                     calls warm_stack, which writes 8 KiB of stack below it and returns
 *   big_frame         a 12 KiB local array, every page written (far beyond a small window
 *                     over the stack)
 *   recurse           5 frames of the same function
 *   unwind_lib_call   in libunwind_lib.so, called through the PLT, calls back recurse
 *   run_chain         the chain's root in the executable
 *
 * MODE picks DEEPEST and where run_chain is called from:
 *   faults  touch_pages: writes one byte in each of COUNT fresh anonymous pages (huge pages
 *           off): exactly COUNT minor faults under the chain.
 *           run_chain <- main
 *   pages   populate_pages: madvise(MADV_POPULATE_WRITE) over COUNT fresh pages: the kernel
 *           allocates them in the system call; the innermost user frame is libc's madvise.
 *           Its faults are the kernel's own (get_user_pages): getrusage counts them, but they
 *           raise no page-fault perf event.
 *           run_chain <- main
 *   malloc  leak_blocks: COUNT blocks of BLOCK_SIZE bytes, malloc'd and never freed.
 *           run_chain <- main
 *   thread  touch_pages, in a pthread: run_chain <- thread_main <- start_thread <- clone3
 *   signal  touch_pages, in a SIGUSR1 handler: run_chain <- on_sigusr1 <- __restore_rt
 *           <- (raise's frames in libc) <- send_signal <- main
 * COUNT defaults to 1000.
 *
 * JSON extras: "mode", "count", "depth" (recurse's frames), "block_size", "page_size",
 * "tid" (the thread that ran the chain), "handled" (1 when the signal handler ran).
 */
#include "common.h"
#include <alloca.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define CHAIN __attribute__((noipa))
/* After a call: the call cannot be a tail call, its caller's frame stays on the stack. */
#define KEEP_FRAME() asm volatile("" ::: "memory")

enum { RECURSION_DEPTH = 5, BLOCK_SIZE = 1000, BIG_FRAME_BYTES = 12288 };
enum deepest { TOUCH, POPULATE, LEAK };

static const char *usage =
	"unwind_chain faults|pages|malloc|thread|signal [COUNT] [--wait] [--linger]";

/* In libunwind_lib.so. */
int unwind_lib_call(int (*callback)(int), int arg);

static enum deepest deepest;
static size_t count;
static char *region;
static size_t region_len;
static void *volatile sink;
static volatile pid_t chain_tid;
static volatile sig_atomic_t handled;

CHAIN void touch_pages(char *p, size_t pages)
{
	size_t psz = page_size();
	for (size_t i = 0; i < pages; i++)
		((volatile char *)p)[i * psz] = 1;
	KEEP_FRAME();
}

CHAIN void populate_pages(char *p, size_t pages)
{
	if (madvise(p, pages * page_size(), MADV_POPULATE_WRITE))
		die("madvise(MADV_POPULATE_WRITE)");
	KEEP_FRAME();
}

CHAIN void leak_blocks(size_t blocks)
{
	for (size_t i = 0; i < blocks; i++) {
		void *p = malloc(BLOCK_SIZE);
		if (!p)
			die("malloc");
		sink = p;
	}
	KEEP_FRAME();
}

/* Writes the stack below its caller's frame, so the deepest functions' own frames fault no
 * page: the faults under the whole chain are exactly the pages touch_pages touches. */
CHAIN void warm_stack(void)
{
	volatile char below[8192];
	for (size_t i = 0; i < sizeof below; i += 512)
		below[i] = 0;
	below[sizeof below - 1] = 0;
}

CHAIN void level_alloca(size_t n)
{
	/* A size the compiler cannot know: the frame's size is dynamic. */
	size_t len = 100 + (n & 0xff);
	volatile char *buf = alloca(len);
	buf[0] = 1;
	buf[len - 1] = 1;
	warm_stack();
	switch (deepest) {
	case TOUCH:
		touch_pages(region, n);
		break;
	case POPULATE:
		populate_pages(region, n);
		break;
	case LEAK:
		leak_blocks(n);
		break;
	}
	KEEP_FRAME();
	buf[1] = buf[0];
}

CHAIN void big_frame(size_t n)
{
	volatile char big[BIG_FRAME_BYTES];
	/* Every page of it written: a sampled copy of the stack (perf's) stops at a page never
	 * touched. */
	for (size_t i = 0; i < sizeof big; i += 512)
		big[i] = (char)i;
	big[sizeof big - 1] = 1;
	level_alloca(n);
	KEEP_FRAME();
	big[1] = big[0];
}

CHAIN int recurse(int depth)
{
	if (depth > 1)
		recurse(depth - 1);
	else
		big_frame(count);
	KEEP_FRAME();
	return depth;
}

CHAIN void run_chain(void)
{
	chain_tid = gettid();
	unwind_lib_call(recurse, RECURSION_DEPTH);
	KEEP_FRAME();
}

CHAIN void *thread_main(void *arg)
{
	run_chain();
	KEEP_FRAME();
	return arg;
}

CHAIN void on_sigusr1(int sig)
{
	run_chain();
	KEEP_FRAME();
	handled = sig == SIGUSR1;
}

CHAIN void send_signal(void)
{
	if (raise(SIGUSR1))
		die("raise");
	KEEP_FRAME();
}

CHAIN void run_in_thread(void)
{
	pthread_t thread;
	int err = pthread_create(&thread, NULL, thread_main, NULL);
	if (err) {
		errno = err;
		die("pthread_create");
	}
	pthread_join(thread, NULL);
	KEEP_FRAME();
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 2 && argc != 3)
		usage_exit(usage);
	const char *mode = argv[1];
	count = arg_ulong(argc, argv, 2, 1000, usage);
	if (!strcmp(mode, "pages"))
		deepest = POPULATE;
	else if (!strcmp(mode, "malloc"))
		deepest = LEAK;
	else if (!strcmp(mode, "faults") || !strcmp(mode, "thread") || !strcmp(mode, "signal"))
		deepest = TOUCH;
	else
		usage_exit(usage);

	region_len = count * page_size() + 1;
	region = mmap(NULL, region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	madvise(region, region_len, MADV_NOHUGEPAGE);
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		die("sigaction");

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	if (!strcmp(mode, "thread"))
		run_in_thread();
	else if (!strcmp(mode, "signal"))
		send_signal();
	else
		run_chain();
	phase_end(&ph);

	print_json(&ph,
		   "\"mode\":\"%s\",\"count\":%zu,\"depth\":%d,\"block_size\":%d,\"page_size\":%zu,"
		   "\"tid\":%d,\"handled\":%d",
		   mode, count, RECURSION_DEPTH, BLOCK_SIZE, page_size(), (int)chain_tid,
		   (int)handled);
	linger();
	munmap(region, region_len);
	return 0;
}
