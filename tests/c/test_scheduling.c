/* Priorities, cooperative yield and deadlines through the C API.
 *
 * Runs the cross-language table tests/cases/scheduling.json (its "about" says
 * what each step does) on the memory store, and again in a child process on
 * the SQLite store, then the C-only checks: a task function that yields is
 * called again with the same user data, which is freed once, after its last
 * run; refused options leave the user data with the caller; named and runner
 * tasks take options too. It prints one line per case: "case <name>: ok". */
#include "check.h"

#include <cjson/cJSON.h>
#include <sys/wait.h>
#include <time.h>

#ifndef SCHEDULING_CASES_PATH
#define SCHEDULING_CASES_PATH "tests/cases/scheduling.json"
#endif

static const int64_t PATIENCE_MS = 60000; /* never reached in a passing run */

static double now_epoch(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

static char *read_file(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file) return NULL;
  fseek(file, 0, SEEK_END);
  long size = ftell(file);
  fseek(file, 0, SEEK_SET);
  char *text = malloc((size_t)size + 1);
  size_t got = fread(text, 1, (size_t)size, file);
  text[got] = '\0';
  fclose(file);
  return text;
}

/* "SFT_ERR_INVALID_ARGUMENT" -> "invalid_argument", "SFT_OK" -> "ok", in `out`. */
static const char *result_word(SftResult result, char *out, size_t size) {
  const char *name = sft_result_name((int32_t)result);
  const char *word = strncmp(name, "SFT_ERR_", 8) == 0 ? name + 8 : name + 4;
  size_t i = 0;
  for (; word[i] && i + 1 < size; i++) out[i] = (char)(word[i] >= 'A' && word[i] <= 'Z' ? word[i] - 'A' + 'a' : word[i]);
  out[i] = '\0';
  return out;
}

static const char *text_of(const cJSON *step, const char *key) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(step, key);
  return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* The options text of a submit step: options_json as it is, or the options object with
 * deadline_in turned into a deadline from now; NULL when the step has neither. */
static char *options_text(const cJSON *step) {
  const char *raw = text_of(step, "options_json");
  if (raw) return strdup(raw);
  const cJSON *options = cJSON_GetObjectItemCaseSensitive(step, "options");
  if (!options) return NULL;
  cJSON *copy = cJSON_Duplicate(options, 1);
  cJSON *relative = cJSON_DetachItemFromObjectCaseSensitive(copy, "deadline_in");
  if (relative) {
    cJSON_AddNumberToObject(copy, "deadline", now_epoch() + relative->valuedouble);
    cJSON_Delete(relative);
  }
  char *text = cJSON_PrintUnformatted(copy);
  cJSON_Delete(copy);
  return text;
}

/* Whether every field of `expect` has that JSON value in the status text. */
static int fields_match(const char *status, const cJSON *expect, int report) {
  cJSON *parsed = cJSON_Parse(status);
  int ok = parsed != NULL;
  for (const cJSON *field = expect ? expect->child : NULL; ok && field; field = field->next) {
    const cJSON *actual = cJSON_GetObjectItemCaseSensitive(parsed, field->string);
    if (!actual || !cJSON_Compare(field, actual, 1)) {
      ok = 0;
      if (report) {
        char *want = cJSON_PrintUnformatted(field);
        fprintf(stderr, "  \"%s\" is not %s in %s\n", field->string, want, status);
        free(want);
      }
    }
  }
  cJSON_Delete(parsed);
  return ok;
}

static uint64_t revision_of(const char *status) {
  cJSON *parsed = cJSON_Parse(status);
  const cJSON *revision = cJSON_GetObjectItemCaseSensitive(parsed, "revision");
  uint64_t value = cJSON_IsNumber(revision) ? (uint64_t)revision->valuedouble : 0;
  cJSON_Delete(parsed);
  return value;
}

/* Long-polls the task until the fields of `expect` hold (a change wakes it, not a timer). */
static int wait_for_fields(const char *task_id, const cJSON *expect) {
  char *status = sft_get_task_status(task_id);
  while (status && !fields_match(status, expect, 0)) {
    char *next = NULL;
    SftResult result = sft_wait_task_change(task_id, revision_of(status), PATIENCE_MS, &next);
    sft_string_free(status);
    status = result == SFT_OK ? next : NULL;
  }
  int ok = status != NULL;
  if (!ok) fprintf(stderr, "  %s never reached the expected fields\n", task_id);
  sft_string_free(status);
  return ok;
}

