/*
 * A stand-in for a C TTS engine that shares the process's storyflow-tasks
 * manager with Python: it reports progress for tasks Python submitted, and
 * submits a task of its own that Python then waits for.
 */
#include <stdio.h>
#include <string.h>

#include "storyflow_tasks.h"

/* Renders `segments` fake segments of a task someone else submitted; an SftResult. */
int engine_render(const char *task_id, int segments) {
    for (int i = 1; i <= segments; i++) {
        char extra[96];
        char segment[96];
        snprintf(extra, sizeof extra, "{\"engine\":\"c\",\"current_segment_id\":%d}", i);
        snprintf(segment, sizeof segment, "{\"segment_id\":%d,\"audio_url\":\"/media/c/%d.wav\",\"duration\":%.1f}", i, i, 0.5 * i);
        SftResult result = sft_update_task_progress(task_id, (uint64_t)i, (uint64_t)segments, extra);
        if (result != SFT_OK) {
            return result;
        }
        result = sft_add_completed_segment_from_json(task_id, segment);
        if (result != SFT_OK) {
            return result;
        }
    }
    return SFT_OK;
}

static int32_t engine_task(const char *task_id, void *user_data) {
    (void)user_data;
    return engine_render(task_id, 2) == SFT_OK ? 0 : 1;
}

/* Submits a task of the engine's own; copies its id into `out`. An SftResult. */
int engine_submit_own(char *out, size_t size) {
    char *task_id = NULL;
    SftResult result = sft_submit_task(engine_task, NULL, NULL, NULL, &task_id);
    if (result == SFT_OK) {
        snprintf(out, size, "%s", task_id);
        sft_string_free(task_id);
    }
    return result;
}

/* Copies the task's status JSON, as C sees it, into `out`; -1 if the task is unknown to C. */
int engine_read_status(const char *task_id, char *out, size_t size) {
    char *status = sft_get_task_status(task_id);
    if (status == NULL) {
        return -1;
    }
    snprintf(out, size, "%s", status);
    sft_string_free(status);
    return 0;
}
