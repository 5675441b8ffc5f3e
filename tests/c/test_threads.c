/* Threading and re-entrancy: several threads submitting and polling at once,
 * one task at a time in FIFO order, and every call made from inside a task
 * and from inside a listener. */
#include "check.h"

enum { SUBMITTERS = 4, TASKS_EACH = 250, POLLERS = 2 };

static atomic_int running_now;
static atomic_int overlap_seen;
static atomic_int run_sequence;
static atomic_int stop_polling;

typedef struct {
  int submitter;
  int index;
  int ran_at; /* position in the global run order */
  atomic_int frees;
} Job;

static int32_t task_record_order(const char *task_id, void *user_data) {
  (void)task_id;
  Job *job = user_data;
  if (atomic_fetch_add(&running_now, 1) != 0) atomic_store(&overlap_seen, 1);
  job->ran_at = atomic_fetch_add(&run_sequence, 1);
  atomic_fetch_sub(&running_now, 1);
  return 0;
}

static void free_job(void *user_data) { atomic_fetch_add(&((Job *)user_data)->frees, 1); }

static Job jobs[SUBMITTERS][TASKS_EACH];

static void *submit_many(void *arg) {
  int submitter = (int)(intptr_t)arg;
  for (int i = 0; i < TASKS_EACH; i++) {
    Job *job = &jobs[submitter][i];
    job->submitter = submitter;
    job->index = i;
    char task_id[64];
    snprintf(task_id, sizeof task_id, "thr-%d-%d", submitter, i);
    CHECK_RESULT(sft_submit_task(task_record_order, job, free_job, task_id, NULL), SFT_OK);
    char *status = sft_get_task_status(task_id);
    CHECK(status != NULL);
    sft_string_free(status);
  }
  return NULL;
}

static void *poll_constantly(void *arg) {
  (void)arg;
  unsigned reads = 0;
  while (!atomic_load(&stop_polling)) {
    char task_id[64];
    snprintf(task_id, sizeof task_id, "thr-%u-%u", reads % SUBMITTERS, (reads / SUBMITTERS) % TASKS_EACH);
    sft_string_free(sft_get_task_status(task_id));
    if (reads % 64 == 0) {
      char *listed = NULL;
      CHECK_RESULT(sft_list_tasks("PENDING", &listed), SFT_OK);
      sft_string_free(listed);
      sft_string_free(sft_get_stats());
    }
    reads++;
  }
  return NULL;
}

static void test_many_threads_submit_and_poll(void) {
  pthread_t submitters[SUBMITTERS], pollers[POLLERS];
  for (int p = 0; p < POLLERS; p++) pthread_create(&pollers[p], NULL, poll_constantly, NULL);
  for (int s = 0; s < SUBMITTERS; s++) pthread_create(&submitters[s], NULL, submit_many, (void *)(intptr_t)s);
  for (int s = 0; s < SUBMITTERS; s++) pthread_join(submitters[s], NULL);
  for (int s = 0; s < SUBMITTERS; s++) {
    char task_id[64];
    snprintf(task_id, sizeof task_id, "thr-%d-%d", s, TASKS_EACH - 1);
    CHECK(finishes_as(task_id, "COMPLETED"));
  }
  atomic_store(&stop_polling, 1);
  for (int p = 0; p < POLLERS; p++) pthread_join(pollers[p], NULL);

  int frees_ok = 1, fifo_ok = 1;
  for (int s = 0; s < SUBMITTERS; s++) {
    for (int i = 0; i < TASKS_EACH; i++) {
      /* All tasks finished, and each submitter's last one finished last among its own. */
      char task_id[64];
      snprintf(task_id, sizeof task_id, "thr-%d-%d", s, i);
      if (!finishes_as(task_id, "COMPLETED")) frees_ok = 0;
      if (atomic_load(&jobs[s][i].frees) != 1) frees_ok = 0;
      if (i > 0 && jobs[s][i].ran_at < jobs[s][i - 1].ran_at) fifo_ok = 0;
    }
  }
  CHECK(frees_ok);
  CHECK(fifo_ok);
  CHECK(atomic_load(&overlap_seen) == 0);
  CHECK(atomic_load(&run_sequence) == SUBMITTERS * TASKS_EACH);
}

