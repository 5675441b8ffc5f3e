/* fork() while the library is busy: a task holds the worker, tasks wait in
 * the queue, and two threads submit, poll, list and cancel without pause,
 * while the main thread forks repeatedly and one task forks from inside the
 * worker thread. Every child must get a fresh, working manager (its own
 * worker runs its tasks) and never see or run the parent's tasks; the parent
 * must carry on and run each of its tasks exactly once, in its own process.
 *
 * Prints "fork_during_activity: N passed, N failed" and exits non-zero on any
 * failure. Children report through a pipe and leave with _exit: after fork()
 * only the forking thread exists, and exit handlers could wait on what the
 * parent's other threads held. */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "storyflow_tasks.h"

#define FORKS 24
#define QUEUED 16

static atomic_int passed;
static atomic_int failed;
static atomic_int stop_hammering;
static atomic_int release_gate;
static atomic_int queued_runs[QUEUED];
static atomic_int wrong_process_runs;
static atomic_int user_data_frees;
static atomic_int hammer_accepted;
static pid_t parent_pid;

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (cond) {                                                                    \
      atomic_fetch_add(&passed, 1);                                                \
    } else {                                                                       \
      atomic_fetch_add(&failed, 1);                                                \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);     \
    }                                                                              \
  } while (0)

static void sleep_ms(long ms) {
  struct timespec pause = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&pause, &pause) != 0 && errno == EINTR) {
  }
}

static void count_free(void *user_data) {
  (void)user_data;
  atomic_fetch_add(&user_data_frees, 1);
}

/* Holds the worker until released, so that the queue stays full during the forks. */
static int32_t task_gate(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  while (!atomic_load(&release_gate)) sleep_ms(1);
  return 0;
}

/* A queued parent task: counts its run and the process it ran in. */
static int32_t task_queued(const char *task_id, void *user_data) {
  (void)task_id;
  int index = (int)(intptr_t)user_data;
  atomic_fetch_add(&queued_runs[index], 1);
  if (getpid() != parent_pid) atomic_fetch_add(&wrong_process_runs, 1);
  return 0;
}

static int32_t task_child(const char *task_id, void *user_data) {
  (void)task_id;
  *(pid_t *)user_data = getpid();
  return 0;
}

/* The checks a child runs; returns 0 or the number of the first failing step. */
static int child_checks(const char *child_id) {
  /* What had run in the parent before the fork (everything, for the child of the worker). */
  int runs_at_fork[QUEUED];
  for (int i = 0; i < QUEUED; i++) runs_at_fork[i] = atomic_load(&queued_runs[i]);
  for (int i = 0; i < QUEUED; i++) {
    char id[32];
    snprintf(id, sizeof id, "queued-%d", i);
    char *status = sft_get_task_status(id);
    if (status != NULL) {
      sft_string_free(status);
      return 1; /* the parent's registry leaked into the child */
    }
  }
  if (sft_get_task_status("gate") != NULL) return 2;
  pid_t ran_in = 0;
  if (sft_submit_task(task_child, &ran_in, NULL, child_id, NULL) != SFT_OK) return 3;
  /* The parent's queued ids are free here. */
  if (sft_submit_task(task_child, &ran_in, NULL, "queued-0", NULL) != SFT_OK) return 4;
  char *status = NULL;
  if (sft_wait_task("queued-0", 30000, &status) != SFT_OK) return 5; /* the child's own worker runs it */
  int completed = status != NULL && strstr(status, "\"status\":\"COMPLETED\"") != NULL;
  sft_string_free(status);
  if (!completed) return 6;
  if (ran_in != getpid()) return 7;
  for (int i = 0; i < QUEUED; i++) {
    if (atomic_load(&queued_runs[i]) != runs_at_fork[i]) return 8; /* a parent task ran in the child */
  }
  char *stats = sft_get_stats();
  int fresh = stats != NULL && strstr(stats, "\"submitted_total\":2") != NULL;
  sft_string_free(stats);
  return fresh ? 0 : 9;
}

