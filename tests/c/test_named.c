/* Named handlers: a C handler runs named tasks on the worker thread with their payload;
 * a named task whose handler is not registered waits without holding up the tasks behind
 * it and runs, in order, once the handler registers; a runner can serve a name and gets
 * the assignment filled; checkpoints are recorded and final is final. */
#include "check.h"

static const int64_t PATIENCE_MS = 60000; /* never reached in a passing run */

/* What the recording handler saw, in order. */
typedef struct {
  pthread_mutex_t lock;
  char seen[8][96];
  int count;
} Record;

static Record record = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};

static int32_t handler_record(const char *task_id, const char *payload_json, void *handler_data) {
  Record *into = (Record *)handler_data;
  pthread_mutex_lock(&into->lock);
  if (into->count < 8) snprintf(into->seen[into->count++], sizeof into->seen[0], "%s=%s", task_id, payload_json);
  pthread_mutex_unlock(&into->lock);
  return 0;
}

/* Reports a segment and a checkpoint, then fails when the payload says so. */
static int32_t handler_narrate(const char *task_id, const char *payload_json, void *handler_data) {
  (void)handler_data;
  if (sft_add_completed_segment_from_json(task_id, "{\"segment_id\":0,\"audio_url\":\"/a/0.wav\",\"duration\":1.5}") != SFT_OK) return 9;
  if (sft_set_checkpoint(task_id, "{\"next_sentence\": 1}") != SFT_OK) return 9;
  if (strstr(payload_json, "\"fail\":true") != NULL) {
    sft_set_task_error(task_id, "the voice is missing");
    return 2;
  }
  return 0;
}