/* Runs one step; returns whether it went as the table says. */
static int run_step(const cJSON *step) {
  char word[64];
  const char *id;
  const cJSON *expect = cJSON_GetObjectItemCaseSensitive(step, "expect");
  const char *expect_error = text_of(step, "expect_error");
  if ((id = text_of(step, "submit"))) {
    char *options = options_text(step);
    SftResult result = sft_submit_external_task_with_options(id, options, NULL);
    free(options);
    const char *wanted = expect_error ? expect_error : "ok";
    int ok = strcmp(result_word(result, word, sizeof word), wanted) == 0;
    if (!ok) fprintf(stderr, "  submit %s: %s, expected %s\n", id, word, wanted);
    const char *says = text_of(step, "message_contains");
    return ok && (!says || last_error_has(says));
  }
  if ((id = text_of(step, "started"))) {
    cJSON *processing = cJSON_CreateObject();
    cJSON_AddStringToObject(processing, "status", "PROCESSING");
    int ok = wait_for_fields(id, processing);
    cJSON_Delete(processing);
    return ok;
  }
  if ((id = text_of(step, "finish"))) return sft_finish_task(id, 0, NULL) == SFT_OK;
  if ((id = text_of(step, "yield"))) {
    SftResult result = sft_yield_task(id);
    if (expect_error) return strcmp(result_word(result, word, sizeof word), expect_error) == 0;
    if (result == SFT_OK) result = sft_finish_task(id, 0, NULL);
    if (result != SFT_OK) {
      char *message = sft_last_error_message();
      fprintf(stderr, "  yield %s: %s: %s\n", id, sft_result_name((int32_t)result), message ? message : "");
      sft_string_free(message);
    }
    return result == SFT_OK;
  }
  if ((id = text_of(step, "cancel"))) return sft_cancel_task(id) == SFT_OK;
  if ((id = text_of(step, "status"))) {
    char *status = sft_get_task_status(id);
    int ok = status && fields_match(status, expect, 1);
    sft_string_free(status);
    return ok;
  }
  if ((id = text_of(step, "until"))) return wait_for_fields(id, expect);
  if ((id = text_of(step, "finished"))) {
    char *status = NULL;
    int ok = sft_wait_task(id, PATIENCE_MS, &status) == SFT_OK && fields_match(status, expect, 1);
    sft_string_free(status);
    return ok;
  }
  if ((id = text_of(step, "yield_requested"))) {
    bool requested = !cJSON_IsTrue(expect);
    return sft_is_yield_requested(id, &requested) == SFT_OK && requested == (bool)cJSON_IsTrue(expect);
  }
  if ((id = text_of(step, "missing"))) {
    char *status = sft_get_task_status(id);
    sft_string_free(status);
    return status == NULL;
  }
  const cJSON *stats = cJSON_GetObjectItemCaseSensitive(step, "stats");
  if (stats) {
    char *text = sft_get_stats();
    int ok = text && fields_match(text, stats, 1);
    sft_string_free(text);
    return ok;
  }
  fprintf(stderr, "  unknown step\n");
  return 0;
}

static int is_for_c(const cJSON *test_case) {
  const cJSON *language;
  cJSON_ArrayForEach(language, cJSON_GetObjectItemCaseSensitive(test_case, "languages")) {
    if (cJSON_IsString(language) && strcmp(language->valuestring, "c") == 0) return 1;
  }
  return 0;
}

static void run_table(const char *store) {
  char *text = read_file(SCHEDULING_CASES_PATH);
  CHECK(text != NULL);
  cJSON *table = cJSON_Parse(text);
  free(text);
  CHECK(table != NULL);
  const cJSON *test_case;
  cJSON_ArrayForEach(test_case, cJSON_GetObjectItemCaseSensitive(table, "cases")) {
    if (!is_for_c(test_case)) continue;
    const char *name = text_of(test_case, "name");
    int ok = 1, index = 0;
    const cJSON *step;
    cJSON_ArrayForEach(step, cJSON_GetObjectItemCaseSensitive(test_case, "steps")) {
      if (!run_step(step)) {
        char *shown = cJSON_PrintUnformatted(step);
        fprintf(stderr, "  %s: step %d failed: %s\n", name, index, shown);
        free(shown);
        ok = 0;
        break;
      }
      index++;
    }
    CHECK(ok);
    printf("case %s (%s): %s\n", name, store, ok ? "ok" : "FAILED");
  }
  cJSON_Delete(table);
}