/* Forks; the child runs its checks and reports one byte through a pipe. */
static void fork_and_check(const char *child_id) {
  int report[2];
  CHECK(pipe(report) == 0);
  pid_t child = fork();
  if (child == 0) {
    unsigned char step = (unsigned char)child_checks(child_id);
    ssize_t written = write(report[1], &step, 1);
    _exit(written == 1 ? 0 : 99);
  }
  CHECK(child > 0);
  close(report[1]);
  unsigned char step = 255;
  CHECK(read(report[0], &step, 1) == 1);
  close(report[0]);
  int wait_status = 0;
  CHECK(waitpid(child, &wait_status, 0) == child);
  CHECK(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  if (step != 0) fprintf(stderr, "child %s failed at step %d\n", child_id, step);
  CHECK(step == 0);
}

/* Forks from inside the worker thread: the child is a copy of the worker. */
static int32_t task_that_forks(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  fork_and_check("child-of-the-worker");
  return 0;
}

static atomic_int start_hammering;

static int32_t task_queued_elsewhere(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  if (getpid() != parent_pid) atomic_fetch_add(&wrong_process_runs, 1);
  return 0;
}

/* Keeps the library busy from another thread: submit, poll, list, cancel. */
static void *hammer(void *arg) {
  int which = (int)(intptr_t)arg;
  /* All start at once, as the first fork happens: the library's first status
   * reads (and whatever they set up lazily) race the fork. */
  while (!atomic_load(&start_hammering)) {
  }
  for (unsigned n = 0; !atomic_load(&stop_hammering); n++) {
    char id[48];
    snprintf(id, sizeof id, "hammer-%d-%u", which, n);
    if (sft_submit_task(task_queued_elsewhere, NULL, count_free, id, NULL) == SFT_OK) {
      atomic_fetch_add(&hammer_accepted, 1);
      char *status = sft_get_task_status(id);
      sft_string_free(status);
      sft_cancel_task(id); /* pending behind the gate: cancelled at once, user data freed */
    }
    char *list = NULL;
    if (sft_list_tasks("PENDING", &list) == SFT_OK) sft_string_free(list);
    char *stats = sft_get_stats();
    sft_string_free(stats);
    char *events = NULL;
    if (sft_wait_events(sft_last_event_seq(), 8, 0, &events) == SFT_OK) sft_string_free(events);
  }
  return NULL;
}

int main(void) {
  parent_pid = getpid();
  CHECK(sft_configure("{\"max_retained_finished\": 64}") == SFT_OK);
  CHECK(sft_submit_task(task_gate, NULL, NULL, "gate", NULL) == SFT_OK);
  for (int i = 0; i < QUEUED; i++) {
    char id[32];
    snprintf(id, sizeof id, "queued-%d", i);
    CHECK(sft_submit_task(task_queued, (void *)(intptr_t)i, count_free, id, NULL) == SFT_OK);
  }
  CHECK(sft_submit_task(task_that_forks, NULL, NULL, "forker", NULL) == SFT_OK);

  pthread_t hammers[2];
  for (int i = 0; i < 2; i++) CHECK(pthread_create(&hammers[i], NULL, hammer, (void *)(intptr_t)i) == 0);
  atomic_store(&start_hammering, 1);
  for (int i = 0; i < FORKS; i++) {
    char child_id[32];
    snprintf(child_id, sizeof child_id, "child-%d", i);
    fork_and_check(child_id);
  }
  atomic_store(&stop_hammering, 1);
  for (int i = 0; i < 2; i++) CHECK(pthread_join(hammers[i], NULL) == 0);

  /* The parent carries on: every queued task runs once, here, then the forker forks from the worker. */
  atomic_store(&release_gate, 1);
  char *status = NULL;
  CHECK(sft_wait_task("forker", 60000, &status) == SFT_OK);
  CHECK(status != NULL && strstr(status, "\"status\":\"COMPLETED\"") != NULL);
  sft_string_free(status);
  for (int i = 0; i < QUEUED; i++) CHECK(atomic_load(&queued_runs[i]) == 1);
  /* Behind everything else in the queue: once it ran, every earlier task ran or was cancelled. */
  CHECK(sft_submit_task(task_queued_elsewhere, NULL, NULL, "last", NULL) == SFT_OK);
  CHECK(sft_wait_task("last", 60000, NULL) == SFT_OK);
  CHECK(atomic_load(&user_data_frees) == QUEUED + atomic_load(&hammer_accepted));
  CHECK(atomic_load(&wrong_process_runs) == 0);
  CHECK(sft_get_task_status("child-0") == NULL);

  printf("fork_during_activity: %d passed, %d failed\n", atomic_load(&passed), atomic_load(&failed));
  return atomic_load(&failed) == 0 ? 0 : 1;
}
