/* Runners: a binding's thread that runs the tasks submitted to it, one at a
 * time in the one FIFO; the tasks cancelled before they ran come back marked
 * not to run; the receiving thread is inside its task for the deadlock checks;
 * finishing cannot fail on the message; closing cancels and fails what is left. */
#include "check.h"

static const int64_t PATIENCE_MS = 60000; /* never reached in a passing run */

/* sft_runner_next with a check of the result, returning the assignment (or NULL). */
static char *next_assignment(uint64_t runner, int64_t timeout_ms, SftResult expected) {
  char *assignment = (char *)"garbage";
  CHECK_RESULT(sft_runner_next(runner, timeout_ms, &assignment), expected);
  if (expected != SFT_OK) CHECK(assignment == NULL);
  return assignment;
}

static void test_register_and_unknown_runners(void) {
  uint64_t first = 0, second = 0;
  CHECK_RESULT(sft_runner_register(&first), SFT_OK);
  CHECK_RESULT(sft_runner_register(&second), SFT_OK);
  CHECK(first != 0 && second != 0 && first != second);
  CHECK_RESULT(sft_runner_register(NULL), SFT_ERR_INVALID_ARGUMENT);
  uint64_t unknown = second + 1000;
  CHECK_RESULT(sft_submit_runner_task(unknown, "run-unknown", NULL), SFT_ERR_NOT_FOUND);
  CHECK(last_error_has("no runner"));
  CHECK(sft_get_task_status("run-unknown") == NULL);
  next_assignment(unknown, 0, SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_finish(unknown, "run-unknown", 0, NULL), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_close(unknown, 0), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_next(first, 0, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_runner_next(first, -2, NULL), SFT_ERR_INVALID_ARGUMENT);
  next_assignment(first, 0, SFT_ERR_TIMEOUT);
  CHECK_RESULT(sft_runner_close(first, 0), SFT_OK);
  CHECK_RESULT(sft_runner_close(first, 0), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_close(second, 0), SFT_OK);
}

static void test_run_in_fifo_order_and_finish(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "run-gate", NULL), SFT_OK);
  CHECK(wait_started("run-gate"));
  char *task_id = NULL;
  CHECK_RESULT(sft_submit_runner_task(runner, "run-1", &task_id), SFT_OK);
  CHECK(task_id != NULL && strcmp(task_id, "run-1") == 0);
  sft_string_free(task_id);
  CHECK_RESULT(sft_submit_runner_task(runner, NULL, &task_id), SFT_OK);
  CHECK(task_id != NULL && strlen(task_id) == 36);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-1", NULL), SFT_ERR_DUPLICATE_ID);
  CHECK_RESULT(sft_submit_runner_task(runner, "", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(status_has("run-1", "\"status\":\"PENDING\""));
  CHECK(status_has(task_id, "\"queue_position\":1"));
  next_assignment(runner, 0, SFT_ERR_TIMEOUT); /* the worker is still with the gate task */

  gate_open(&gate);
  char *assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(assignment && strcmp(assignment, "{\"task_id\":\"run-1\",\"run\":true,\"handler\":null,\"payload\":null,"
                                         "\"attempt\":1,\"checkpoint\":null,\"yields\":0}") == 0);
  sft_string_free(assignment);
  CHECK(status_has("run-1", "\"status\":\"PROCESSING\""));
  CHECK(finishes_as("run-gate", "COMPLETED"));

  /* Inside run-1: waiting for the pending task or for run-1 itself would deadlock. */
  CHECK_RESULT(sft_wait_task(task_id, PATIENCE_MS, NULL), SFT_ERR_INVALID_STATE);
  CHECK(last_error_has("would deadlock"));
  CHECK_RESULT(sft_wait_task("run-1", PATIENCE_MS, NULL), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_wait_task_change(task_id, 1, PATIENCE_MS, NULL), SFT_ERR_INVALID_STATE);
  /* A long-poll on the running task itself is fine: its own reports change it. */
  CHECK_RESULT(sft_update_task_progress("run-1", 1, 2, NULL), SFT_OK);
  CHECK_RESULT(sft_wait_task_change("run-1", 2, PATIENCE_MS, NULL), SFT_OK);

  CHECK_RESULT(sft_runner_finish(runner, task_id, 0, NULL), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_runner_finish(runner, "run-nobody", 0, NULL), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_finish(runner, "run-1", 1, "not json"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_runner_finish(runner, "run-1", 1, "7"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("message_json"));
  CHECK(status_has("run-1", "\"status\":\"PROCESSING\""));
  /* NUL and a lone surrogate in the failure message: kept, and U+FFFD. */
  CHECK_RESULT(sft_runner_finish(runner, "run-1", 2, "\"bad\\u0000voice \\ud800\""), SFT_OK);
  CHECK(status_has("run-1", "\"status\":\"FAILED\""));
  CHECK(status_has("run-1", "\"error\":\"bad\\u0000voice \xef\xbf\xbd\""));
  CHECK_RESULT(sft_runner_finish(runner, "run-1", 0, NULL), SFT_ERR_INVALID_STATE);
  /* The mark of the finished task is stale: waiting is fine again. */
  CHECK_RESULT(sft_wait_task("run-1", PATIENCE_MS, NULL), SFT_OK);

  assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(json_has(assignment, "\"run\":true"));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_finish(runner, task_id, 5, NULL), SFT_OK);
  CHECK(finishes_as(task_id, "FAILED"));
  CHECK(status_has(task_id, "\"error\":\"task function returned 5\""));
  sft_string_free(task_id);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
}

static void test_an_over_long_message_is_shortened(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-long", NULL), SFT_OK);
  char *assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  sft_string_free(assignment);
  /* 70,000 bytes of a two-byte character, over the default limit of 65,536. */
  size_t count = 35000;
  char *message = malloc(count * 2 + 3);
  message[0] = '"';
  for (size_t i = 0; i < count; i++) memcpy(message + 1 + 2 * i, "\xc3\xa9", 2);
  memcpy(message + 1 + 2 * count, "\"", 2);
  CHECK_RESULT(sft_runner_finish(runner, "run-long", 1, message), SFT_OK);
  free(message);
  char *status = sft_get_task_status("run-long");
  const char *note = " [shortened from 70000 bytes]\"";
  char *found = status ? strstr(status, note) : NULL;
  CHECK(found != NULL);
  if (found) {
    char *start = strstr(status, "\"error\":\"") + 9;
    size_t kept = (size_t)(found - start);
    CHECK(kept % 2 == 0 && kept + strlen(note) - 1 <= 65536 && kept > 65000);
  }
  sft_string_free(status);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
}

static void test_cancelled_before_running_comes_back_not_to_run(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "run-gate-2", NULL), SFT_OK);
  CHECK(wait_started("run-gate-2"));
  CHECK_RESULT(sft_submit_runner_task(runner, "run-cancelled", NULL), SFT_OK);
  CHECK_RESULT(sft_cancel_task("run-cancelled"), SFT_OK);
  char *assignment = next_assignment(runner, 0, SFT_OK);
  CHECK(assignment && strcmp(assignment, "{\"task_id\":\"run-cancelled\",\"run\":false,\"handler\":null,\"payload\":null,"
                                         "\"attempt\":0,\"checkpoint\":null,\"yields\":0}") == 0);
  sft_string_free(assignment);
  CHECK(status_has("run-cancelled", "\"status\":\"CANCELLED\""));
  CHECK_RESULT(sft_runner_finish(runner, "run-cancelled", 0, NULL), SFT_ERR_INVALID_STATE);
  gate_open(&gate);
  CHECK(finishes_as("run-gate-2", "COMPLETED"));

  /* Cancelled while it runs: finishing makes it CANCELLED whatever the code. */
  CHECK_RESULT(sft_submit_runner_task(runner, "run-stopped", NULL), SFT_OK);
  assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  sft_string_free(assignment);
  CHECK_RESULT(sft_cancel_task("run-stopped"), SFT_OK);
  bool requested = false;
  CHECK_RESULT(sft_is_cancel_requested("run-stopped", &requested), SFT_OK);
  CHECK(requested);
  CHECK_RESULT(sft_runner_finish(runner, "run-stopped", 1, "\"stopped\""), SFT_OK);
  CHECK(status_has("run-stopped", "\"status\":\"CANCELLED\""));
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
}

