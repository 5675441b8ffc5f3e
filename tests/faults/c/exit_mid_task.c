/* A process that leaves while the worker is inside a task, with tasks queued
 * behind it and another thread inside the library, must exit cleanly: no
 * crash, no hang, exit code 0. Modes (argv[1]):
 *   return   main returns (exit handlers run) while the task runs
 *   exit     exit(0) from another thread while the task runs
 *   in-task  the task function itself calls exit(0) on the worker thread */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storyflow_tasks.h"

static atomic_int started;
static const char *mode = "return";

static void free_nothing(void *user_data) { (void)user_data; }

/* Never returns on its own: the process ends under it. */
static int32_t task_forever(const char *task_id, void *user_data) {
  (void)user_data;
  sft_update_task_progress(task_id, 1, 2, NULL);
  atomic_store(&started, 1);
  if (strcmp(mode, "in-task") == 0) {
    fflush(stdout);
    exit(0);
  }
  for (;;) pause();
}

static int32_t task_never_reached(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  return 0;
}

static void *poll_forever(void *arg) {
  (void)arg;
  for (;;) {
    char *status = NULL;
    sft_wait_task_change("forever", 0, 5, &status);
    sft_string_free(status);
    char *list = NULL;
    if (sft_list_tasks(NULL, &list) == SFT_OK) sft_string_free(list);
  }
  return NULL;
}

static void *exit_soon(void *arg) {
  (void)arg;
  struct timespec pause_for = {0, 20 * 1000000L};
  nanosleep(&pause_for, NULL);
  printf("exit_mid_task %s: leaving\n", mode);
  fflush(stdout);
  exit(0);
}

int main(int argc, char **argv) {
  if (argc > 1) mode = argv[1];
  if (sft_submit_task(task_forever, NULL, free_nothing, "forever", NULL) != SFT_OK) return 2;
  for (int i = 0; i < 8; i++) {
    if (sft_submit_task(task_never_reached, NULL, free_nothing, NULL, NULL) != SFT_OK) return 3;
  }
  while (!atomic_load(&started)) usleep(1000);
  pthread_t poller;
  if (pthread_create(&poller, NULL, poll_forever, NULL) != 0) return 4;
  if (strcmp(mode, "exit") == 0) {
    pthread_t leaver;
    if (pthread_create(&leaver, NULL, exit_soon, NULL) != 0) return 5;
    for (;;) pause();
  }
  usleep(20000);
  printf("exit_mid_task %s: leaving\n", mode);
  return 0;
}