/* ---- re-entrancy from inside a task ---- */

typedef struct {
  int inner_submitted, own_status_processing, progress_ok, segment_ok, error_ok, listed_self, stats_ok;
  int cancelled_inner, inner_state_ok, cancel_poll_ok, wait_self_refused, change_wait_ok;
} Inside;

static int32_t task_noop(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  return 0;
}

static int32_t task_use_everything(const char *task_id, void *user_data) {
  Inside *inside = user_data;
  inside->inner_submitted = sft_submit_task(task_noop, NULL, NULL, "reent-inner", NULL) == SFT_OK;
  char *own = sft_get_task_status(task_id);
  inside->own_status_processing = json_has(own, "\"status\":\"PROCESSING\"");
  sft_string_free(own);
  inside->progress_ok = sft_update_task_progress(task_id, 1, 2, "{\"current_segment_id\":1}") == SFT_OK;
  inside->segment_ok = sft_add_completed_segment(task_id, "1", "/a.wav", 1.0) == SFT_OK;
  inside->error_ok = sft_add_error(task_id, "2", "bad") == SFT_OK;
  char *listed = NULL;
  inside->listed_self = sft_list_tasks("PROCESSING", &listed) == SFT_OK && json_has(listed, "\"reent-outer\"");
  sft_string_free(listed);
  char *stats = sft_get_stats();
  inside->stats_ok = json_has(stats, "\"PROCESSING\":1");
  sft_string_free(stats);
  bool requested = true;
  inside->cancel_poll_ok = sft_is_cancel_requested(task_id, &requested) == SFT_OK && !requested;
  char *status = NULL;
  inside->change_wait_ok = sft_wait_task_change(task_id, 0, 0, &status) == SFT_OK && status != NULL;
  sft_string_free(status);
  inside->wait_self_refused = sft_wait_task(task_id, 1000, NULL) == SFT_ERR_INVALID_STATE;
  inside->cancelled_inner = sft_cancel_task("reent-inner") == SFT_OK;
  char *inner = sft_get_task_status("reent-inner");
  inside->inner_state_ok = json_has(inner, "\"status\":\"CANCELLED\"");
  sft_string_free(inner);
  return 0;
}

static void test_every_call_from_inside_a_task(void) {
  Inside inside;
  memset(&inside, 0, sizeof inside);
  CHECK_RESULT(sft_submit_task(task_use_everything, &inside, NULL, "reent-outer", NULL), SFT_OK);
  CHECK(finishes_as("reent-outer", "COMPLETED"));
  CHECK(inside.inner_submitted);
  CHECK(inside.own_status_processing);
  CHECK(inside.progress_ok && inside.segment_ok && inside.error_ok);
  CHECK(inside.listed_self);
  CHECK(inside.stats_ok);
  CHECK(inside.cancel_poll_ok);
  CHECK(inside.change_wait_ok);
  CHECK(inside.wait_self_refused);
  CHECK(inside.cancelled_inner && inside.inner_state_ok);
  CHECK(status_has("reent-outer", "\"percentage\":50"));
}

/* ---- re-entrancy from inside a listener ---- */

static atomic_int listener_calls;
static atomic_int listener_reads_ok;
static Gate listener_saw_finish = GATE_INIT;

