/* The SQLite store through the C API, with real processes sharing one file:
 * - named tasks submitted here are run by two worker processes that registered the C
 *   handler; this process sees their status, is woken by a long-poll, and sees the final
 *   state; the handlers themselves check (an O_EXCL marker file) that no two run at once;
 * - SIGKILL of the worker running a named task: the other worker resumes it as attempt 2,
 *   with the segment and checkpoint of attempt 1;
 * - SIGKILL of a process whose function tasks are running and pending: both FAILED,
 *   saying its process exited.
 * The children are forked before this process touches the library; each gets a fresh
 * manager of its own and ends by SIGKILL (no exit-time leak check in a child). */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static char dir[] = "/tmp/sft-sqlite-processes-XXXXXX";
static char db_config[256];
static char marker[256];

/* Ends a child: its result went to the parent through the store (or its exit status). */
static void end_child(int failed_step) {
  if (failed_step != 0) {
    char *why = sft_last_error_message();
    fprintf(stderr, "  child %d, step %d: %s\n", (int)getpid(), failed_step, why ? why : "no message");
    _exit(failed_step);
  }
  raise(SIGKILL);
}

static int enter_alone(void) {
  int fd = open(marker, O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd < 0) return 0;
  close(fd);
  return 1;
}

/* "speak": one segment, after holding the marker for a while. */
static int32_t handle_speak(const char *task_id, const char *payload_json, void *handler_data) {
  (void)payload_json;
  (void)handler_data;
  if (!enter_alone()) {
    sft_set_task_error(task_id, "another task was running at the same time");
    return 99;
  }
  char extra[64];
  snprintf(extra, sizeof extra, "{\"pid\":%d}", (int)getpid());
  sft_update_task_progress(task_id, 0, 1, extra);
  usleep(20000);
  SftResult added = sft_add_completed_segment(task_id, "0", "file:///0.wav", 1.0);
  unlink(marker);
  return added == SFT_OK ? 0 : 98;
}

/* "slow": attempt 1 records a segment and a checkpoint, then hangs until it is killed;
 * a later attempt checks that both were kept, and completes. */
static int32_t handle_slow(const char *task_id, const char *payload_json, void *handler_data) {
  (void)payload_json;
  (void)handler_data;
  if (!enter_alone()) {
    sft_set_task_error(task_id, "another task was running at the same time");
    return 99;
  }
  char *status = sft_get_task_status(task_id);
  int first = json_has(status, "\"attempt\":1,");
  int resumed = json_has(status, "\"completed_segments\":[{\"segment_id\":\"0\"") && json_has(status, "\"checkpoint\":{\"next\":1}");
  sft_string_free(status);
  if (first) {
    char extra[64];
    snprintf(extra, sizeof extra, "{\"pid\":%d}", (int)getpid());
    sft_update_task_progress(task_id, 1, 2, extra);
    sft_add_completed_segment(task_id, "0", "file:///0.wav", 1.0);
    sft_set_checkpoint(task_id, "{\"next\":1}");
    for (;;) pause();
  }
  SftResult added = sft_add_completed_segment(task_id, "1", "file:///1.wav", 1.0);
  SftResult saved = sft_set_checkpoint(task_id, "{\"next\":2}");
  unlink(marker);
  if (!resumed) {
    sft_set_task_error(task_id, "the resumed attempt lost the segment or the checkpoint of the first");
    return 97;
  }
  return added == SFT_OK && saved == SFT_OK ? 0 : 96;
}

/* A worker process: serves both handlers until its control pipe closes. */
static void worker_child(int control, int ready) {
  if (sft_configure(db_config) != SFT_OK) end_child(10);
  if (sft_register_handler("speak", handle_speak, NULL) != SFT_OK) end_child(11);
  if (sft_register_handler("slow", handle_slow, NULL) != SFT_OK) end_child(12);
  char byte = 'R';
  if (write(ready, &byte, 1) != 1) end_child(13);
  while (read(control, &byte, 1) > 0) {
  }
  sft_shutdown(10000);
  end_child(0);
}

static int32_t task_hang(const char *task_id, void *user_data) {
  (void)user_data;
  sft_update_task_progress(task_id, 0, 1, NULL);
  for (;;) pause();
  return 0;
}