/* ----- C task functions that yield -------------------------------------------------- */

typedef struct {
  Usage usage;
  Gate urgent_queued;
  atomic_int sentences; /* spoken so far, across runs */
  atomic_int yielded;
} Book;

/* Speaks six sentences, one segment each; after the first it waits until the urgent task is
 * queued, and between sentences it yields when asked, to resume after what it spoke. */
static int32_t task_book(const char *task_id, void *user_data) {
  Book *book = user_data;
  atomic_fetch_add(&book->usage.runs, 1);
  while (atomic_load(&book->sentences) < 6) {
    bool asked = false;
    if (sft_is_yield_requested(task_id, &asked) != SFT_OK) return 1;
    if (asked) {
      atomic_fetch_add(&book->yielded, 1);
      return sft_yield_task(task_id) == SFT_OK ? 7 /* ignored: a yield */ : 1;
    }
    int sentence = atomic_fetch_add(&book->sentences, 1);
    char segment_id[16], url[32];
    snprintf(segment_id, sizeof segment_id, "%d", sentence);
    snprintf(url, sizeof url, "/a/%d.wav", sentence);
    if (sft_add_completed_segment(task_id, segment_id, url, 0.2) != SFT_OK) return 1;
    if (sentence == 0) gate_pass(&book->urgent_queued);
  }
  return 0;
}

static void test_a_task_function_yields_and_runs_again_with_its_user_data(void) {
  static Book book = {.urgent_queued = GATE_INIT};
  static Usage urgent;
  CHECK_RESULT(sft_submit_task_with_options(task_book, &book, free_count, "c-book", "{\"priority\": 1}", NULL), SFT_OK);
  CHECK(wait_started("c-book"));
  while (atomic_load(&book.urgent_queued.entered) == 0) usleep(1000);
  CHECK_RESULT(sft_submit_task_with_options(task_count_run, &urgent, free_count, "c-urgent", "{\"priority\": 2}", NULL), SFT_OK);
  gate_open(&book.urgent_queued);
  CHECK(finishes_as("c-book", "COMPLETED"));
  CHECK(finishes_as("c-urgent", "COMPLETED"));
  CHECK(atomic_load(&book.usage.runs) == 2 && atomic_load(&book.yielded) == 1);
  CHECK(atomic_load(&book.usage.frees) == 1); /* once, after its last run */
  CHECK(atomic_load(&urgent.runs) == 1 && atomic_load(&urgent.frees) == 1);
  CHECK(status_has("c-book", "\"attempt\":1,\"checkpoint\":null,\"priority\":1,\"deadline\":null,\"yield_requested\":false,\"yields\":1}"));
  char *status = sft_get_task_status("c-book");
  cJSON *parsed = cJSON_Parse(status);
  CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(parsed, "completed_segments")) == 6);
  cJSON_Delete(parsed);
  sft_string_free(status);
}

static void test_refused_options_leave_the_user_data_with_the_caller(void) {
  static Usage kept;
  CHECK_RESULT(sft_submit_task_with_options(task_count_run, &kept, free_count, "c-refused", "{\"priority\": \"high\"}", NULL),
               SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("\"priority\""));
  CHECK(sft_get_task_status("c-refused") == NULL);
  char *id = (char *)1;
  CHECK_RESULT(sft_submit_task_with_options(task_count_run, &kept, free_count, NULL, "not json", &id), SFT_ERR_INVALID_ARGUMENT);
  CHECK(id == NULL);
  CHECK(atomic_load(&kept.frees) == 0 && atomic_load(&kept.runs) == 0);
  bool requested = true;
  CHECK_RESULT(sft_is_yield_requested("c-refused", &requested), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_is_yield_requested(NULL, &requested), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_is_yield_requested("c-book", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_yield_task(NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_yield_task("c-book"), SFT_ERR_INVALID_STATE); /* finished */
  /* The plain submit functions mean priority 0 and no deadline. */
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "c-plain", NULL), SFT_OK);
  CHECK(finishes_as("c-plain", "COMPLETED"));
  CHECK(status_has("c-plain", "\"priority\":0,\"deadline\":null"));
}

