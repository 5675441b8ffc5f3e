/* The lifecycle: configuration, cancellation, waits and long-polls that wake
 * on the change (not their timeout), deferred and external completion, the
 * change feed, listing, statistics and shutdown. Configuration comes first
 * (it is fixed at the first submit) and shutdown last (it is final). */
#include "check.h"

static const int64_t PATIENCE_MS = 60000; /* never reached in a passing run */

static void test_configuration(void) {
  CHECK_RESULT(sft_configure("{\"max_pending_tasks\": 3, \"max_retained_finished\": 0}"), SFT_OK);
  CHECK_RESULT(sft_configure("{\"max_pending_taks\": 3}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("max_pending_taks"));
  CHECK_RESULT(sft_configure("{\"cleanup_threshold_secs\": -1}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_configure("{\"max_pending_tasks\": \"3\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_configure("[]"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_configure("{"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_configure(NULL), SFT_ERR_INVALID_ARGUMENT);
  char *config = sft_get_config();
  CHECK(json_has(config, "\"max_pending_tasks\":3"));
  CHECK(json_has(config, "\"cleanup_threshold_secs\":3600.0"));
  sft_string_free(config);
}

static void test_configuration_is_fixed_after_first_submit(void) {
  Usage usage = {0, 0};
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "life-first", NULL), SFT_OK);
  CHECK(finishes_as("life-first", "COMPLETED"));
  CHECK_RESULT(sft_configure("{\"max_pending_tasks\": 3}"), SFT_OK); /* no change */
  CHECK_RESULT(sft_configure("{\"max_pending_tasks\": 4}"), SFT_ERR_INVALID_STATE);
  char *config = sft_get_config();
  CHECK(json_has(config, "\"max_pending_tasks\":3"));
  sft_string_free(config);
}

static void test_cancel_pending_and_queue_limits(void) {
  Gate gate = GATE_INIT;
  Usage usage[4] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}};
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "life-gate", NULL), SFT_OK);
  CHECK(wait_started("life-gate"));
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[0], free_count, "life-p0", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[1], free_count, "life-p1", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[2], free_count, "life-p2", NULL), SFT_OK);
  CHECK(status_has("life-p2", "\"queue_position\":2"));
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[3], free_count, "life-p3", NULL), SFT_ERR_QUEUE_FULL);
  CHECK(atomic_load(&usage[3].frees) == 0);
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[3], free_count, "life-p0", NULL), SFT_ERR_DUPLICATE_ID);

  CHECK_RESULT(sft_cancel_task("life-p1"), SFT_OK);
  CHECK(atomic_load(&usage[1].frees) == 1); /* freed at once, before the worker is free */
  CHECK(status_has("life-p1", "\"status\":\"CANCELLED\""));
  CHECK(status_has("life-p1", "\"error\":\"cancelled before it started\""));
  CHECK(status_has("life-p1", "\"queue_position\":null"));
  CHECK(status_has("life-p2", "\"queue_position\":1"));
  CHECK_RESULT(sft_cancel_task("life-p1"), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_cancel_task("life-missing"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_cancel_task(NULL), SFT_ERR_INVALID_ARGUMENT);
  /* A cancelled slot frees queue room. */
  CHECK_RESULT(sft_submit_task(task_count_run, &usage[3], free_count, "life-p3", NULL), SFT_OK);

  gate_open(&gate);
  CHECK(finishes_as("life-p3", "COMPLETED"));
  CHECK(finishes_as("life-p1", "CANCELLED"));
  CHECK(atomic_load(&usage[1].runs) == 0);
  for (int i = 0; i < 4; i++) CHECK(atomic_load(&usage[i].frees) == 1);
}

static int32_t task_until_cancelled(const char *task_id, void *user_data) {
  (void)user_data;
  bool requested = false;
  while (sft_is_cancel_requested(task_id, &requested) == SFT_OK && !requested) usleep(100);
  return 0;
}