typedef struct {
  uint64_t runner;
  SftResult result;
} BlockedNext;

static void *block_in_next(void *arg) {
  BlockedNext *blocked = arg;
  char *assignment = NULL;
  blocked->result = sft_runner_next(blocked->runner, PATIENCE_MS, &assignment);
  sft_string_free(assignment);
  return NULL;
}

static void test_close_cancels_the_queue_and_fails_the_running_task(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-held", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-queued", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "run-after-close", NULL), SFT_OK);
  char *assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"run-held\""));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
  CHECK(status_has("run-queued", "\"status\":\"CANCELLED\""));
  CHECK(status_has("run-queued", "\"error\":\"its runner closed before it ran\""));
  CHECK(status_has("run-held", "\"status\":\"FAILED\""));
  CHECK(status_has("run-held", "\"error\":\"its runner closed while it was running\""));
  CHECK(finishes_as("run-after-close", "COMPLETED"));
  CHECK_RESULT(sft_runner_finish(runner, "run-held", 0, NULL), SFT_ERR_NOT_FOUND);

  /* A thread blocked in sft_runner_next learns of the close; a running task
   * finished within the close's timeout keeps its own outcome. */
  uint64_t second = 0;
  CHECK_RESULT(sft_runner_register(&second), SFT_OK);
  BlockedNext blocked = {second, SFT_OK};
  pthread_t thread;
  pthread_create(&thread, NULL, block_in_next, &blocked);
  /* Whether it blocks before the close or calls after it, it must not get a task. */
  CHECK_RESULT(sft_runner_close(second, PATIENCE_MS), SFT_OK);
  pthread_join(thread, NULL);
  CHECK(blocked.result == SFT_ERR_SHUT_DOWN || blocked.result == SFT_ERR_NOT_FOUND);
}