static void test_named_and_runner_tasks_take_options_and_yield(void) {
  uint64_t runner = 0;
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  CHECK_RESULT(sft_runner_add_handler(runner, "c-speak"), SFT_OK);
  CHECK_RESULT(sft_submit_named_with_options("c-speak", "{\"text\": \"hi\"}", "c-named", "{\"priority\": -4, \"deadline\": null}", NULL),
               SFT_OK);
  CHECK_RESULT(sft_submit_named_with_options("c-speak", NULL, "c-named-bad", "{\"deadline\": \"soon\"}", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("\"deadline\""));
  char *assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, PATIENCE_MS, &assignment), SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"c-named\"") && json_has(assignment, "\"attempt\":1,\"checkpoint\":null,\"yields\":0}"));
  sft_string_free(assignment);
  CHECK(status_has("c-named", "\"priority\":-4"));
  CHECK_RESULT(sft_set_checkpoint("c-named", "{\"sentence\": 3}"), SFT_OK);
  CHECK_RESULT(sft_yield_task("c-named"), SFT_OK);
  CHECK_RESULT(sft_runner_finish(runner, "c-named", 0, NULL), SFT_OK);
  assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, PATIENCE_MS, &assignment), SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"c-named\"") && json_has(assignment, "\"attempt\":1,\"checkpoint\":{\"sentence\":3},\"yields\":1}"));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_finish(runner, "c-named", 0, NULL), SFT_OK);
  CHECK(finishes_as("c-named", "COMPLETED"));

  CHECK_RESULT(sft_submit_runner_task_with_options(runner, "c-runner", "{\"priority\": 3}", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_runner_task_with_options(runner, "c-runner-bad", "{\"priority\": 1, \"extra\": 2}", NULL),
               SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("\"extra\""));
  assignment = NULL;
  CHECK_RESULT(sft_runner_next(runner, PATIENCE_MS, &assignment), SFT_OK);
  CHECK(json_has(assignment, "\"task_id\":\"c-runner\""));
  sft_string_free(assignment);
  CHECK_RESULT(sft_runner_finish(runner, "c-runner", 0, NULL), SFT_OK);
  CHECK(finishes_as("c-runner", "COMPLETED"));
  CHECK(status_has("c-runner", "\"priority\":3"));
  CHECK_RESULT(sft_runner_close(runner, PATIENCE_MS), SFT_OK);
}

/* The table again on the SQLite store, in a child that configures it before its first call. */
static int table_on_sqlite(void) {
  char dir[] = "/tmp/sft-scheduling-XXXXXX";
  if (mkdtemp(dir) == NULL) return 0;
  pid_t pid = fork();
  if (pid == 0) {
    char config[256];
    snprintf(config, sizeof config, "{\"store\": \"sqlite:%s/tasks.db\"}", dir);
    CHECK_RESULT(sft_configure(config), SFT_OK);
    run_table("sqlite");
    CHECK_RESULT(sft_shutdown(PATIENCE_MS), SFT_OK);
    fflush(stdout);
    _exit(atomic_load(&checks_failed) ? 1 : 0);
  }
  int wait_status = 0;
  int ok = pid > 0 && waitpid(pid, &wait_status, 0) == pid && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
  char command[128];
  snprintf(command, sizeof command, "rm -rf %s", dir);
  if (system(command) != 0) fprintf(stderr, "  could not remove %s\n", dir);
  return ok;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  /* Forked before this process's manager exists, so the child starts with none. */
  CHECK(table_on_sqlite());
  run_table("memory");
  test_a_task_function_yields_and_runs_again_with_its_user_data();
  test_refused_options_leave_the_user_data_with_the_caller();
  test_named_and_runner_tasks_take_options_and_yield();
  CHECK_RESULT(sft_shutdown(PATIENCE_MS), SFT_OK);
  return finish_checks("test_scheduling");
}
