/* The `store` and `max_attempts` settings: read from STORYFLOW_TASKS_STORE when no
 * configuration names a store, validated (unknown kinds refused clearly), shown by
 * sft_get_config; a store the manager cannot run on yet is refused at first use and
 * leaves the configuration changeable. */
#include "check.h"

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

  /* Refused at first use, and nothing is fixed: a corrected configuration follows. */
  CHECK_RESULT(sft_submit_named("h", NULL, "cfg-1", NULL), SFT_ERR_INVALID_STATE);
  CHECK(last_error_has("sqlite:/nonexistent-dir/tasks.db"));
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "cfg-2", NULL), SFT_ERR_INVALID_STATE);
  CHECK(sft_get_task_status("cfg-2") == NULL);
  CHECK_RESULT(sft_configure("{\"store\": \"memory\"}"), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "cfg-2", NULL), SFT_OK);
  CHECK(finishes_as("cfg-2", "COMPLETED"));
  CHECK(config_has("\"store\":\"memory\",\"max_attempts\":2"));
  CHECK_RESULT(sft_configure("{\"store\": \"sqlite:/tmp/later.db\"}"), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_shutdown(60000), SFT_OK);
  return finish_checks("test_store_config");
}