typedef struct {
  uint64_t runner;
  SftResult result;
} Closing;

static void *close_runner_patiently(void *arg) {
  Closing *closing = arg;
  closing->result = sft_runner_close(closing->runner, PATIENCE_MS);
  return NULL;
}

/* The exit path of a binding: one thread closes the runner while the runner's
 * thread is still running its task; the task sees the cancellation and the
 * runner finishes it within the close's timeout. The finish reaches the task
 * (the runner is still known until the close returns), and the close returns
 * as soon as the task is final, not at its timeout. */
static void test_a_task_finished_while_its_runner_closes(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-closing", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-closing-queued", NULL), SFT_OK);
  char *assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"run-closing\",\"run\":true"));
  sft_string_free(assignment);

  Closing closing = {runner, SFT_ERR_INTERNAL};
  pthread_t closer;
  pthread_create(&closer, NULL, close_runner_patiently, &closing);
  /* The close asks the running task to cancel; a long-poll on one's own task is allowed. */
  bool requested = false;
  for (uint64_t revision = 2; !requested; revision++) {
    char *status = NULL;
    CHECK_RESULT(sft_wait_task_change("run-closing", revision, PATIENCE_MS, &status), SFT_OK);
    requested = json_has(status, "\"cancel_requested\":true");
    sft_string_free(status);
  }
  /* Closing: no new task for it, and its blocked or later next learns it. */
  CHECK_RESULT(sft_submit_runner_task(runner, "run-closing-late", NULL), SFT_ERR_SHUT_DOWN);
  CHECK(sft_get_task_status("run-closing-late") == NULL);
  CHECK_RESULT(sft_runner_finish(runner, "run-closing", 0, NULL), SFT_OK);
  pthread_join(closer, NULL);
  CHECK(closing.result == SFT_OK);
  CHECK(status_has("run-closing", "\"status\":\"CANCELLED\""));
  CHECK(status_has("run-closing", "\"error\":\"cancelled while running\""));
  CHECK(status_has("run-closing-queued", "\"error\":\"its runner closed before it ran\""));
  CHECK_RESULT(sft_runner_finish(runner, "run-closing", 0, NULL), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_ERR_NOT_FOUND);
}

static void test_shutdown_releases_and_then_tells_the_runner(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-last", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-never", NULL), SFT_OK);
  char *assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"run-last\""));
  sft_string_free(assignment);
  /* Inside run-last, shutdown does everything but wait (waiting would deadlock). */
  CHECK_RESULT(sft_shutdown(PATIENCE_MS), SFT_OK);
  CHECK(status_has("run-never", "\"status\":\"CANCELLED\""));
  assignment = next_assignment(runner, PATIENCE_MS, SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"run-never\",\"run\":false"));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_finish(runner, "run-last", 0, NULL), SFT_OK);
  CHECK(status_has("run-last", "\"status\":\"CANCELLED\""));
  next_assignment(runner, PATIENCE_MS, SFT_ERR_SHUT_DOWN);
  CHECK_RESULT(sft_submit_runner_task(runner, "run-late", NULL), SFT_ERR_SHUT_DOWN);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
}

int main(void) {
  test_register_and_unknown_runners();
  test_run_in_fifo_order_and_finish();
  test_an_over_long_message_is_shortened();
  test_cancelled_before_running_comes_back_not_to_run();
  test_close_cancels_the_queue_and_fails_the_running_task();
  test_a_task_finished_while_its_runner_closes();
  test_shutdown_releases_and_then_tells_the_runner();
  return finish_checks("test_runners");
}
