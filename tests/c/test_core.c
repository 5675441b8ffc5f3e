/* The core C API: every function, every result code it can give,
 * user-data ownership, and bad input that must change nothing. */
#include "check.h"

#include <math.h>

static int32_t task_fail_with_code(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  return 3;
}

static int32_t task_fail_with_text(const char *task_id, void *user_data) {
  (void)user_data;
  sft_set_task_error(task_id, "engine exploded: \"voice\" missing");
  return 1;
}

static void test_version_and_result_names(void) {
  const char *version = sft_version();
  CHECK(version != NULL && strchr(version, '.') != NULL);
  const char *names[] = {"SFT_OK", "SFT_ERR_NOT_FOUND", "SFT_ERR_INVALID_ARGUMENT", "SFT_ERR_DUPLICATE_ID",
                         "SFT_ERR_QUEUE_FULL", "SFT_ERR_SHUT_DOWN", "SFT_ERR_INVALID_STATE", "SFT_ERR_TIMEOUT",
                         "SFT_ERR_INTERNAL"};
  for (int code = 0; code <= SFT_ERR_INTERNAL; code++) CHECK(strcmp(sft_result_name(code), names[code]) == 0);
  CHECK(strcmp(sft_result_name(99), "SFT_UNKNOWN_RESULT") == 0);
  CHECK(strcmp(sft_result_name(-1), "SFT_UNKNOWN_RESULT") == 0);
  sft_string_free(NULL);
}

static void test_submit_runs_and_frees_once(void) {
  Usage usage = {0, 0};
  char *task_id = NULL;
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "core-1", &task_id), SFT_OK);
  CHECK(task_id != NULL && strcmp(task_id, "core-1") == 0);
  CHECK(finishes_as("core-1", "COMPLETED"));
  CHECK(atomic_load(&usage.runs) == 1 && atomic_load(&usage.frees) == 1);
  CHECK(status_has("core-1", "\"progress\":{},\"completed_segments\":[],\"errors\":[]"));
  CHECK(status_has("core-1", "\"error\":null"));
  CHECK(status_has("core-1", "\"queue_position\":null"));
  sft_string_free(task_id);

  /* No id: a new UUIDv4; no out pointer: still fine. */
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, NULL, &task_id), SFT_OK);
  CHECK(task_id != NULL && strlen(task_id) == 36 && task_id[8] == '-' && task_id[14] == '4');
  CHECK(finishes_as(task_id, "COMPLETED"));
  sft_string_free(task_id);
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, NULL, NULL), SFT_OK);
}

