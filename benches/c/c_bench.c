/*
 * The library's figures measured from C, through include/storyflow_tasks.h and
 * the real shared library, as a C/C++ TTS engine would call it.
 *
 * One mode per process: the manager is process-wide, its configuration is
 * fixed at the first submit, so each measurement gets a fresh process.
 * Every mode prints one JSON object on stdout: {"figure": [samples...], ...,
 * "info": {...}}; benches/report.py turns the samples into median/min/max.
 *
 * Usage: c_bench MODE [COUNT]
 *   throughput   COUNT no-op tasks submitted, until all finished; then one
 *                submit's cost with COUNT finished tasks retained
 *   submit_small one submit's cost with 10 finished tasks retained
 *   status       sft_get_task_status + free on a task with 0 and 1,000 segments
 *   wake         submit-to-start latency on an idle worker
 *   memory       resident bytes per retained finished task, COUNT of them
 *   burst        slowest submit and slowest status read while COUNT are submitted
 *   pending      the same with the worker held, so all COUNT pile up pending; then
 *                the worker drains them alone while the reader goes on polling
 *   burst_diag, pending_diag: the same, also telling for each call over 1 ms whether its thread
 *                was on the CPU, blocked, or preempted meanwhile (getrusage per
 *                call: slower, for finding causes, not for the published figures)
 *   writer_hot   status read latency while a task reports progress in a tight loop
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "storyflow_tasks.h"

/* Calls timed one by one in a batch for per-call figures: enough to swamp the clock's cost. */
#define SUBMIT_BATCH 1000
#define SUBMIT_SAMPLES 15
#define STATUS_K0_BATCH 20000
#define STATUS_K1000_BATCH 1000
#define STATUS_SAMPLES 15
#define WAKE_CHUNKS 5
#define WAKE_PER_CHUNK 300
#define SLOWEST_KEPT 5
#define WRITER_HOT_CHUNKS 5
#define WRITER_HOT_CHUNK_NS 400000000ull

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void must(SftResult result, const char *what) {
    if (result == SFT_OK) return;
    char *message = sft_last_error_message();
    fprintf(stderr, "c_bench: %s failed: %s: %s\n", what, sft_result_name(result), message ? message : "");
    sft_string_free(message);
    exit(2);
}

static void configure(const char *json) { must(sft_configure(json), "sft_configure"); }

static int32_t noop_task(const char *task_id, void *user_data) {
    (void)task_id;
    (void)user_data;
    return 0;
}

/* Submits a no-op task; returns its id (caller frees) when `want_id`. */
static char *submit_noop(bool want_id) {
    char *id = NULL;
    must(sft_submit_task(noop_task, NULL, NULL, NULL, want_id ? &id : NULL), "sft_submit_task");
    return id;
}

static void wait_finished(const char *task_id) {
    must(sft_wait_task(task_id, SFT_WAIT_FOREVER, NULL), "sft_wait_task");
}

/* Submits `count` no-op tasks and waits until the last (so, FIFO, all) finished. */
static void submit_and_drain(uint64_t count) {
    for (uint64_t i = 1; i < count; i++) submit_noop(false);
    char *last = submit_noop(true);
    wait_finished(last);
    sft_string_free(last);
}

/* An external task holds the worker: it is PROCESSING until sft_finish_task. */
static char *hold_worker(void) {
    char *id = NULL;
    must(sft_submit_external_task(NULL, &id), "sft_submit_external_task");
    must(sft_wait_task_change(id, 1, SFT_WAIT_FOREVER, NULL), "sft_wait_task_change");
    return id;
}