/* A process with function tasks of its own: one running (hanging), one pending behind it. */
static void function_child(int control, int ready) {
  char byte = 0;
  if (read(control, &byte, 1) != 1) end_child(20);
  if (sft_configure(db_config) != SFT_OK) end_child(21);
  if (sft_submit_task(task_hang, NULL, NULL, "fn-running", NULL) != SFT_OK) end_child(22);
  if (sft_submit_task(task_count_run, &unobserved_usage, NULL, "fn-pending", NULL) != SFT_OK) end_child(23);
  if (write(ready, &byte, 1) != 1) end_child(24);
  while (read(control, &byte, 1) > 0) {
  }
  end_child(0);
}

typedef struct {
  pid_t pid;
  int control; /* closing it ends the child */
  int ready;   /* the child writes a byte once it is set up */
} Child;

static Child start_child(void (*role)(int control, int ready)) {
  int control[2], ready[2];
  if (pipe(control) != 0 || pipe(ready) != 0) abort();
  pid_t pid = fork();
  if (pid == 0) {
    close(control[1]);
    close(ready[0]);
    role(control[0], ready[1]);
  }
  close(control[0]);
  close(ready[1]);
  return (Child){pid, control[1], ready[0]};
}

static int child_ready(const Child *child) {
  char byte;
  if (read(child->ready, &byte, 1) == 1) return 1;
  int wait_status = 0;
  if (waitpid(child->pid, &wait_status, WNOHANG) == child->pid && WIFEXITED(wait_status))
    fprintf(stderr, "  child %d failed at step %d\n", (int)child->pid, WEXITSTATUS(wait_status));
  return 0;
}

/* Waits until the task's status holds `fragment`, following its revisions. */
static int wait_for_fragment(const char *task_id, const char *fragment, char **out_status) {
  uint64_t revision = 0;
  for (int i = 0; i < 1000; i++) {
    char *status = NULL;
    if (sft_wait_task_change(task_id, revision, 60000, &status) != SFT_OK) return 0;
    if (json_has(status, fragment)) {
      *out_status = status;
      return 1;
    }
    const char *at = strstr(status, "\"revision\":");
    revision = at ? strtoull(at + 11, NULL, 10) : revision;
    int final = !json_has(status, "\"status\":\"PENDING\"") && !json_has(status, "\"status\":\"PROCESSING\"");
    sft_string_free(status);
    if (final) return 0;
  }
  return 0;
}

static pid_t pid_in(const char *status) {
  const char *at = strstr(status, "\"pid\":");
  return at ? (pid_t)atoi(at + 6) : -1;
}

/* SIGKILL of one child (never of a pid that is not one: kill(-1) would reach every process). */
static int kill_child(pid_t pid) {
  return pid > 0 && kill(pid, SIGKILL) == 0;
}

static int killed_by_sigkill(pid_t pid) {
  int wait_status = 0;
  if (pid <= 0) return 0;
  return waitpid(pid, &wait_status, 0) == pid && WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL;
}

