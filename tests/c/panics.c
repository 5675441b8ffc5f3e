/* No Rust panic crosses the C boundary: a panicking export returns
 * SFT_ERR_INTERNAL (or NULL), a panicking task is FAILED, a panicking listener
 * is contained, and the manager keeps working after each. Built against the
 * library compiled with the `testing` feature, whose hooks panic on purpose. */
#include "check.h"

int main(void) {
  CHECK_RESULT(sft_testing_panic_in_call(), SFT_ERR_INTERNAL);
  CHECK(last_error_has("panic"));
  CHECK(sft_testing_panic_in_string_call() == NULL);
  CHECK(last_error_has("panic"));

  CHECK_RESULT(sft_testing_submit_panicking_task("panics-task"), SFT_OK);
  CHECK(finishes_as("panics-task", "FAILED"));
  CHECK(status_has("panics-task", "\"error\":\"task panicked: deliberate test panic in a task\""));

  CHECK_RESULT(sft_testing_install_panicking_listener(), SFT_OK);
  Usage usage = {0, 0};
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "panics-after", NULL), SFT_OK);
  CHECK(finishes_as("panics-after", "COMPLETED"));
  CHECK(atomic_load(&usage.runs) == 1 && atomic_load(&usage.frees) == 1);
  CHECK_RESULT(sft_set_event_listener(NULL, NULL), SFT_OK);

  char *stats = sft_get_stats();
  CHECK(json_has(stats, "\"failed_total\":1") && json_has(stats, "\"completed_total\":1"));
  sft_string_free(stats);
  return finish_checks("test_panics");
}
