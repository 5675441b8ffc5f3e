/* The `store` and `max_attempts` settings: read from STORYFLOW_TASKS_STORE when no
 * configuration names a store, validated (unknown kinds refused clearly), shown by
 * sft_get_config; a store that cannot be opened (a missing directory, a corrupt file)
 * is refused at first use with the store's message and leaves the configuration
 * changeable, so that a corrected one works; then, on that store, a cancelled pending
 * function task frees its user data once, and runners run their tasks and named tasks. */
#include "check.h"

#include <fcntl.h>
#include <stdlib.h>

static int config_has(const char *fragment) {
  char *config = sft_get_config();
  int found = json_has(config, fragment);
  if (!found) fprintf(stderr, "  config lacks %s: %s\n", fragment, config ? config : "NULL");
  sft_string_free(config);
  return found;
}

int main(void) {
  /* Before the first call: the process-wide manager reads it when it is created. */
  setenv("STORYFLOW_TASKS_STORE", "sqlite:/nonexistent-dir/tasks.db", 1);
  CHECK(config_has("\"store\":\"sqlite:/nonexistent-dir/tasks.db\",\"max_attempts\":3"));

  CHECK_RESULT(sft_configure("{\"store\": \"postgres://db\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("unknown store"));
  CHECK_RESULT(sft_configure("{\"store\": \"redis://127.0.0.1:6379\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("Redis"));
  CHECK_RESULT(sft_configure("{\"store\": \"sqlite:\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_configure("{\"max_attempts\": 0}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("max_attempts"));
  CHECK_RESULT(sft_configure("{\"max_attempts\": 2}"), SFT_OK);
  CHECK(config_has("\"max_attempts\":2"));

  /* Refused at first use, by every kind of first use, and nothing is fixed. */
  CHECK_RESULT(sft_submit_named("h", NULL, "cfg-1", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("cannot open the task store at /nonexistent-dir/tasks.db: the directory /nonexistent-dir does not exist"));
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "cfg-2", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(sft_get_task_status("cfg-2") == NULL);
  CHECK(last_error_has("does not exist"));
  char *listing = NULL;
  CHECK_RESULT(sft_list_tasks(NULL, &listing), SFT_ERR_INVALID_ARGUMENT);
  CHECK(listing == NULL);

  /* A corrupt file: its own message, and still nothing fixed. */
  char dir[] = "/tmp/sft-store-config-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char corrupt[128], good[128], config[256];
  snprintf(corrupt, sizeof corrupt, "%s/corrupt.db", dir);
  snprintf(good, sizeof good, "%s/tasks.db", dir);
  int fd = open(corrupt, O_CREAT | O_WRONLY | O_TRUNC, 0600);
  CHECK(fd >= 0);
  char garbage[8192];
  for (size_t i = 0; i < sizeof garbage; i++) garbage[i] = (char)(i * 7 + 3);
  CHECK(write(fd, garbage, sizeof garbage) == (ssize_t)sizeof garbage);
  close(fd);
  snprintf(config, sizeof config, "{\"store\": \"sqlite:%s\"}", corrupt);
  CHECK_RESULT(sft_configure(config), SFT_OK);
  CHECK_RESULT(sft_register_handler("h", NULL, NULL), SFT_ERR_INVALID_ARGUMENT); /* NULL handler: refused before any open */
  CHECK(sft_get_task_status("cfg-3") == NULL);
  CHECK(last_error_has("corrupt"));
  CHECK_RESULT(sft_submit_named("h", NULL, "cfg-3", NULL), SFT_ERR_INVALID_STATE);
  CHECK(last_error_has("corrupt"));

  /* Corrected: the SQLite store opens, runs a function task, and is fixed from then on. */
  snprintf(config, sizeof config, "{\"store\": \"sqlite:%s\"}", good);
  CHECK_RESULT(sft_configure(config), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "cfg-2", NULL), SFT_OK);
  CHECK(finishes_as("cfg-2", "COMPLETED"));
  CHECK(status_has("cfg-2", "\"handler\":null,\"attempt\":1,\"checkpoint\":null"));
  CHECK(config_has("\"max_attempts\":2"));
  CHECK_RESULT(sft_configure("{\"store\": \"memory\"}"), SFT_ERR_INVALID_STATE);

  /* A pending function task cancelled: its user data is freed once, and it never runs. */
  static Gate gate = GATE_INIT;
  static Usage cancelled;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "cfg-gate", NULL), SFT_OK);
  CHECK(wait_started("cfg-gate"));
  CHECK_RESULT(sft_submit_task(task_count_run, &cancelled, free_count, "cfg-cancelled", NULL), SFT_OK);
  CHECK_RESULT(sft_cancel_task("cfg-cancelled"), SFT_OK);
  CHECK(atomic_load(&cancelled.frees) == 1);
  CHECK(status_has("cfg-cancelled", "\"status\":\"CANCELLED\""));
  gate_open(&gate);
  CHECK(finishes_as("cfg-gate", "COMPLETED"));
  CHECK(atomic_load(&cancelled.runs) == 0 && atomic_load(&cancelled.frees) == 1);

  /* A runner's task and a named task served by a runner, on the SQLite store. */
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_runner_add_handler(runner, "narrate"), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task(runner, "cfg-runner", NULL), SFT_OK);
  char *assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, 60000, &assignment), SFT_OK);
  CHECK(json_has(assignment, "{\"task_id\":\"cfg-runner\",\"run\":true,\"handler\":null"));
  sft_string_free(assignment);
  char *own = NULL;
  CHECK_RESULT(sft_wait_task("cfg-runner", 0, &own), SFT_ERR_INVALID_STATE); /* inside it: would deadlock */
  CHECK(last_error_has("would deadlock"));
  CHECK_RESULT(sft_runner_finish(runner, "cfg-runner", 0, NULL), SFT_OK);
  CHECK(finishes_as("cfg-runner", "COMPLETED"));
  CHECK_RESULT(sft_submit_named("narrate", "{\"chapter\":1}", "cfg-named", NULL), SFT_OK);
  assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, 60000, &assignment), SFT_OK);
  CHECK(json_has(assignment, "{\"task_id\":\"cfg-named\",\"run\":true,\"handler\":\"narrate\",\"payload\":{\"chapter\":1},\"attempt\":1,\"checkpoint\":null,\"yields\":0}"));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_finish(runner, "cfg-named", 1, "\"no voice\""), SFT_OK);
  CHECK(finishes_as("cfg-named", "FAILED"));
  CHECK(status_has("cfg-named", "\"error\":\"no voice\""));
  CHECK_RESULT(sft_runner_finish(runner, "cfg-named", 0, NULL), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_runner_close(runner, 1000), SFT_OK);
  CHECK_RESULT(sft_shutdown(60000), SFT_OK);
  char command[256];
  snprintf(command, sizeof command, "rm -rf '%s'", dir);
  CHECK(system(command) == 0);
  return finish_checks("test_store_config");
}