int main(void) {
  if (mkdtemp(dir) == NULL) return 2;
  snprintf(db_config, sizeof db_config, "{\"store\": \"sqlite:%s/tasks.db\", \"max_attempts\": 3}", dir);
  snprintf(marker, sizeof marker, "%s/running.marker", dir);
  Child workers[2] = {start_child(worker_child), start_child(worker_child)};
  Child functions = start_child(function_child);
  int ready = child_ready(&workers[0]);
  ready = child_ready(&workers[1]) && ready;
  CHECK(ready);
  if (!ready) {
    kill_child(workers[0].pid);
    kill_child(workers[1].pid);
    kill_child(functions.pid);
    return finish_checks("test_sqlite_processes");
  }

  CHECK_RESULT(sft_configure(db_config), SFT_OK);

  /* Named tasks run by the worker processes; this process follows them. */
  CHECK_RESULT(sft_submit_named("speak", "{\"text\":\"first\"}", "speak-0", NULL), SFT_OK);
  char *status = NULL;
  CHECK_RESULT(sft_wait_task_change("speak-0", 1, 60000, &status), SFT_OK); /* woken by another process */
  CHECK(json_has(status, "\"handler\":\"speak\""));
  CHECK(!json_has(status, "\"revision\":1,"));
  sft_string_free(status);
  CHECK(finishes_as("speak-0", "COMPLETED"));
  CHECK(status_has("speak-0", "\"completed_segments\":[{\"segment_id\":\"0\",\"audio_url\":\"file:///0.wav\",\"duration\":1.0}]"));
  CHECK(status_has("speak-0", "\"handler\":\"speak\",\"attempt\":1,\"checkpoint\":null"));

  enum { SPOKEN = 12 };
  char ids[SPOKEN][32];
  for (int i = 0; i < SPOKEN; i++) {
    snprintf(ids[i], sizeof ids[i], "speak-%d", i + 1);
    CHECK_RESULT(sft_submit_named("speak", NULL, ids[i], NULL), SFT_OK);
  }
  int by_first = 0;
  for (int i = 0; i < SPOKEN; i++) {
    CHECK(finishes_as(ids[i], "COMPLETED")); /* a handler that found another running fails its task */
    char *spoken = sft_get_task_status(ids[i]);
    pid_t ran_in = spoken ? pid_in(spoken) : -1;
    CHECK(ran_in == workers[0].pid || ran_in == workers[1].pid);
    by_first += ran_in == workers[0].pid;
    sft_string_free(spoken);
  }
  printf("  %d named tasks: %d run by worker process 1, %d by worker process 2, never two at once\n", SPOKEN, by_first, SPOKEN - by_first);
  char *stats = sft_get_stats();
  CHECK(json_has(stats, "\"COMPLETED\":13"));
  sft_string_free(stats);

  /* SIGKILL of the worker in the middle of a named task: the other one resumes it. */
  CHECK_RESULT(sft_submit_named("slow", NULL, "slow-0", NULL), SFT_OK);
  status = NULL;
  CHECK(wait_for_fragment("slow-0", "\"checkpoint\":{\"next\":1}", &status));
  sft_string_free(status);
  /* Progress is committed a little later than the checkpoint (it is coalesced). */
  status = NULL;
  CHECK(wait_for_fragment("slow-0", "\"pid\":", &status));
  pid_t victim = status ? pid_in(status) : -1;
  sft_string_free(status);
  int victim_index = victim == workers[0].pid ? 0 : 1;
  CHECK(victim > 0 && victim == workers[victim_index].pid && kill_child(victim));
  CHECK(killed_by_sigkill(victim));
  close(workers[victim_index].control);
  unlink(marker); /* left by the killed handler */
  CHECK(finishes_as("slow-0", "COMPLETED"));
  CHECK(status_has("slow-0", "\"handler\":\"slow\",\"attempt\":2,\"checkpoint\":{\"next\":2}"));
  CHECK(status_has("slow-0", "\"completed_segments\":[{\"segment_id\":\"0\",\"audio_url\":\"file:///0.wav\",\"duration\":1.0},"
                             "{\"segment_id\":\"1\",\"audio_url\":\"file:///1.wav\",\"duration\":1.0}]"));

  /* SIGKILL of a process with function tasks: they cannot run anywhere else. */
  char go = 'G';
  CHECK(write(functions.control, &go, 1) == 1);
  CHECK(child_ready(&functions));
  status = NULL;
  CHECK(wait_for_fragment("fn-running", "\"status\":\"PROCESSING\"", &status));
  sft_string_free(status);
  CHECK(status_has("fn-pending", "\"status\":\"PENDING\""));
  CHECK(kill_child(functions.pid));
  CHECK(killed_by_sigkill(functions.pid));
  close(functions.control);
  CHECK(finishes_as("fn-running", "FAILED"));
  CHECK(status_has("fn-running", "its process exited while it was running"));
  CHECK(finishes_as("fn-pending", "FAILED"));
  CHECK(status_has("fn-pending", "its process exited before it ran"));

  /* The surviving worker ends when its control pipe closes. */
  Child *survivor = &workers[1 - victim_index];
  close(survivor->control);
  CHECK(killed_by_sigkill(survivor->pid));
  CHECK_RESULT(sft_shutdown(60000), SFT_OK);
  close(workers[0].ready);
  close(workers[1].ready);
  close(functions.ready);
  char command[300];
  snprintf(command, sizeof command, "rm -rf '%s'", dir);
  CHECK(system(command) == 0);
  return finish_checks("test_sqlite_processes");
}
