/*
 * A native CPU-bound task for benches/python_compare.py: it reports progress
 * in a tight loop on the library's worker thread until told to stop, while
 * Python polls its status. Built by the benchmark against the library it loaded.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "storyflow_tasks.h"

static atomic_bool stop_requested;
static atomic_bool running;

static int32_t busy_task(const char *task_id, void *user_data) {
    (void)user_data;
    atomic_store(&running, true);
    uint64_t step = 0;
    while (!atomic_load_explicit(&stop_requested, memory_order_relaxed)) {
        sft_update_task_progress(task_id, step % 1000, 1000, NULL);
        step++;
    }
    atomic_store(&running, false);
    return 0;
}

/* Submits the busy task; copies its id into `out`. An SftResult. */
int busy_start(char *out, size_t size) {
    atomic_store(&stop_requested, false);
    char *task_id = NULL;
    SftResult result = sft_submit_task(busy_task, NULL, NULL, NULL, &task_id);
    if (result == SFT_OK) {
        snprintf(out, size, "%s", task_id);
        sft_string_free(task_id);
    }
    return result;
}

/* Whether the busy task has started its loop. */
bool busy_running(void) { return atomic_load(&running); }

/* Asks the busy task to return. */
void busy_stop(void) { atomic_store(&stop_requested, true); }
