/* A minimal check harness for the header-driven C tests: counts checks and
 * ends with the "NAME: N passed, N failed" line that CI reads. */
#ifndef STORYFLOW_TASKS_CHECK_H
#define STORYFLOW_TASKS_CHECK_H

#define _DEFAULT_SOURCE /* usleep, fork and friends under -std=c11 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storyflow_tasks.h"

static atomic_int checks_passed;
static atomic_int checks_failed;

#define CHECK(cond)                                                              \
  do {                                                                           \
    if (cond) {                                                                  \
      atomic_fetch_add(&checks_passed, 1);                                       \
    } else {                                                                     \
      atomic_fetch_add(&checks_failed, 1);                                       \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                            \
  } while (0)

#define CHECK_RESULT(expr, expected)                                             \
  do {                                                                           \
    SftResult got_ = (expr);                                                     \
    if (got_ == (expected)) {                                                    \
      atomic_fetch_add(&checks_passed, 1);                                       \
    } else {                                                                     \
      char *why_ = sft_last_error_message();                                     \
      atomic_fetch_add(&checks_failed, 1);                                       \
      fprintf(stderr, "%s:%d: %s gave %s, expected %s (%s)\n", __FILE__,         \
              __LINE__, #expr, sft_result_name(got_),                            \
              sft_result_name(expected), why_ ? why_ : "no message");            \
      sft_string_free(why_);                                                     \
    }                                                                            \
  } while (0)

/* Whether `json` contains `fragment`; the library's JSON is compact. */
static inline int json_has(const char *json, const char *fragment) {
  return json != NULL && strstr(json, fragment) != NULL;
}

/* The status JSON's fragment check, freeing the status. */
static inline int status_has(const char *task_id, const char *fragment) {
  char *status = sft_get_task_status(task_id);
  int found = json_has(status, fragment);
  if (!found) fprintf(stderr, "  status of %s lacks %s: %s\n", task_id, fragment, status ? status : "NULL");
  sft_string_free(status);
  return found;
}

/* The last error message contains `fragment`. */
static inline int last_error_has(const char *fragment) {
  char *message = sft_last_error_message();
  int found = json_has(message, fragment);
  if (!found) fprintf(stderr, "  last error lacks \"%s\": %s\n", fragment, message ? message : "NULL");
  sft_string_free(message);
  return found;
}

/* Waits for a task to finish (generously: passing runs never reach it) and checks its state. */
static inline int finishes_as(const char *task_id, const char *state) {
  char *status = NULL;
  SftResult result = sft_wait_task(task_id, 60000, &status);
  char expected[64];
  snprintf(expected, sizeof expected, "\"status\":\"%s\"", state);
  int ok = result == SFT_OK && json_has(status, expected);
  if (!ok) fprintf(stderr, "  %s: %s, %s, expected %s\n", task_id, sft_result_name(result), status ? status : "NULL", state);
  sft_string_free(status);
  return ok;
}

/* A one-shot gate that task functions block on until the test opens it. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t opened_cond;
  int opened;
  atomic_int entered;
} Gate;

#define GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0}

static inline void gate_open(Gate *gate) {
  pthread_mutex_lock(&gate->lock);
  gate->opened = 1;
  pthread_cond_broadcast(&gate->opened_cond);
  pthread_mutex_unlock(&gate->lock);
}

static inline void gate_pass(Gate *gate) {
  atomic_fetch_add(&gate->entered, 1);
  pthread_mutex_lock(&gate->lock);
  while (!gate->opened) pthread_cond_wait(&gate->opened_cond, &gate->lock);
  pthread_mutex_unlock(&gate->lock);
}

/* A task function that waits at the gate in `user_data`. */
static inline int32_t task_wait_at_gate(const char *task_id, void *user_data) {
  (void)task_id;
  gate_pass((Gate *)user_data);
  return 0;
}

/* Waits until the worker has started `task_id` (its "started" revision). */
static inline int wait_started(const char *task_id) {
  char *status = NULL;
  SftResult result = sft_wait_task_change(task_id, 1, 60000, &status);
  int ok = result == SFT_OK && json_has(status, "\"status\":\"PROCESSING\"");
  sft_string_free(status);
  return ok;
}

/* Counts runs and frees of a task's user data. */
typedef struct {
  atomic_int runs;
  atomic_int frees;
} Usage;

/* For tasks whose counts no check reads: static, since the task may outlive any caller's scope. */
static Usage unobserved_usage __attribute__((unused));

static inline int32_t task_count_run(const char *task_id, void *user_data) {
  (void)task_id;
  atomic_fetch_add(&((Usage *)user_data)->runs, 1);
  return 0;
}

static inline void free_count(void *user_data) { atomic_fetch_add(&((Usage *)user_data)->frees, 1); }

static inline int finish_checks(const char *suite) {
  int failed = atomic_load(&checks_failed);
  printf("%s: %d passed, %d failed\n", suite, atomic_load(&checks_passed), failed);
  return failed ? 1 : 0;
}

#endif