static void test_refused_submissions_keep_user_data(void) {
  Usage usage = {0, 0};
  char *task_id = (char *)"garbage";
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "core-1", &task_id), SFT_ERR_DUPLICATE_ID);
  CHECK(task_id == NULL);
  CHECK(last_error_has("core-1"));
  CHECK_RESULT(sft_submit_task(NULL, &usage, free_count, "core-null-fn", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("task_fn"));
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "bad\xff\xfe", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("UTF-8"));
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, "", NULL), SFT_ERR_INVALID_ARGUMENT);
  char long_id[300];
  memset(long_id, 'x', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  CHECK_RESULT(sft_submit_task(task_count_run, &usage, free_count, long_id, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("limit"));
  CHECK(sft_get_task_status(long_id) == NULL);
  CHECK(atomic_load(&usage.runs) == 0 && atomic_load(&usage.frees) == 0);
}

static void test_failures(void) {
  CHECK_RESULT(sft_submit_task(task_fail_with_code, NULL, NULL, "core-code", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_fail_with_text, NULL, NULL, "core-text", NULL), SFT_OK);
  CHECK(finishes_as("core-code", "FAILED"));
  CHECK(status_has("core-code", "\"error\":\"task function returned 3\""));
  CHECK(finishes_as("core-text", "FAILED"));
  CHECK(status_has("core-text", "\"error\":\"engine exploded: \\\"voice\\\" missing\""));
  CHECK_RESULT(sft_set_task_error("core-text", "too late"), SFT_ERR_INVALID_STATE);
  CHECK_RESULT(sft_set_task_error("core-missing", "x"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_set_task_error("core-text", NULL), SFT_ERR_INVALID_ARGUMENT);
}

static void test_progress(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "core-progress", NULL), SFT_OK);
  CHECK(wait_started("core-progress")); /* so that only the calls below change it */
  CHECK_RESULT(sft_update_task_progress("core-progress", 1, 3, NULL), SFT_OK);
  CHECK(status_has("core-progress", "\"progress\":{\"current\":1,\"total\":3,\"percentage\":33}"));
  CHECK_RESULT(sft_update_task_progress("core-progress", 5, 0, NULL), SFT_OK);
  CHECK(status_has("core-progress", "\"percentage\":0"));
  CHECK_RESULT(sft_update_task_progress("core-progress", 9, 4, NULL), SFT_OK);
  CHECK(status_has("core-progress", "\"percentage\":100"));
  const char *extra = "{\"current_segment_id\":7,\"label\":\"ch \\\"1\\\"\",\"ok\":true,\"ratio\":0.5,\"nested\":{\"a\":[1,null]}}";
  CHECK_RESULT(sft_update_task_progress("core-progress", 2, 5, extra), SFT_OK);
  CHECK(status_has("core-progress",
                   "\"progress\":{\"current\":2,\"total\":5,\"percentage\":40,\"current_segment_id\":7,"
                   "\"label\":\"ch \\\"1\\\"\",\"ok\":true,\"ratio\":0.5,\"nested\":{\"a\":[1,null]}}"));

  char *before = sft_get_task_status("core-progress");
  const char *bad_extras[] = {"{", "[1]", "7", "\"text\"", "null", "{\"percentage\": 3}", "{\"total\": 1}", "{\"a\":1}x",
                              "{\"bad\xff\":1}"};
  for (size_t i = 0; i < sizeof bad_extras / sizeof *bad_extras; i++)
    CHECK_RESULT(sft_update_task_progress("core-progress", 1, 2, bad_extras[i]), SFT_ERR_INVALID_ARGUMENT);
  size_t huge_size = 70 * 1024;
  char *huge = malloc(huge_size);
  memset(huge, ' ', huge_size);
  memcpy(huge, "{\"k\":1", 6);
  huge[huge_size - 2] = '}';
  huge[huge_size - 1] = '\0';
  CHECK_RESULT(sft_update_task_progress("core-progress", 1, 2, huge), SFT_ERR_INVALID_ARGUMENT);
  free(huge);
  CHECK_RESULT(sft_update_task_progress(NULL, 1, 2, NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_update_task_progress("core-missing", 1, 2, NULL), SFT_ERR_NOT_FOUND);
  char *after = sft_get_task_status("core-progress");
  CHECK(before && after && strcmp(before, after) == 0);
  sft_string_free(before);
  sft_string_free(after);
  gate_open(&gate);
  CHECK(finishes_as("core-progress", "COMPLETED"));
}

static void test_segments_and_errors(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "core-seg", NULL), SFT_OK);
  CHECK(wait_started("core-seg")); /* so that only the calls below change it */
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", "/media/audio/1.wav", 2.5), SFT_OK);
  CHECK_RESULT(sft_add_completed_segment_from_json("core-seg", "{\"segment_id\":7,\"audio_url\":\"/media/audio/7.wav\",\"duration\":1.25}"), SFT_OK);
  CHECK_RESULT(sft_add_completed_segment_from_json("core-seg", "{\"segment_id\":\"8\",\"audio_url\":\"/media/audio/8.wav\",\"duration\":0}"), SFT_OK);
  CHECK_RESULT(sft_add_error("core-seg", "3", "voice not found"), SFT_OK);
  CHECK_RESULT(sft_add_error_from_json("core-seg", "{\"segment_id\":4,\"error\":\"engine \\\"timeout\\\"\\n\"}"), SFT_OK);
  CHECK(status_has("core-seg",
                   "\"completed_segments\":[{\"segment_id\":\"1\",\"audio_url\":\"/media/audio/1.wav\",\"duration\":2.5},"
                   "{\"segment_id\":7,\"audio_url\":\"/media/audio/7.wav\",\"duration\":1.25},"
                   "{\"segment_id\":\"8\",\"audio_url\":\"/media/audio/8.wav\",\"duration\":0.0}]"));
  CHECK(status_has("core-seg",
                   "\"errors\":[{\"segment_id\":\"3\",\"error\":\"voice not found\"},"
                   "{\"segment_id\":4,\"error\":\"engine \\\"timeout\\\"\\n\"}]"));

  char *before = sft_get_task_status("core-seg");
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", "/a.wav", -1.0), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", "/a.wav", NAN), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", "/a.wav", INFINITY), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("duration"));
  CHECK_RESULT(sft_add_completed_segment("core-seg", NULL, "/a.wav", 1.0), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", NULL, 1.0), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", "/\xc3\x28.wav", 1.0), SFT_ERR_INVALID_ARGUMENT);
  const char *bad_ids[] = {"7.5", "[1]", "null", "{}", "\"\"", "1e2", "true"};
  char record[128];
  for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
    snprintf(record, sizeof record, "{\"segment_id\":%s,\"audio_url\":\"/a.wav\",\"duration\":1.0}", bad_ids[i]);
    CHECK_RESULT(sft_add_completed_segment_from_json("core-seg", record), SFT_ERR_INVALID_ARGUMENT);
    snprintf(record, sizeof record, "{\"segment_id\":%s,\"error\":\"x\"}", bad_ids[i]);
    CHECK_RESULT(sft_add_error_from_json("core-seg", record), SFT_ERR_INVALID_ARGUMENT);
  }
  const char *bad_records[] = {"", "{", "[1]", "7", "{\"segment_id\":1}", "{\"segment_id\":1,\"error\":\"x\",\"more\":1}",
                               "{\"segment_id\":1,\"error\":7}", "{\"segment_id\":1,\"error\":\"\\ud800\"}", "{\"segment_id\":1,\"error\":\"x\"} 2"};
  for (size_t i = 0; i < sizeof bad_records / sizeof *bad_records; i++) {
    CHECK_RESULT(sft_add_error_from_json("core-seg", bad_records[i]), SFT_ERR_INVALID_ARGUMENT);
    CHECK_RESULT(sft_add_completed_segment_from_json("core-seg", bad_records[i]), SFT_ERR_INVALID_ARGUMENT);
  }
  CHECK_RESULT(sft_add_error_from_json("core-seg", "{\"segment_id\":1,\"error\":\"\\ud800\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("error_json: the string at \"error\" holds a lone surrogate (\\ud800)"));
  CHECK_RESULT(sft_add_completed_segment("core-seg", "", "/a.wav", 1.0), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("segment_id is empty"));
  CHECK_RESULT(sft_add_completed_segment_from_json("core-seg", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_error_from_json(NULL, "{\"segment_id\":1,\"error\":\"x\"}"), SFT_ERR_INVALID_ARGUMENT);
  char *long_url = malloc(9000);
  memset(long_url, 'u', 8999);
  long_url[8999] = '\0';
  CHECK_RESULT(sft_add_completed_segment("core-seg", "1", long_url, 1.0), SFT_ERR_INVALID_ARGUMENT);
  free(long_url);
  char *long_message = malloc(70000);
  memset(long_message, 'm', 69999);
  long_message[69999] = '\0';
  CHECK_RESULT(sft_add_error("core-seg", "1", long_message), SFT_ERR_INVALID_ARGUMENT);
  free(long_message);
  CHECK_RESULT(sft_add_error("core-seg", "1", NULL), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_error(NULL, "1", "x"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_add_completed_segment("core-missing", "1", "/a.wav", 1.0), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_add_completed_segment_from_json("core-missing", "{\"segment_id\":1,\"audio_url\":\"/a.wav\",\"duration\":1}"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_add_error("core-missing", "1", "x"), SFT_ERR_NOT_FOUND);
  CHECK_RESULT(sft_add_error_from_json("core-missing", "{\"segment_id\":1,\"error\":\"x\"}"), SFT_ERR_NOT_FOUND);
  char *after = sft_get_task_status("core-seg");
  CHECK(before && after && strcmp(before, after) == 0);
  sft_string_free(before);
  sft_string_free(after);
  gate_open(&gate);
  CHECK(finishes_as("core-seg", "COMPLETED"));
}

/* A finished task's status is final: every report on it is refused and changes nothing. */
static void test_finished_is_final(void) {
  CHECK_RESULT(sft_submit_task(task_count_run, &unobserved_usage, NULL, "core-final-ok", NULL), SFT_OK);
  CHECK_RESULT(sft_submit_task(task_fail_with_code, NULL, NULL, "core-final-failed", NULL), SFT_OK);
  CHECK(finishes_as("core-final-ok", "COMPLETED"));
  CHECK(finishes_as("core-final-failed", "FAILED"));
  const char *finished[] = {"core-final-ok", "core-final-failed"};
  for (size_t i = 0; i < 2; i++) {
    const char *id = finished[i];
    char *before = sft_get_task_status(id);
    CHECK_RESULT(sft_update_task_progress(id, 1, 2, NULL), SFT_ERR_INVALID_STATE);
    CHECK(last_error_has("its status is final"));
    CHECK_RESULT(sft_update_task_progress(id, 1, 2, "{\"k\":1}"), SFT_ERR_INVALID_STATE);
    CHECK_RESULT(sft_add_completed_segment(id, "1", "/a.wav", 1.0), SFT_ERR_INVALID_STATE);
    CHECK_RESULT(sft_add_completed_segment_from_json(id, "{\"segment_id\":1,\"audio_url\":\"/a.wav\",\"duration\":1}"), SFT_ERR_INVALID_STATE);
    CHECK_RESULT(sft_add_error(id, "1", "x"), SFT_ERR_INVALID_STATE);
    CHECK_RESULT(sft_add_error_from_json(id, "{\"segment_id\":1,\"error\":\"x\"}"), SFT_ERR_INVALID_STATE);
    CHECK_RESULT(sft_set_task_error(id, "x"), SFT_ERR_INVALID_STATE);
    char *after = sft_get_task_status(id);
    CHECK(before && after && strcmp(before, after) == 0);
    sft_string_free(before);
    sft_string_free(after);
  }
}

static void test_numbers_round_trip_exactly(void) {
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, "core-numbers", NULL), SFT_OK);
  CHECK(wait_started("core-numbers"));
  CHECK_RESULT(sft_update_task_progress("core-numbers", 1, 2,
                                        "{\"big\":1000000000000000000000000000000,\"neg\":-9007199254740993,\"f\":2.50,\"e\":1e2}"),
               SFT_OK);
  CHECK(status_has("core-numbers", "\"big\":1000000000000000000000000000000,\"neg\":-9007199254740993,\"f\":2.5,\"e\":100.0}"));
  char *before = sft_get_task_status("core-numbers");
  CHECK_RESULT(sft_update_task_progress("core-numbers", 1, 2, "{\"inf\":1e400}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("not a finite number"));
  CHECK_RESULT(sft_update_task_progress("core-numbers", 1, 2, "{\"nan\":NaN}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK_RESULT(sft_update_task_progress("core-numbers", 1, 2, "{\"s\":\"\\udc00\"}"), SFT_ERR_INVALID_ARGUMENT);
  CHECK(last_error_has("extra_json: the string at \"s\" holds a lone surrogate (\\udc00)"));
  char *after = sft_get_task_status("core-numbers");
  CHECK(before && after && strcmp(before, after) == 0);
  sft_string_free(before);
  sft_string_free(after);
  gate_open(&gate);
  CHECK(finishes_as("core-numbers", "COMPLETED"));
}

static void test_caller_strings_round_trip(void) {
  const char *tricky = "q\"uote \\back\nnl\x01 \xc3\xbcn\xc3\xaf \xf0\x9f\x8e\xa7";
  Gate gate = GATE_INIT;
  CHECK_RESULT(sft_submit_task(task_wait_at_gate, &gate, NULL, tricky, NULL), SFT_OK);
  CHECK(wait_started(tricky));
  CHECK(status_has(tricky, "\"task_id\":\"q\\\"uote \\\\back\\nnl\\u0001 \xc3\xbcn\xc3\xaf \xf0\x9f\x8e\xa7\""));
  CHECK_RESULT(sft_add_completed_segment(tricky, tricky, tricky, 1.0), SFT_OK);
  CHECK(status_has(tricky, "\"audio_url\":\"q\\\"uote \\\\back\\nnl\\u0001"));
  gate_open(&gate);
  CHECK(finishes_as(tricky, "COMPLETED"));
}

static void test_unknown_ids_and_null_reads(void) {
  CHECK(sft_get_task_status("core-missing") == NULL);
  CHECK(last_error_has("core-missing"));
  CHECK(sft_get_task_status(NULL) == NULL);
  CHECK(last_error_has("NULL"));
}

static void *fresh_thread_has_no_error(void *unused) {
  (void)unused;
  char *message = sft_last_error_message();
  CHECK(message == NULL);
  return NULL;
}

static void test_last_error_is_per_thread(void) {
  pthread_t thread;
  pthread_create(&thread, NULL, fresh_thread_has_no_error, NULL);
  pthread_join(thread, NULL);
}

int main(void) {
  test_version_and_result_names();
  test_submit_runs_and_frees_once();
  test_refused_submissions_keep_user_data();
  test_failures();
  test_progress();
  test_segments_and_errors();
  test_finished_is_final();
  test_numbers_round_trip_exactly();
  test_caller_strings_round_trip();
  test_unknown_ids_and_null_reads();
  test_last_error_is_per_thread();
  return finish_checks("test_core");
}