static void listener_reads_back(const char *event_json, void *user_data) {
  (void)user_data;
  const char *id_start = strstr(event_json, "\"task_id\":\"");
  if (id_start == NULL) return;
  id_start += strlen("\"task_id\":\"");
  char task_id[128] = {0};
  size_t length = strcspn(id_start, "\"");
  if (length >= sizeof task_id) return;
  memcpy(task_id, id_start, length);
  atomic_fetch_add(&listener_calls, 1);
  char *status = sft_get_task_status(task_id); /* takes the task's lock: a deadlock if it were held */
  char *stats = sft_get_stats();
  if (status != NULL && stats != NULL) atomic_fetch_add(&listener_reads_ok, 1);
  sft_string_free(status);
  sft_string_free(stats);
  if (strstr(event_json, "\"kind\":\"started\"")) sft_update_task_progress(task_id, 0, 1, NULL);
  if (strstr(event_json, "\"kind\":\"finished\"")) gate_open(&listener_saw_finish);
}

static void test_listener_may_call_back_in(void) {
  CHECK_RESULT(sft_set_event_listener(listener_reads_back, NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_noop, NULL, NULL, "listened", NULL), SFT_OK);
  CHECK(finishes_as("listened", "COMPLETED"));
  gate_pass(&listener_saw_finish); /* the finish is delivered just after it becomes visible */
  CHECK_RESULT(sft_set_event_listener(NULL, NULL), SFT_OK);
  /* submitted, started, progress (from the listener itself), finished */
  CHECK(atomic_load(&listener_calls) == 4);
  CHECK(atomic_load(&listener_reads_ok) == atomic_load(&listener_calls));
  CHECK(status_has("listened", "\"progress\":{\"current\":0,\"total\":1,\"percentage\":0}"));
}

/* ---- a cancel racing with the submission of the same id ---- */

enum { RACES = 10000 };
static Usage race_usage[RACES];
static atomic_int race_submitted;

static void *submit_race_ids(void *arg) {
  (void)arg;
  for (int i = 0; i < RACES; i++) {
    char task_id[32];
    snprintf(task_id, sizeof task_id, "race-%d", i);
    CHECK_RESULT(sft_submit_task(task_count_run, &race_usage[i], free_count, task_id, NULL), SFT_OK);
    atomic_store(&race_submitted, i + 1);
  }
  return NULL;
}

static void *cancel_race_ids(void *arg) {
  (void)arg;
  for (int i = 0; i < RACES; i++) {
    char task_id[32];
    snprintf(task_id, sizeof task_id, "race-%d", i);
    /* Cancel as soon as the id exists, often while its submission is still under way. */
    SftResult result;
    while ((result = sft_cancel_task(task_id)) == SFT_ERR_NOT_FOUND) {
    }
    CHECK(result == SFT_OK || result == SFT_ERR_INVALID_STATE); /* the worker may have finished it */
  }
  return NULL;
}

static void test_cancel_racing_with_submit(void) {
  pthread_t submitter, canceller;
  pthread_create(&canceller, NULL, cancel_race_ids, NULL);
  pthread_create(&submitter, NULL, submit_race_ids, NULL);
  pthread_join(submitter, NULL);
  pthread_join(canceller, NULL);
  int freed_once = 1, consistent = 1;
  for (int i = 0; i < RACES; i++) {
    char task_id[32];
    snprintf(task_id, sizeof task_id, "race-%d", i);
    char *status = NULL;
    CHECK_RESULT(sft_wait_task(task_id, 60000, &status), SFT_OK);
    int runs = atomic_load(&race_usage[i].runs);
    /* Never run: cancelled before it started. Run: completed, or cancelled while running. */
    if (runs == 0 ? !json_has(status, "\"error\":\"cancelled before it started\"")
                  : !(json_has(status, "\"status\":\"COMPLETED\"") || json_has(status, "cancelled while running")))
      consistent = 0;
    if (runs > 1 || atomic_load(&race_usage[i].frees) != 1) freed_once = 0;
    sft_string_free(status);
  }
  CHECK(freed_once);
  CHECK(consistent);
}

int main(void) {
  alarm(300); /* a deadlock fails the run instead of hanging it */
  test_many_threads_submit_and_poll();
  test_cancel_racing_with_submit();
  test_every_call_from_inside_a_task();
  test_listener_may_call_back_in();
  return finish_checks("test_threads");
}