static void test_a_c_handler_runs_named_tasks_with_their_payload(void) {
  CHECK_RESULT(sft_register_handler("narrate", handler_narrate, NULL), SFT_OK);
  CHECK_RESULT(sft_register_handler("narrate", handler_narrate, NULL), SFT_ERR_DUPLICATE_ID);
  CHECK_RESULT(sft_register_handler("other", NULL, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_register_handler(NULL, handler_narrate, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_register_handler("", handler_narrate, NULL), SFT_ERR_INVALID_ARGUMENT);

  char *task_id = NULL;
  CHECK_RESULT(sft_submit_named("narrate", "{\"chapter\": 1}", NULL, &task_id), SFT_OK);
  CHECK(task_id != NULL && strlen(task_id) == 36);
  CHECK(finishes_as(task_id, "COMPLETED"));
  CHECK(status_has(task_id, "\"cancel_requested\":false,\"handler\":\"narrate\",\"attempt\":1,\"checkpoint\":{\"next_sentence\":1},"
                            "\"priority\":0,\"deadline\":null,\"yield_requested\":false,\"yields\":0}"));
  CHECK(status_has(task_id, "\"completed_segments\":[{\"segment_id\":0,\"audio_url\":\"/a/0.wav\",\"duration\":1.5}]"));
  /* Final is final. */
  CHECK_RESULT(sft_set_checkpoint(task_id, "2"), SFT_ERR_INVALID_STATE);
  CHECK(status_has(task_id, "\"checkpoint\":{\"next_sentence\":1}"));
  sft_string_free(task_id);

  CHECK_RESULT(sft_submit_named("narrate", "{\"fail\":true}", "named-fails", NULL), SFT_OK);
  CHECK(finishes_as("named-fails", "FAILED"));
  CHECK(status_has("named-fails", "\"error\":\"the voice is missing\""));
  CHECK(status_has("named-fails", "\"attempt\":1"));

  CHECK_RESULT(sft_submit_named("narrate", "{", NULL, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("payload_json"));
  CHECK_RESULT(sft_submit_named("narrate", "\"\\ud800\"", NULL, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("lone surrogate"));
  CHECK_RESULT(sft_submit_named(NULL, NULL, NULL, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_submit_named("narrate", NULL, "named-fails", NULL), SFT_ERR_DUPLICATE_ID);
  CHECK_RESULT(sft_set_checkpoint("named-nobody", "1"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_set_checkpoint("named-fails", NULL), SFT_ERR_INVALID_ARGUMENT);

  /* A function task's status has the three keys and the schedule too. */
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "named-plain", NULL), SFT_OK);
  CHECK(finishes_as("named-plain", "COMPLETED"));
  CHECK(status_has("named-plain", "\"cancel_requested\":false,\"handler\":null,\"attempt\":1,\"checkpoint\":null,"
                                "\"priority\":0,\"deadline\":null,\"yield_requested\":false,\"yields\":0}"));
}

static void test_a_task_without_its_handler_waits_and_does_not_hold_up_the_queue(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_named("late", "1", "late-1", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_named("late", "2", "late-2", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "late-plain", NULL), SFT_OK);
  CHECK(finishes_as("late-plain", "COMPLETED")); /* behind them, and not held up */
  CHECK(status_has("late-1", "\"status\":\"PENDING\""));
  CHECK(status_has("late-1", "\"queue_position\":null"));
  CHECK(status_has("late-2", "\"attempt\":0"));
  /* A waiting task cannot be waited for from the worker, but from here with a timeout. */
  CHECK_RESULT(sft_wait_task("late-1", 0, NULL), SFT_ERR_TIMEOUT);

  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "late-gate", NULL), SFT_OK);
  CHECK(wait_started("late-gate"));
  CHECK_RESULT(sft_submit_named("late", "3", "late-3", NULL), SFT_OK);
  CHECK(status_has("late-3", "\"queue_position\":0"));
  CHECK_RESULT(sft_register_handler("late", handler_record, &record), SFT_OK);
  /* Back at the head, in submission order, ahead of the task queued after them. */
  CHECK(status_has("late-1", "\"queue_position\":0"));
  CHECK(status_has("late-2", "\"queue_position\":1"));
  CHECK(status_has("late-3", "\"queue_position\":2"));
  gate_open(&gate);
  CHECK(finishes_as("late-3", "COMPLETED"));
  pthread_mutex_lock(&record.lock);
  CHECK(record.count == 3);
  CHECK(strcmp(record.seen[0], "late-1=1") == 0 && strcmp(record.seen[1], "late-2=2") == 0 && strcmp(record.seen[2], "late-3=3") == 0);
  pthread_mutex_unlock(&record.lock);

  /* A waiting task can be cancelled. */
  CHECK_RESULT(sft_submit_named("never-registered", NULL, "late-cancel", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "late-plain-2", NULL), SFT_OK);
  CHECK(finishes_as("late-plain-2", "COMPLETED"));
  CHECK_RESULT(sft_cancel_task("late-cancel"), SFT_OK);
  CHECK(status_has("late-cancel", "\"status\":\"CANCELLED\""));
}

static void test_a_runner_serves_a_name(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_runner_add_handler(runner, "speak"), SFT_OK);
  CHECK_RESULT(sft_runner_add_handler(runner, "speak"), SFT_ERR_DUPLICATE_ID);
  CHECK_RESULT(sft_runner_add_handler(runner, "narrate"), SFT_ERR_DUPLICATE_ID);
  CHECK_RESULT(sft_runner_add_handler(runner + 1000, "unknown-runner"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_submit_named("speak", "{\"text\": \"hi\"}", "speak-1", NULL), SFT_OK);
  char *assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, PATIENCE_MS, &assignment), SFT_OK);
  CHECK(assignment && strcmp(assignment, "{\"task_id\":\"speak-1\",\"run\":true,\"handler\":\"speak\",\"payload\":{\"text\":\"hi\"},"
                                         "\"attempt\":1,\"checkpoint\":null,\"yields\":0}") == 0);
  sft_string_free(assignment);
  CHECK(status_has("speak-1", "\"status\":\"PROCESSING\""));
  CHECK_RESULT(sft_wait_task("speak-1", PATIENCE_MS, NULL), SFT_ERR_INVALID_STATE); /* inside it */
  CHECK_RESULT(sft_set_checkpoint("speak-1", "[1, 2]"), SFT_OK);
  CHECK_RESULT(sft_runner_finish(runner, "speak-1", 0, NULL), SFT_OK);
  CHECK(status_has("speak-1", "\"status\":\"COMPLETED\""));
  CHECK(status_has("speak-1", "\"checkpoint\":[1,2]"));
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
  /* The name is free again once its runner closed. */
  CHECK_RESULT(sft_submit_named("speak", NULL, "speak-2", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "speak-plain", NULL), SFT_OK);
  CHECK(finishes_as("speak-plain", "COMPLETED"));
  CHECK(status_has("speak-2", "\"queue_position\":null"));
  CHECK_RESULT(sft_register_handler("speak", handler_record, &record), SFT_OK);
  CHECK(finishes_as("speak-2", "COMPLETED"));
}

static void test_shutdown_cancels_waiting_tasks(void) {
  CHECK_RESULT(sft_submit_named("nobody", NULL, "end-waiting", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "end-plain", NULL), SFT_OK);
  CHECK(finishes_as("end-plain", "COMPLETED"));
  CHECK_RESULT(sft_shutdown(PATIENCE_MS), SFT_OK);
  CHECK(status_has("end-waiting", "\"status\":\"CANCELLED\""));
  CHECK_RESULT(sft_register_handler("after-shutdown", handler_record, &record), SFT_OK);
  CHECK_RESULT(sft_submit_named("after-shutdown", NULL, NULL, NULL), SFT_ERR_SHUT_DOWN);
}

int main(void) {
  test_a_c_handler_runs_named_tasks_with_their_payload();
  test_a_task_without_its_handler_waits_and_does_not_hold_up_the_queue();
  test_a_runner_serves_a_name();
  test_shutdown_cancels_waiting_tasks();
  return finish_checks("test_named");
}
