/* lifetimes [--wait] [--linger]
 *
 * Blocks of known lifetimes from known stacks: free_at_once() frees each of its 2000 blocks
 * right after allocating it; free_after_2ms() allocates 20 batches of 10 blocks and frees
 * each batch 2 ms later; free_after_200ms() allocates 10 blocks and frees them 200 ms later;
 * keep_to_the_end() allocates 5 blocks never freed. Each block's lifetime is measured by the
 * workload itself, from malloc's return to the call of free (CLOCK_MONOTONIC, the clock the
 * kernel stamps events with).
 *
 * JSON extras, for each of at_once, after_2ms, after_200ms: "<name>_freed" (blocks freed),
 * "<name>_min_us" and "<name>_max_us" (the shortest and longest lifetime measured, in µs);
 * "kept" (blocks never freed).
 */
#include "common.h"

static const char *usage = "lifetimes [--wait] [--linger]";

enum { AT_ONCE = 2000, BATCHES = 20, BATCH = 10, SLOW = 10, KEPT = 5 };

struct span {
	size_t freed;
	double min_us, max_us;
};

static double monotonic_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static void *block(void)
{
	void *p = malloc(64);
	if (!p)
		die("malloc");
	return p;
}

/* Frees p, allocated at `born` (µs), and counts its lifetime. */
static void free_counted(void *p, double born, struct span *s)
{
	double lifetime = monotonic_us() - born;
	free(p);
	if (s->freed == 0 || lifetime < s->min_us)
		s->min_us = lifetime;
	if (s->freed == 0 || lifetime > s->max_us)
		s->max_us = lifetime;
	s->freed++;
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
	nanosleep(&ts, NULL);
}

__attribute__((noinline)) void free_at_once(struct span *s)
{
	for (int i = 0; i < AT_ONCE; i++) {
		void *p = block();
		free_counted(p, monotonic_us(), s);
	}
}

/* n blocks freed `us` microseconds after their allocation. */
static void free_later(int n, long us, struct span *s)
{
	void *blocks[BATCH > SLOW ? BATCH : SLOW];
	double born[BATCH > SLOW ? BATCH : SLOW];
	for (int i = 0; i < n; i++) {
		blocks[i] = block();
		born[i] = monotonic_us();
	}
	sleep_us(us);
	for (int i = 0; i < n; i++)
		free_counted(blocks[i], born[i], s);
}

__attribute__((noinline)) void free_after_2ms(struct span *s)
{
	for (int b = 0; b < BATCHES; b++)
		free_later(BATCH, 2000, s);
}

__attribute__((noinline)) void free_after_200ms(struct span *s)
{
	free_later(SLOW, 200000, s);
}

static void *kept[KEPT];

__attribute__((noinline)) void keep_to_the_end(void)
{
	for (int i = 0; i < KEPT; i++)
		kept[i] = block();
}

int main(int argc, char **argv)
{
	argc = parse_common_flags(argc, argv, usage);
	if (argc > 1)
		usage_exit(usage);

	wait_for_go();
	struct phase ph;
	struct span at_once = { 0 }, after_2ms = { 0 }, after_200ms = { 0 };
	phase_begin(&ph);
	free_at_once(&at_once);
	free_after_2ms(&after_2ms);
	free_after_200ms(&after_200ms);
	keep_to_the_end();
	phase_end(&ph);

	print_json(&ph,
		   "\"at_once_freed\":%zu,\"at_once_min_us\":%.3f,\"at_once_max_us\":%.3f,"
		   "\"after_2ms_freed\":%zu,\"after_2ms_min_us\":%.3f,\"after_2ms_max_us\":%.3f,"
		   "\"after_200ms_freed\":%zu,\"after_200ms_min_us\":%.3f,"
		   "\"after_200ms_max_us\":%.3f,\"kept\":%d",
		   at_once.freed, at_once.min_us, at_once.max_us, after_2ms.freed, after_2ms.min_us,
		   after_2ms.max_us, after_200ms.freed, after_200ms.min_us, after_200ms.max_us,
		   KEPT);
	linger();
	return 0;
}
