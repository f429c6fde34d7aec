/* malloc_threads THREADS BLOCKS [--wait] [--linger]
 *
 * THREADS threads each allocate BLOCKS blocks of 64 bytes in produce() and hand them to the
 * next thread, which frees them in consume(): every block is freed by another thread than
 * the one that allocated it, and nothing is left allocated.
 * JSON extras: "threads", "blocks" (per thread), "mallocs" and "frees" (their total).
 */
#include "common.h"
#include <pthread.h>

static const char *usage = "malloc_threads THREADS BLOCKS [--wait] [--linger]";

struct mailbox {
	pthread_mutex_t lock;
	void **blocks;
	size_t count;
};

struct worker {
	struct mailbox *out, *in;
	size_t blocks;
};

__attribute__((noinline)) void produce(struct mailbox *out, size_t blocks)
{
	for (size_t i = 0; i < blocks; i++) {
		void *p = malloc(64);
		if (!p)
			die("malloc");
		pthread_mutex_lock(&out->lock);
		out->blocks[out->count++] = p;
		pthread_mutex_unlock(&out->lock);
	}
}

__attribute__((noinline)) void consume(struct mailbox *in, size_t blocks)
{
	for (size_t freed = 0; freed < blocks;) {
		void *p = NULL;
		pthread_mutex_lock(&in->lock);
		if (in->count > 0)
			p = in->blocks[--in->count];
		pthread_mutex_unlock(&in->lock);
		if (p) {
			free(p);
			freed++;
		}
	}
}

static void *work(void *arg)
{
	struct worker *w = arg;
	produce(w->out, w->blocks);
	consume(w->in, w->blocks);
	return NULL;
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc != 3)
		usage_exit(usage);
	size_t nthreads = arg_ulong(argc, argv, 1, 1, usage);
	size_t blocks = arg_ulong(argc, argv, 2, 1, usage);
	/* Set up before the phase: its own allocations are not the workload's. */
	struct mailbox *boxes = calloc(nthreads, sizeof *boxes);
	struct worker *workers = calloc(nthreads, sizeof *workers);
	pthread_t *threads = calloc(nthreads, sizeof *threads);
	if (!boxes || !workers || !threads)
		die("calloc");
	for (size_t i = 0; i < nthreads; i++) {
		pthread_mutex_init(&boxes[i].lock, NULL);
		if (!(boxes[i].blocks = calloc(blocks, sizeof(void *))))
			die("calloc");
	}
	for (size_t i = 0; i < nthreads; i++)
		workers[i] = (struct worker){ &boxes[i], &boxes[(i + 1) % nthreads], blocks };

	wait_for_go();
	struct phase ph;
	phase_begin(&ph);
	for (size_t i = 0; i < nthreads; i++)
		if (pthread_create(&threads[i], NULL, work, &workers[i]))
			die("pthread_create");
	for (size_t i = 0; i < nthreads; i++)
		pthread_join(threads[i], NULL);
	phase_end(&ph);

	print_json(&ph, "\"threads\":%zu,\"blocks\":%zu,\"mallocs\":%zu,\"frees\":%zu", nthreads,
		   blocks, nthreads * blocks, nthreads * blocks);
	linger();
	return 0;
}