static void release_worker(char *id) {
    must(sft_finish_task(id, 0, NULL), "sft_finish_task");
    sft_string_free(id);
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of `values` (sorted in place), nearest rank. */
static uint64_t quantile(uint64_t *values, size_t count, double q) {
    qsort(values, count, sizeof *values, compare_u64);
    size_t rank = (size_t)(q * (double)count);
    if (rank >= count) rank = count - 1;
    return values[rank];
}

static void print_samples(const char *name, const double *samples, int count, bool last) {
    printf("\"%s\": [", name);
    for (int i = 0; i < count; i++) printf("%s%.6g", i ? ", " : "", samples[i]);
    printf("]%s", last ? "" : ", ");
}

static uint64_t cpu_us(const struct rusage *usage) {
    return (uint64_t)(usage->ru_utime.tv_sec + usage->ru_stime.tv_sec) * 1000000u +
           (uint64_t)(usage->ru_utime.tv_usec + usage->ru_stime.tv_usec);
}

/* Resident set size in bytes, from /proc/self/statm. */
static uint64_t resident_bytes(void) {
    FILE *statm = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!statm || fscanf(statm, "%llu %llu", &size, &resident) != 2) {
        fprintf(stderr, "c_bench: cannot read /proc/self/statm\n");
        exit(2);
    }
    fclose(statm);
    return resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

/*
 * Per-submit nanoseconds, one sample per batch, with the worker held by an
 * external task so that the batch measures the submit call alone, not its
 * contention with the worker running the previous batch.
 */
static void sample_submits(double *samples) {
    for (int s = 0; s < SUBMIT_SAMPLES; s++) {
        char *holder = hold_worker();
        uint64_t start = now_ns();
        for (int i = 1; i < SUBMIT_BATCH; i++) submit_noop(false);
        char *last = submit_noop(true);
        samples[s] = (double)(now_ns() - start) / SUBMIT_BATCH;
        release_worker(holder);
        wait_finished(last);
        sft_string_free(last);
    }
}

static void mode_throughput(uint64_t count) {
    char config[128];
    /* Retention capped at `count` so the per-submit samples below run with exactly that many kept. */
    snprintf(config, sizeof config, "{\"max_retained_finished\": %llu}", (unsigned long long)count);
    configure(config);
    submit_and_drain(1); /* starts the worker outside the timed region */
    struct rusage usage_before, usage_after;
    getrusage(RUSAGE_SELF, &usage_before);
    uint64_t start = now_ns();
    submit_and_drain(count);
    double seconds = (double)(now_ns() - start) / 1e9;
    getrusage(RUSAGE_SELF, &usage_after);
    /* CPU time per task of both threads: unlike the wall time, other load on the machine barely moves it. */
    double cpu_ns_per_task = (double)(cpu_us(&usage_after) - cpu_us(&usage_before)) * 1e3 / (double)count;
    double throughput = (double)count / seconds;
    double per_submit[SUBMIT_SAMPLES];
    sample_submits(per_submit);
    printf("{");
    print_samples("c_throughput_tasks_per_s", &throughput, 1, false);
    print_samples("c_submit_ns_at_1m", per_submit, SUBMIT_SAMPLES, false);
    printf("\"info\": {\"count\": %llu, \"seconds\": %.3f, \"cpu_ns_per_task\": %.0f}}\n", (unsigned long long)count,
           seconds, cpu_ns_per_task);
}

static void mode_submit_small(void) {
    configure("{\"max_retained_finished\": 10}");
    submit_and_drain(10);
    double per_submit[SUBMIT_SAMPLES];
    sample_submits(per_submit);
    printf("{");
    print_samples("c_submit_ns_at_10", per_submit, SUBMIT_SAMPLES, true);
    printf("}\n");
}

/* Nanoseconds per sft_get_task_status + sft_string_free of `task_id`, one sample per batch. */
static void sample_status(const char *task_id, int batch, double *samples, size_t *json_bytes) {
    char *warm = sft_get_task_status(task_id);
    *json_bytes = strlen(warm);
    sft_string_free(warm);
    for (int s = 0; s < STATUS_SAMPLES; s++) {
        uint64_t start = now_ns();
        for (int i = 0; i < batch; i++) sft_string_free(sft_get_task_status(task_id));
        samples[s] = (double)(now_ns() - start) / batch;
    }
}

static void mode_status(void) {
    char *task = hold_worker(); /* PROCESSING, as a polled task usually is */
    double k0[STATUS_SAMPLES], k1000[STATUS_SAMPLES];
    size_t k0_bytes = 0, k1000_bytes = 0;
    sample_status(task, STATUS_K0_BATCH, k0, &k0_bytes);
    for (int segment = 0; segment < 1000; segment++) {
        char record[96];
        snprintf(record, sizeof record, "{\"segment_id\":%d,\"audio_url\":\"/media/audio/%d.wav\",\"duration\":2.5}", segment, segment);
        must(sft_add_completed_segment_from_json(task, record), "sft_add_completed_segment_from_json");
    }
    sample_status(task, STATUS_K1000_BATCH, k1000, &k1000_bytes);
    release_worker(task);
    printf("{");
    print_samples("c_status_ns_k0", k0, STATUS_SAMPLES, false);
    print_samples("c_status_ns_k1000", k1000, STATUS_SAMPLES, false);
    printf("\"info\": {\"k0_json_bytes\": %zu, \"k1000_json_bytes\": %zu}}\n", k0_bytes, k1000_bytes);
}

/* What a wake-up task reports: when it started, posted without touching the library. */
struct wake_probe {
    _Atomic uint64_t started_ns;
    sem_t started;
};

static int32_t record_start(const char *task_id, void *user_data) {
    (void)task_id;
    struct wake_probe *probe = user_data;
    atomic_store(&probe->started_ns, now_ns());
    sem_post(&probe->started);
    return 0;
}

/*
 * The main thread waits on a semaphore, not on sft_wait_task, so that it does
 * not itself make the worker do extra work (waking a waiter) before the task starts.
 */
static void mode_wake(void) {
    submit_and_drain(1);
    double p50[WAKE_CHUNKS], submit_p50[WAKE_CHUNKS];
    uint64_t latencies[WAKE_PER_CHUNK], submit_ns[WAKE_PER_CHUNK];
    const struct timespec idle = {0, 1000000}; /* 1 ms: the worker is parked on its condvar */
    struct wake_probe probe;
    sem_init(&probe.started, 0, 0);
    for (int chunk = 0; chunk < WAKE_CHUNKS; chunk++) {
        for (int i = 0; i < WAKE_PER_CHUNK; i++) {
            char *id = NULL;
            nanosleep(&idle, NULL);
            uint64_t submitted = now_ns();
            must(sft_submit_task(record_start, &probe, NULL, NULL, &id), "sft_submit_task");
            submit_ns[i] = now_ns() - submitted;
            while (sem_wait(&probe.started) != 0) {
            }
            latencies[i] = atomic_load(&probe.started_ns) - submitted;
            wait_finished(id);
            sft_string_free(id);
        }
        p50[chunk] = (double)quantile(latencies, WAKE_PER_CHUNK, 0.5) / 1e3;
        submit_p50[chunk] = (double)quantile(submit_ns, WAKE_PER_CHUNK, 0.5) / 1e3;
    }
    sem_destroy(&probe.started);
    /* The same idle pauses with the worker held: what the submit costs when nothing needs waking. */
    char *holder = hold_worker();
    for (int i = 0; i < WAKE_PER_CHUNK; i++) {
        nanosleep(&idle, NULL);
        uint64_t start = now_ns();
        submit_noop(false);
        submit_ns[i] = now_ns() - start;
    }
    double cold_submit = (double)quantile(submit_ns, WAKE_PER_CHUNK, 0.5) / 1e3;
    release_worker(holder);
    submit_and_drain(1);
    printf("{");
    print_samples("wake_us_p50", p50, WAKE_CHUNKS, false);
    printf("\"info\": {");
    print_samples("submit_call_us_p50", submit_p50, WAKE_CHUNKS, false);
    print_samples("submit_after_idle_no_wake_us_p50", &cold_submit, 1, true);
    printf("}}\n");
}

/* A long-poller blocked in sft_wait_task_change, woken by a progress report. */
struct long_poll {
    const char *task_id;
    uint64_t after_revision;
    uint64_t woke_ns;
};

static void *long_poll_once(void *arg) {
    struct long_poll *poll = arg;
    must(sft_wait_task_change(poll->task_id, poll->after_revision, SFT_WAIT_FOREVER, NULL), "sft_wait_task_change");
    poll->woke_ns = now_ns();
    return NULL;
}

/* From a change (sft_update_task_progress) to a long-poll waiter running again. */
static void mode_long_poll(void) {
    char *holder = hold_worker(); /* revision 2: submitted, started */
    uint64_t revision = 2;
    double p50[WAKE_CHUNKS], p99[WAKE_CHUNKS];
    uint64_t latencies[WAKE_PER_CHUNK];
    const struct timespec settle = {0, 300000}; /* 0.3 ms: the waiter is asleep in its wait */
    for (int chunk = 0; chunk < WAKE_CHUNKS; chunk++) {
        for (int i = 0; i < WAKE_PER_CHUNK; i++) {
            struct long_poll poll = {holder, revision, 0};
            pthread_t waiter;
            pthread_create(&waiter, NULL, long_poll_once, &poll);
            nanosleep(&settle, NULL);
            uint64_t changed = now_ns();
            must(sft_update_task_progress(holder, (uint64_t)i, WAKE_PER_CHUNK, NULL), "sft_update_task_progress");
            pthread_join(waiter, NULL);
            revision++;
            latencies[i] = poll.woke_ns - changed;
        }
        p50[chunk] = (double)quantile(latencies, WAKE_PER_CHUNK, 0.5) / 1e3;
        p99[chunk] = (double)quantile(latencies, WAKE_PER_CHUNK, 0.99) / 1e3;
    }
    release_worker(holder);
    printf("{");
    print_samples("longpoll_wake_us_p50", p50, WAKE_CHUNKS, false);
    print_samples("longpoll_wake_us_p99", p99, WAKE_CHUNKS, true);
    printf("}\n");
}

static void mode_memory(uint64_t count) {
    const uint64_t batch = 10000; /* paced, so the pending queue stays short: this measures retention */
    submit_and_drain(1);
    uint64_t before = resident_bytes();
    for (uint64_t done = 0; done < count; done += batch) submit_and_drain(batch);
    uint64_t after = resident_bytes();
    double per_task = (double)(after - before) / (double)count;
    printf("{");
    print_samples("bytes_per_finished_task", &per_task, 1, false);
    printf("\"info\": {\"rss_before\": %llu, \"rss_after\": %llu}}\n", (unsigned long long)before,
           (unsigned long long)after);
}

/* The slowest calls of a run and where they happened (the registry's size then). */
struct slowest {
    uint64_t ns[SLOWEST_KEPT];
    uint64_t at[SLOWEST_KEPT];
};

static void keep_if_slow(struct slowest *kept, uint64_t ns, uint64_t at) {
    int smallest = 0;
    for (int i = 1; i < SLOWEST_KEPT; i++)
        if (kept->ns[i] < kept->ns[smallest]) smallest = i;
    if (ns > kept->ns[smallest]) {
        kept->ns[smallest] = ns;
        kept->at[smallest] = at;
    }
}

static uint64_t slowest_ns(const struct slowest *kept) {
    uint64_t max = 0;
    for (int i = 0; i < SLOWEST_KEPT; i++)
        if (kept->ns[i] > max) max = kept->ns[i];
    return max;
}

static void print_slowest(const char *name, const struct slowest *kept) {
    printf("\"%s\": [", name);
    for (int i = 0; i < SLOWEST_KEPT; i++)
        printf("%s[%.1f, %llu]", i ? ", " : "", (double)kept->ns[i] / 1e3, (unsigned long long)kept->at[i]);
    printf("]");
}

/*
 * The slowest calls of windows of 64 calls in which the calling thread never
 * left its core (no context switch, voluntary or not): what the code itself
 * costs at worst, page faults included. On a loaded 2-core machine the slowest
 * call is otherwise often one that waited out a 4 ms scheduler tick, its own
 * or that of a lock holder. One getrusage per 64 calls keeps this cheap.
 */
#define WINDOW_CALLS 64
#define WINDOW_CANDIDATES 8
struct uninterrupted {
    struct slowest kept;
    long switches_at_window_start;
    uint64_t calls_in_window, candidates;
    uint64_t candidate_ns[WINDOW_CANDIDATES], candidate_at[WINDOW_CANDIDATES];
};

static long thread_switches(void) {
    struct rusage usage;
    getrusage(RUSAGE_THREAD, &usage);
    return usage.ru_nvcsw + usage.ru_nivcsw;
}

static void uninterrupted_begin(struct uninterrupted *tracker) {
    memset(tracker, 0, sizeof *tracker);
    tracker->switches_at_window_start = thread_switches();
}

static void uninterrupted_offer(struct uninterrupted *tracker, uint64_t ns, uint64_t at) {
    if (ns > 20000 && tracker->candidates < WINDOW_CANDIDATES) {
        tracker->candidate_ns[tracker->candidates] = ns;
        tracker->candidate_at[tracker->candidates++] = at;
    }
    if (++tracker->calls_in_window < WINDOW_CALLS) return;
    long now = thread_switches();
    if (now == tracker->switches_at_window_start)
        for (uint64_t i = 0; i < tracker->candidates; i++)
            keep_if_slow(&tracker->kept, tracker->candidate_ns[i], tracker->candidate_at[i]);
    tracker->switches_at_window_start = now;
    tracker->calls_in_window = tracker->candidates = 0;
}

/* Why calls over SLOW_CALL_NS were slow, from the thread's rusage around each call. */
#define SLOW_CALL_NS 1000000ull
#define ON_CPU_KEPT 16
struct stall_causes {
    bool enabled;
    struct rusage last;
    uint64_t slow, preempted, blocked, on_cpu, on_cpu_us_max;
    uint64_t on_cpu_at[ON_CPU_KEPT], on_cpu_wall_us[ON_CPU_KEPT];
};

/* Call right before a timed call: remembers the thread's counters. */
static void stall_probe_begin(struct stall_causes *causes) {
    if (causes->enabled) getrusage(RUSAGE_THREAD, &causes->last);
}

/* Call right after: classifies the call if it was slow. */
static void stall_probe_end(struct stall_causes *causes, uint64_t elapsed_ns, uint64_t at) {
    if (!causes->enabled || elapsed_ns < SLOW_CALL_NS) return;
    struct rusage now;
    getrusage(RUSAGE_THREAD, &now);
    causes->slow++;
    if (now.ru_nivcsw > causes->last.ru_nivcsw) causes->preempted++;
    else if (now.ru_nvcsw > causes->last.ru_nvcsw) causes->blocked++;
    else {
        if (causes->on_cpu < ON_CPU_KEPT) {
            causes->on_cpu_at[causes->on_cpu] = at;
            causes->on_cpu_wall_us[causes->on_cpu] = elapsed_ns / 1000;
        }
        causes->on_cpu++;
        uint64_t used = cpu_us(&now) - cpu_us(&causes->last);
        if (used > causes->on_cpu_us_max) causes->on_cpu_us_max = used;
    }
}

static void print_stall_causes(const char *name, const struct stall_causes *causes) {
    printf(", \"%s\": {\"over_1ms\": %llu, \"preempted\": %llu, \"blocked\": %llu, \"on_cpu\": %llu, "
           "\"on_cpu_us_max\": %llu}",
           name, (unsigned long long)causes->slow, (unsigned long long)causes->preempted,
           (unsigned long long)causes->blocked, (unsigned long long)causes->on_cpu,
           (unsigned long long)causes->on_cpu_us_max);
    printf(", \"%s_on_cpu_wall_us_at\": [", name);
    for (uint64_t i = 0; i < causes->on_cpu && i < ON_CPU_KEPT; i++)
        printf("%s[%llu, %llu]", i ? ", " : "", (unsigned long long)causes->on_cpu_wall_us[i],
               (unsigned long long)causes->on_cpu_at[i]);
    printf("]");
}

struct burst {
    char **ids;
    _Atomic uint64_t published;
    _Atomic bool done;
    _Atomic int phase; /* 0: submitting, 1: the held worker drains the queue */
    struct slowest reads[2];
    struct stall_causes read_causes;
    uint64_t read_count;
};

/*
 * A polling API thread: reads the newest task's status, then a random earlier
 * one, pausing ~10 us between reads so it does not compete for the two cores
 * as a third busy thread (that would measure the scheduler, not the registry).
 */
static void *burst_reader(void *arg) {
    struct burst *burst = arg;
    const struct timespec pause = {0, 10000};
    uint64_t random_state = 0x9E3779B97F4A7C15ull;
    while (!atomic_load(&burst->done)) {
        uint64_t published = atomic_load(&burst->published);
        if (published == 0) continue;
        uint64_t index = published - 1;
        if (burst->read_count % 2) {
            random_state ^= random_state << 13;
            random_state ^= random_state >> 7;
            random_state ^= random_state << 17;
            index = random_state % published;
        }
        int phase = atomic_load(&burst->phase);
        stall_probe_begin(&burst->read_causes);
        uint64_t start = now_ns();
        char *status = sft_get_task_status(burst->ids[index]);
        uint64_t elapsed = now_ns() - start;
        stall_probe_end(&burst->read_causes, elapsed, published);
        if (!status) {
            fprintf(stderr, "c_bench: a submitted task has no status\n");
            exit(2);
        }
        sft_string_free(status);
        keep_if_slow(&burst->reads[phase], elapsed, published);
        burst->read_count++;
        nanosleep(&pause, NULL);
    }
    return NULL;
}

/*
 * `count` no-op submits from this thread while a second thread polls statuses.
 * With `hold_worker`, an external task holds the worker meanwhile, so all of
 * them pile up pending (submission alone, and the pending queue's growth);
 * then the worker drains them alone while the reader keeps polling.
 */
static void mode_burst(uint64_t count, bool diagnose, bool hold_worker_during) {
    struct burst burst = {.ids = calloc(count, sizeof(char *)), .read_causes = {.enabled = diagnose}};
    struct slowest submits = {{0}, {0}};
    struct stall_causes submit_causes = {.enabled = diagnose};
    struct uninterrupted uninterrupted_submits;
    struct rusage usage_start, usage_submitted, usage_drained;
    submit_and_drain(1);
    char *holder = hold_worker_during ? hold_worker() : NULL;
    pthread_t reader;
    pthread_create(&reader, NULL, burst_reader, &burst);
    getrusage(RUSAGE_SELF, &usage_start);
    uninterrupted_begin(&uninterrupted_submits);
    uint64_t began = now_ns();
    for (uint64_t i = 0; i < count; i++) {
        stall_probe_begin(&submit_causes);
        uint64_t start = now_ns();
        must(sft_submit_task(noop_task, NULL, NULL, NULL, &burst.ids[i]), "sft_submit_task");
        uint64_t elapsed = now_ns() - start;
        stall_probe_end(&submit_causes, elapsed, i);
        keep_if_slow(&submits, elapsed, i);
        uninterrupted_offer(&uninterrupted_submits, elapsed, i);
        atomic_store(&burst.published, i + 1);
    }
    uint64_t submitted = now_ns();
    getrusage(RUSAGE_SELF, &usage_submitted);
    char *stats = sft_get_stats();
    if (holder) {
        atomic_store(&burst.phase, 1);
        release_worker(holder);
    }
    wait_finished(burst.ids[count - 1]);
    uint64_t drained = now_ns();
    getrusage(RUSAGE_SELF, &usage_drained);
    atomic_store(&burst.done, true);
    pthread_join(reader, NULL);
    for (uint64_t i = 0; i < count; i++) sft_string_free(burst.ids[i]);
    free(burst.ids);
    double submit_max = (double)slowest_ns(&submits) / 1e3, read_max = (double)slowest_ns(&burst.reads[0]) / 1e3;
    double drain_read_max = (double)slowest_ns(&burst.reads[1]) / 1e3;
    printf("{");
    double uninterrupted_max = (double)slowest_ns(&uninterrupted_submits.kept) / 1e3;
    if (hold_worker_during) {
        print_samples("c_pending_submit_max_us_1m", &submit_max, 1, false);
        print_samples("c_pending_uninterrupted_submit_max_us_1m", &uninterrupted_max, 1, false);
        print_samples("c_pending_status_max_us_1m", &read_max, 1, false);
        print_samples("c_drain_status_max_us_1m", &drain_read_max, 1, false);
    } else {
        print_samples("c_submit_max_us_burst_1m", &submit_max, 1, false);
        print_samples("c_uninterrupted_submit_max_us_burst_1m", &uninterrupted_max, 1, false);
        print_samples("c_status_max_us_burst_1m", &read_max, 1, false);
    }
    printf("\"info\": {\"submit_seconds\": %.3f, \"drain_seconds\": %.3f, \"reads\": %llu, "
           "\"submit_cpu_ns_per_task\": %.0f, \"drain_cpu_ns_per_task\": %.0f, ",
           (double)(submitted - began) / 1e9, (double)(drained - submitted) / 1e9, (unsigned long long)burst.read_count,
           (double)(cpu_us(&usage_submitted) - cpu_us(&usage_start)) * 1e3 / (double)count,
           (double)(cpu_us(&usage_drained) - cpu_us(&usage_submitted)) * 1e3 / (double)count);
    print_slowest("slowest_submits_us_at_index", &submits);
    printf(", ");
    print_slowest("slowest_uninterrupted_submits_us_at_index", &uninterrupted_submits.kept);
    printf(", ");
    print_slowest("slowest_reads_us_at_size", &burst.reads[0]);
    if (hold_worker_during) {
        printf(", ");
        print_slowest("slowest_drain_reads_us_at_size", &burst.reads[1]);
    }
    if (diagnose) {
        print_stall_causes("submit_stalls", &submit_causes);
        print_stall_causes("read_stalls", &burst.read_causes);
    }
    printf(", \"stats_after_submitting\": %s}}\n", stats);
    sft_string_free(stats);
}

struct hot_writer {
    _Atomic bool stop;
    _Atomic uint64_t updates;
};

static int32_t report_progress_until_stopped(const char *task_id, void *user_data) {
    struct hot_writer *writer = user_data;
    uint64_t current = 0;
    while (!atomic_load_explicit(&writer->stop, memory_order_relaxed)) {
        must(sft_update_task_progress(task_id, ++current, UINT64_C(1) << 40, NULL), "sft_update_task_progress");
    }
    atomic_store(&writer->updates, current);
    return 0;
}

static void mode_writer_hot(void) {
    struct hot_writer writer = {0};
    char *id = NULL;
    submit_and_drain(1);
    must(sft_submit_task(report_progress_until_stopped, &writer, NULL, NULL, &id), "sft_submit_task");
    must(sft_wait_task_change(id, 1, SFT_WAIT_FOREVER, NULL), "sft_wait_task_change"); /* started */
    size_t capacity = 4u << 20, count = 0;
    uint64_t *latencies = malloc(capacity * sizeof *latencies);
    double p99[WRITER_HOT_CHUNKS];
    uint64_t reads = 0, began = now_ns();
    for (int chunk = 0; chunk < WRITER_HOT_CHUNKS; chunk++) {
        uint64_t chunk_end = now_ns() + WRITER_HOT_CHUNK_NS;
        count = 0;
        for (uint64_t start = now_ns(); start < chunk_end && count < capacity;) {
            sft_string_free(sft_get_task_status(id));
            uint64_t end = now_ns();
            latencies[count++] = end - start;
            start = end;
        }
        reads += count;
        p99[chunk] = (double)quantile(latencies, count, 0.99) / 1e3;
    }
    double seconds = (double)(now_ns() - began) / 1e9;
    atomic_store(&writer.stop, true);
    wait_finished(id);
    sft_string_free(id);
    free(latencies);
    printf("{");
    print_samples("c_status_p99_us_writer_hot", p99, WRITER_HOT_CHUNKS, false);
    printf("\"info\": {\"reads_per_s\": %.0f, \"updates_per_s\": %.0f}}\n", (double)reads / seconds,
           (double)atomic_load(&writer.updates) / seconds);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: c_bench throughput|submit_small|status|wake|memory|burst|burst_diag|pending|pending_diag|writer_hot [COUNT]\n");
        return 2;
    }
    const char *mode = argv[1];
    uint64_t count = argc > 2 ? strtoull(argv[2], NULL, 10) : 1000000;
    if (count == 0) count = 1;
    if (!strcmp(mode, "throughput")) mode_throughput(count);
    else if (!strcmp(mode, "submit_small")) mode_submit_small();
    else if (!strcmp(mode, "status")) mode_status();
    else if (!strcmp(mode, "wake")) mode_wake();
    else if (!strcmp(mode, "long_poll")) mode_long_poll();
    else if (!strcmp(mode, "memory")) mode_memory(count);
    else if (!strcmp(mode, "burst")) mode_burst(count, false, false);
    else if (!strcmp(mode, "burst_diag")) mode_burst(count, true, false);
    else if (!strcmp(mode, "pending")) mode_burst(count, false, true);
    else if (!strcmp(mode, "pending_diag")) mode_burst(count, true, true);
    else if (!strcmp(mode, "writer_hot")) mode_writer_hot();
    else {
        fprintf(stderr, "c_bench: unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
