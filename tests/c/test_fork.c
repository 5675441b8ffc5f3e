/* fork(): the child gets a usable, empty manager whose first submit starts a
 * worker there; the parent's tasks never run in the child; the parent's
 * registry and worker carry on untouched. */
#include "check.h"

#include <signal.h>
#include <sys/wait.h>

static atomic_int parent_task_runs;

static int32_t task_count_parent_run(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  atomic_fetch_add(&parent_task_runs, 1);
  return 0;
}

/* Runs in the child; returns 0 or the first failing step. */
static int child_checks(void) {
  if (sft_get_task_status("fork-gate") != NULL) return 10;    /* the parent's registry is not the child's */
  if (sft_get_task_status("fork-queued") != NULL) return 11;
  if (sft_submit_task(task_count_run, &unobserved_usage, NULL, "fork-child", NULL) != SFT_OK) return 12;
  char *status = NULL;
  if (sft_wait_task("fork-child", 60000, &status) != SFT_OK) return 13; /* a worker started in the child */
  int completed = json_has(status, "\"status\":\"COMPLETED\"");
  sft_string_free(status);
  if (!completed) return 14;
  /* FIFO: had the parent's queued task been inherited, it would have run before the child's. */
  if (atomic_load(&parent_task_runs) != 0) return 15;
  char *stats = sft_get_stats();
  int fresh = json_has(stats, "\"submitted_total\":1");
  sft_string_free(stats);
  return fresh ? 0 : 16;
}

int main(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "fork-gate", NULL), SFT_OK);
  CHECK(wait_started("fork-gate"));
  CHECK_RESULT(sft_submit_task(task_count_parent_run, NULL, NULL, "fork-queued", NULL), SFT_OK);

  int result_pipe[2];
  CHECK(pipe(result_pipe) == 0);
  pid_t child = fork();
  if (child == 0) {
    unsigned char step = (unsigned char)child_checks();
    ssize_t written = write(result_pipe[1], &step, 1);
    /* No exit-time leak check in the child: what the parent's threads owned
     * (they do not exist here) would look lost. Its result went up the pipe. */
    raise(written == 1 ? SIGKILL : SIGABRT);
  }
  CHECK(child > 0);
  close(result_pipe[1]);
  unsigned char step = 255;
  CHECK(read(result_pipe[0], &step, 1) == 1);
  close(result_pipe[0]);
  int wait_status = 0;
  CHECK(waitpid(child, &wait_status, 0) == child);
  CHECK(WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL);
  if (step != 0) fprintf(stderr, "child failed at step %d\n", step);
  CHECK(step == 0);

  /* The parent is untouched: its queued task is still pending behind the gate, then runs. */
  CHECK(status_has("fork-queued", "\"status\":\"PENDING\""));
  gate_open(&gate);
  CHECK(finishes_as("fork-queued", "COMPLETED"));
  CHECK(atomic_load(&parent_task_runs) == 1);
  CHECK(finishes_as("fork-gate", "COMPLETED"));
  CHECK(sft_get_task_status("fork-child") == NULL);
  return finish_checks("test_fork");
}