static void test_cancel_running(void) {
  CHECK_RESULT(sft_submit_task(task_until_cancelled, NULL, NULL, "life-run", NULL), SFT_OK);
  CHECK(wait_started("life-run"));
  CHECK(status_has("life-run", "\"cancel_requested\":false"));
  CHECK_RESULT(sft_cancel_task("life-run"), SFT_OK);
  CHECK(finishes_as("life-run", "CANCELLED"));
  CHECK(status_has("life-run", "\"cancel_requested\":true"));
  CHECK(status_has("life-run", "\"error\":\"cancelled while running\""));
  CHECK_RESULT(sft_cancel_task("life-run"), SFT_ERR_INVALID_STATE);
  bool requested = false;
  CHECK_RESULT(sft_is_cancel_requested("life-run", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_is_cancel_requested("life-missing", &requested), SFT_ERR_NOT_FOUND);
}

typedef struct {
  const char *task_id;
  uint64_t after_revision;
  int use_change_wait;
  SftResult result;
  char *status;
} Waiter;

static void *wait_in_thread(void *arg) {
  Waiter *waiter = arg;
  waiter->result = waiter->use_change_wait
                       ? sft_wait_task_change(waiter->task_id, waiter->after_revision, PATIENCE_MS, &waiter->status)
                       : sft_wait_task(waiter->task_id, PATIENCE_MS, &waiter->status);
  return NULL;
}

static void test_waits_wake_on_the_change(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "life-wait", NULL), SFT_OK);
  CHECK(wait_started("life-wait")); /* revision 2 */
  char *status = (char *)"garbage";
  CHECK_RESULT(sft_wait_task("life-wait", 5, &status), SFT_ERR_TIMEOUT);
  CHECK(status == NULL);
  CHECK_RESULT(sft_wait_task_change("life-wait", 2, 0, NULL), SFT_ERR_TIMEOUT);
  CHECK_RESULT(sft_wait_task("life-wait", -2, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_wait_task("life-wait", SFT_MAX_TIMEOUT_MS + 1, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_wait_task("life-missing", 0, NULL), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_wait_task_change(NULL, 0, 0, NULL), SFT_ERR_INVALID_ARGUMENT);

  Waiter finish_waiter = {"life-wait", 0, 0, SFT_ERR_INTERNAL, NULL};
  Waiter change_waiter = {"life-wait", 2, 1, SFT_ERR_INTERNAL, NULL};
  pthread_t finish_thread, change_thread;
  pthread_create(&finish_thread, NULL, wait_in_thread, &finish_waiter);
  pthread_create(&change_thread, NULL, wait_in_thread, &change_waiter);
  CHECK_RESULT(sft_update_task_progress("life-wait", 1, 2, NULL), SFT_OK); /* revision 3 */
  pthread_join(change_thread, NULL);
  CHECK_RESULT(change_waiter.result, SFT_OK);
  CHECK(json_has(change_waiter.status, "\"revision\":3"));
  CHECK(json_has(change_waiter.status, "\"percentage\":50"));
  gate_open(&gate);
  pthread_join(finish_thread, NULL);
  CHECK_RESULT(finish_waiter.result, SFT_OK);
  CHECK(json_has(finish_waiter.status, "\"status\":\"COMPLETED\""));
  sft_string_free(change_waiter.status);
  sft_string_free(finish_waiter.status);
  /* A finished task answers a long-poll at once, whatever the revision. */
  CHECK_RESULT(sft_wait_task_change("life-wait", 1000, PATIENCE_MS, NULL), SFT_OK);
}

static int32_t task_defer_completion(const char *task_id, void *user_data) {
  (void)user_data;
  return sft_defer_task(task_id) == SFT_OK ? 5 /* ignored once deferred */ : 0;
}

static void *finish_from_another_thread(void *arg) {
  (void)arg;
  CHECK_RESULT(sft_finish_task("life-deferred", 0, NULL), SFT_OK);
  return NULL;
}

static void test_deferred_completion(void) {
  CHECK_RESULT(sft_submit_task(task_defer_completion, NULL, NULL, "life-deferred", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "life-after-deferred", NULL), SFT_OK);
  CHECK(wait_started("life-deferred"));
  CHECK_RESULT(sft_defer_task("life-after-deferred"), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_finish_task("life-after-deferred", 0, NULL), SFT_ERR_INVALID_STATE);
  /* The worker is held by the deferred task: the next one cannot start. */
  CHECK_RESULT(sft_wait_task_change("life-after-deferred", 1, 20, NULL), SFT_ERR_TIMEOUT);
  CHECK(status_has("life-after-deferred", "\"status\":\"PENDING\""));
  CHECK(status_has("life-after-deferred", "\"queue_position\":0"));
  pthread_t finisher;
  pthread_create(&finisher, NULL, finish_from_another_thread, NULL);
  pthread_join(finisher, NULL);
  CHECK(status_has("life-deferred", "\"status\":\"COMPLETED\""));
  CHECK_RESULT(sft_finish_task("life-deferred", 0, NULL), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_finish_task("life-missing", 0, NULL), SFT_ERR_NOT_FOUND);
  CHECK(finishes_as("life-after-deferred", "COMPLETED"));
}

/* Reads the change feed from `*after_seq` until an event of `kind` for `task_id` arrives. */
static int feed_until(uint64_t *after_seq, const char *task_id, const char *kind, char *kinds_seen, size_t room) {
  char wanted_id[128], wanted_kind[64];
  snprintf(wanted_id, sizeof wanted_id, "\"task_id\":\"%s\"", task_id);
  snprintf(wanted_kind, sizeof wanted_kind, "\"kind\":\"%s\"", kind);
  for (;;) {
    char *events = NULL;
    if (sft_wait_events(*after_seq, 1, PATIENCE_MS, &events) != SFT_OK) return 0;
    const char *seq = strstr(events, "\"seq\":");
    *after_seq = strtoull(seq + strlen("\"seq\":"), NULL, 10);
    int found = json_has(events, wanted_id) && json_has(events, wanted_kind);
    if (json_has(events, wanted_id) && kinds_seen != NULL) {
      const char *kind_start = strstr(events, "\"kind\":\"") + strlen("\"kind\":\"");
      strncat(kinds_seen, kind_start, strcspn(kind_start, "\""));
      strncat(kinds_seen, " ", room - strlen(kinds_seen) - 1);
    }
    sft_string_free(events);
    if (found) return 1;
  }
}

static void test_external_tasks_and_the_change_feed(void) {
  uint64_t after_seq = sft_last_event_seq();
  char kinds[256] = "";
  char *task_id = NULL;
  CHECK_RESULT(sft_submit_external_task("life-js", &task_id), SFT_OK);
  CHECK(task_id != NULL && strcmp(task_id, "life-js") == 0);
  sft_string_free(task_id);
  CHECK(feed_until(&after_seq, "life-js", "started", kinds, sizeof kinds));
  CHECK_RESULT(sft_update_task_progress("life-js", 1, 1, NULL), SFT_OK);
  CHECK_RESULT(sft_finish_task("life-js", 2, "promise rejected: \"no voice\""), SFT_OK);
  CHECK(feed_until(&after_seq, "life-js", "finished", kinds, sizeof kinds));
  CHECK(strcmp(kinds, "submitted started progress finished ") == 0);
  CHECK(status_has("life-js", "\"status\":\"FAILED\""));
  CHECK(status_has("life-js", "\"error\":\"promise rejected: \\\"no voice\\\"\""));

  char *events = NULL;
  CHECK_RESULT(sft_wait_events(after_seq - 4, 10, 0, &events), SFT_OK);
  CHECK(json_has(events, "{\"seq\":"));
  CHECK(json_has(events, "\"kind\":\"finished\",\"status\":\"FAILED\""));
  sft_string_free(events);
  CHECK_RESULT(sft_wait_events(sft_last_event_seq(), 10, 0, &events), SFT_ERR_TIMEOUT);
  CHECK(events == NULL);
  CHECK_RESULT(sft_wait_events(0, 0, 0, &events), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_wait_events(0, 1, -5, &events), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_submit_external_task("life-js", NULL), SFT_ERR_DUPLICATE_ID);
}

static void test_listing_and_stats(void) {
  char *listed = NULL;
  CHECK_RESULT(sft_list_tasks("CANCELLED", &listed), SFT_OK);
  CHECK(json_has(listed, "\"task_id\":\"life-p1\""));
  CHECK(json_has(listed, "\"task_id\":\"life-run\""));
  CHECK(!json_has(listed, "\"task_id\":\"life-first\""));
  CHECK(listed && listed[0] == '[');
  sft_string_free(listed);
  CHECK_RESULT(sft_list_tasks(NULL, &listed), SFT_OK);
  CHECK(json_has(listed, "\"task_id\":\"life-first\""));
  CHECK(strstr(listed, "\"life-first\"") < strstr(listed, "\"life-gate\"")); /* submission order */
  sft_string_free(listed);
  CHECK_RESULT(sft_list_tasks("pending", &listed), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_list_tasks(NULL, NULL), SFT_ERR_INVALID_ARGUMENT);
  char *stats = sft_get_stats();
  CHECK(json_has(stats, "\"counts\":{\"PENDING\":0,\"PROCESSING\":0,"));
  CHECK(json_has(stats, "\"CANCELLED\":2}"));
  CHECK(json_has(stats, "\"queue_depth\":0"));
  CHECK(json_has(stats, "\"failed_total\":1"));
  CHECK(json_has(stats, "\"mean_run_secs\":"));
  CHECK(json_has(stats, "\"max_run_secs\":"));
  sft_string_free(stats);
}

static void test_shutdown(void) {
  Usage queued = {0, 0}, refused = {0, 0};
  CHECK_RESULT(sft_submit_task(task_until_cancelled, NULL, NULL, "life-last", NULL), SFT_OK);
  CHECK(wait_started("life-last"));
  CHECK_RESULT(sft_submit_task(task_count_run, &queued, free_count, "life-queued", NULL), SFT_OK);
  CHECK_RESULT(sft_shutdown(-7), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_shutdown(PATIENCE_MS), SFT_OK);
  CHECK(status_has("life-queued", "\"error\":\"cancelled by shutdown\""));
  CHECK(atomic_load(&queued.frees) == 1 && atomic_load(&queued.runs) == 0);
  CHECK(status_has("life-last", "\"status\":\"CANCELLED\""));
  CHECK_RESULT(sft_submit_task(task_count_run, &refused, free_count, "life-late", NULL), SFT_ERR_SHUT_DOWN);
  CHECK_RESULT(sft_submit_external_task(NULL, NULL), SFT_ERR_SHUT_DOWN);
  CHECK(atomic_load(&refused.frees) == 0);
  CHECK(finishes_as("life-queued", "CANCELLED")); /* waits and reads keep working */
  char *listed = NULL;
  CHECK_RESULT(sft_list_tasks(NULL, &listed), SFT_OK);
  sft_string_free(listed);
  CHECK_RESULT(sft_shutdown(0), SFT_OK);
}

int main(void) {
  test_configuration();
  test_configuration_is_fixed_after_first_submit();
  test_cancel_pending_and_queue_limits();
  test_cancel_running();
  test_waits_wake_on_the_change();
  test_deferred_completion();
  test_external_tasks_and_the_change_feed();
  test_listing_and_stats();
  test_shutdown();
  return finish_checks("test_lifecycle");
}
