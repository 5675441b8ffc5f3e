/* The cross-language edge-case table, tests/cases/edge_cases.json, run in C.
 *
 * Each case sets up a task (a runner task held by this thread), applies one
 * call, and compares the result code, the error message and the exact bytes of
 * the status value at the case's path. It prints one line per case:
 * "case <name>: <result> <value>".
 *
 * The table is parsed with cJSON, which holds numbers as doubles and strings
 * as C strings; so no value that matters passes through either: big integers
 * are tagged {"$int": "digits"} and inserted verbatim, and every \u0000 escape
 * of the file is swapped for a marker before parsing and back when a string
 * is written out as JSON. Expected values are compared as text. */
#include "check.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>

#ifndef EDGE_CASES_PATH
#define EDGE_CASES_PATH "tests/cases/edge_cases.json"
#endif

static const int64_t PATIENCE_MS = 60000; /* never reached in a passing run */
static const char NUL_MARKER[] = "\\u0001NUL\\u0001"; /* JSON text standing for \u0000 */
static uint64_t runner;

/* ----- a growable string ---------------------------------------------------- */

typedef struct {
  char *text;
  size_t len, cap;
} Buf;

static void buf_add(Buf *buf, const char *text, size_t len) {
  if (buf->len + len + 1 > buf->cap) {
    buf->cap = (buf->len + len + 1) * 2;
    buf->text = realloc(buf->text, buf->cap);
  }
  memcpy(buf->text + buf->len, text, len);
  buf->len += len;
  buf->text[buf->len] = '\0';
}

static void buf_puts(Buf *buf, const char *text) { buf_add(buf, text, strlen(text)); }

/* Replaces every `from` in `text` with `to`, in a new string. */
static char *replace_all(const char *text, const char *from, const char *to) {
  Buf out = {0};
  buf_puts(&out, "");
  size_t from_len = strlen(from);
  for (const char *at; (at = strstr(text, from)) != NULL; text = at + from_len) {
    buf_add(&out, text, (size_t)(at - text));
    buf_puts(&out, to);
  }
  buf_puts(&out, text);
  return out.text;
}

/* ----- the case's values as JSON text for the C API ------------------------------ */

static cJSON *tag(const cJSON *item, const char *name) {
  return cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, name) : NULL;
}

/* A string tagged or plain, as a C string (NULL if it is none); for ids and texts. */
static char *plain_text(const cJSON *item) {
  const cJSON *repeat = tag(item, "$repeat");
  if (repeat) {
    const char *text = cJSON_GetObjectItemCaseSensitive(repeat, "text")->valuestring;
    int times = cJSON_GetObjectItemCaseSensitive(repeat, "times")->valueint;
    Buf out = {0};
    buf_puts(&out, "");
    for (int i = 0; i < times; i++) buf_puts(&out, text);
    return out.text;
  }
  const cJSON *text = tag(item, "$text");
  if (text) item = text;
  return cJSON_IsString(item) ? strdup(item->valuestring) : NULL;
}

/* Writes `item` as JSON text, decoding the table's tags. */
static void write_json(Buf *out, const cJSON *item) {
  const cJSON *tagged;
  if ((tagged = tag(item, "$int")) || (tagged = tag(item, "$raw_json"))) {
    buf_puts(out, tagged->valuestring);
  } else if ((tagged = tag(item, "$float"))) {
    const char *name = tagged->valuestring;
    /* What Python's json.dumps writes for them: not JSON, refused by the core. */
    buf_puts(out, strcmp(name, "nan") == 0 ? "NaN" : strcmp(name, "inf") == 0 ? "Infinity" : "-Infinity");
  } else if ((tagged = tag(item, "$lone_surrogate"))) {
    buf_puts(out, "\"\\u");
    buf_puts(out, tagged->valuestring);
    buf_puts(out, "\"");
  } else if (tag(item, "$text") || tag(item, "$repeat")) {
    char *text = plain_text(item);
    cJSON *string = cJSON_CreateString(text);
    char *printed = cJSON_PrintUnformatted(string);
    buf_puts(out, printed);
    cJSON_free(printed);
    cJSON_Delete(string);
    free(text);
  } else if (cJSON_IsNumber(item)) {
    char number[64];
    double value = item->valuedouble;
    if (value == floor(value) && fabs(value) < 9007199254740992.0) {
      snprintf(number, sizeof number, "%.0f", value);
    } else { /* the shortest text that reads back as the same double */
      for (int digits = 15; digits <= 17; digits++) {
        snprintf(number, sizeof number, "%.*g", digits, value);
        if (strtod(number, NULL) == value) break;
      }
    }
    buf_puts(out, number);
  } else if (cJSON_IsObject(item)) {
    buf_puts(out, "{");
    const cJSON *child;
    int first = 1;
    cJSON_ArrayForEach(child, item) {
      if (!first) buf_puts(out, ",");
      first = 0;
      cJSON *key = cJSON_CreateString(child->string);
      char *printed = cJSON_PrintUnformatted(key);
      buf_puts(out, printed);
      cJSON_free(printed);
      cJSON_Delete(key);
      buf_puts(out, ":");
      write_json(out, child);
    }
    buf_puts(out, "}");
  } else if (cJSON_IsArray(item)) {
    buf_puts(out, "[");
    const cJSON *child;
    int first = 1;
    cJSON_ArrayForEach(child, item) {
      if (!first) buf_puts(out, ",");
      first = 0;
      write_json(out, child);
    }
    buf_puts(out, "]");
  } else {
    char *printed = cJSON_PrintUnformatted(item);
    buf_puts(out, printed);
    cJSON_free(printed);
  }
}

/* The JSON text of `item`, with the NUL marker turned back into \u0000. */
static char *json_text(const cJSON *item) {
  Buf out = {0};
  buf_puts(&out, "");
  write_json(&out, item);
  char *text = replace_all(out.text, NUL_MARKER, "\\u0000");
  free(out.text);
  return text;
}

static uint64_t u64_arg(const cJSON *item) {
  const cJSON *digits = tag(item, "$int");
  if (digits) return strtoull(digits->valuestring, NULL, 10);
  return (uint64_t)item->valuedouble;
}

/* ----- the status value at a path, as the library wrote it ------------------------ */

/* Skips one JSON value of the library's compact output; returns the byte after it. */
static const char *skip_value(const char *p) {
  if (*p == '"') {
    for (p++; *p != '"'; p++)
      if (*p == '\\') p++;
    return p + 1;
  }
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p++;
    while (*p != close) {
      p = skip_value(p);
      if (*p == ':' || *p == ',') p++;
    }
    return p + 1;
  }
  while (*p && *p != ',' && *p != '}' && *p != ']' && *p != ':') p++;
  return p;
}

/* The exact text at `path` inside `json` (a new string), or NULL. */
static char *value_at(const char *json, const cJSON *path) {
  const char *p = json;
  const cJSON *step;
  cJSON_ArrayForEach(step, path) {
    if (cJSON_IsString(step)) {
      if (*p != '{') return NULL;
      char *wanted = json_text(step);
      p++;
      int found = 0;
      while (*p != '}') {
        const char *key_end = skip_value(p);
        int same = (size_t)(key_end - p) == strlen(wanted) && strncmp(p, wanted, strlen(wanted)) == 0;
        p = key_end + 1; /* past ':' */
        if (same) {
          found = 1;
          break;
        }
        p = skip_value(p);
        if (*p == ',') p++;
      }
      free(wanted);
      if (!found) return NULL;
    } else {
      if (*p != '[') return NULL;
      p++;
      for (int i = 0; i < step->valueint; i++) {
        if (*p == ']') return NULL;
        p = skip_value(p);
        if (*p == ',') p++;
      }
      if (*p == ']') return NULL;
    }
  }
  const char *end = skip_value(p);
  char *value = malloc((size_t)(end - p) + 1);
  memcpy(value, p, (size_t)(end - p));
  value[end - p] = '\0';
  return value;
}

/* ----- setting up a task in a state ------------------------------------------------ */

/* Takes the next assignment and checks that it is `task_id` to run. */
static int take_to_run(const char *task_id) {
  char *assignment = NULL;
  SftResult result = sft_runner_next(runner, PATIENCE_MS, &assignment);
  cJSON *parsed = cJSON_Parse(assignment ? assignment : "null");
  const cJSON *id = cJSON_GetObjectItemCaseSensitive(parsed, "task_id");
  int ok = result == SFT_OK && cJSON_IsString(id) && strcmp(id->valuestring, task_id) == 0 &&
           cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(parsed, "run"));
  if (!ok) fprintf(stderr, "  expected to run %s, got %s: %s\n", task_id, sft_result_name(result), assignment);
  cJSON_Delete(parsed);
  sft_string_free(assignment);
  return ok;
}

/* Finishes whatever this runner still holds or was told about, so the next case starts afresh. */
static void drain(void) {
  for (;;) {
    char *assignment = NULL;
    if (sft_runner_next(runner, 0, &assignment) != SFT_OK) return;
    cJSON *parsed = cJSON_Parse(assignment);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(parsed, "task_id");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(parsed, "run"))) sft_runner_finish(runner, id->valuestring, 0, NULL);
    cJSON_Delete(parsed);
    sft_string_free(assignment);
  }
}

static int set_up(const char *state, const char *task_id, char *holder, size_t holder_size) {
  holder[0] = '\0';
  if (strcmp(state, "unknown") == 0) return 1;
  if (strcmp(state, "pending") == 0) {
    snprintf(holder, holder_size, "%s-holder", task_id);
    CHECK_RESULT(sft_submit_runner_task(runner, holder, NULL), SFT_OK);
    if (!take_to_run(holder)) return 0;
    CHECK_RESULT(sft_submit_runner_task(runner, task_id, NULL), SFT_OK);
    return 1;
  }
  CHECK_RESULT(sft_submit_runner_task(runner, task_id, NULL), SFT_OK);
  if (!take_to_run(task_id)) return 0;
  if (strcmp(state, "completed") == 0) CHECK_RESULT(sft_runner_finish(runner, task_id, 0, NULL), SFT_OK);
  if (strcmp(state, "failed") == 0) CHECK_RESULT(sft_runner_finish(runner, task_id, 1, "\"boom\""), SFT_OK);
  if (strcmp(state, "cancelled") == 0) {
    CHECK_RESULT(sft_cancel_task(task_id), SFT_OK);
    CHECK_RESULT(sft_runner_finish(runner, task_id, 0, NULL), SFT_OK);
  }
  return 1;
}

static void tear_down(const char *task_id, const char *holder) {
  char *status = sft_get_task_status(task_id);
  if (json_has(status, "\"status\":\"PENDING\"")) sft_cancel_task(task_id);
  if (json_has(status, "\"status\":\"PROCESSING\"")) sft_runner_finish(runner, task_id, 0, NULL);
  sft_string_free(status);
  if (holder[0]) sft_runner_finish(runner, holder, 0, NULL);
  drain();
}

/* ----- one case --------------------------------------------------------------------- */

static SftResult apply(const char *op, const char *task_id, const cJSON *args) {
  if (strcmp(op, "submit") == 0) {
    char *id = plain_text(cJSON_GetObjectItemCaseSensitive(args, "task_id"));
    SftResult result = sft_submit_runner_task(runner, id, NULL);
    free(id);
    return result;
  }
  if (strcmp(op, "get_status") == 0) {
    char *status = sft_get_task_status(task_id);
    SftResult result = status ? SFT_OK : SFT_ERR_NOT_FOUND;
    sft_string_free(status);
    return result;
  }
  Buf record = {0};
  buf_puts(&record, "");
  SftResult result = SFT_ERR_INTERNAL;
  if (strcmp(op, "update_progress") == 0) {
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(args, "extra");
    char *extra_json = cJSON_IsNull(extra) || extra == NULL ? NULL : json_text(extra);
    result = sft_update_task_progress(task_id, u64_arg(cJSON_GetObjectItemCaseSensitive(args, "current")),
                                      u64_arg(cJSON_GetObjectItemCaseSensitive(args, "total")), extra_json);
    free(extra_json);
  } else if (strcmp(op, "add_completed_segment") == 0 || strcmp(op, "add_error") == 0) {
    int segment = strcmp(op, "add_completed_segment") == 0;
    const char *keys[2][3] = {{"segment_id", "message", NULL}, {"segment_id", "audio_url", "duration"}};
    const char *wire[2][3] = {{"segment_id", "error", NULL}, {"segment_id", "audio_url", "duration"}};
    buf_puts(&record, "{");
    for (int i = 0; i < 3 && keys[segment][i]; i++) {
      char *value = json_text(cJSON_GetObjectItemCaseSensitive(args, keys[segment][i]));
      if (i) buf_puts(&record, ",");
      buf_puts(&record, "\"");
      buf_puts(&record, wire[segment][i]);
      buf_puts(&record, "\":");
      buf_puts(&record, value);
      free(value);
    }
    buf_puts(&record, "}");
    result = segment ? sft_add_completed_segment_from_json(task_id, record.text) : sft_add_error_from_json(task_id, record.text);
  } else if (strcmp(op, "fail") == 0) {
    char *message = json_text(cJSON_GetObjectItemCaseSensitive(args, "message"));
    result = sft_runner_finish(runner, task_id, 1, message);
    free(message);
  }
  free(record.text);
  return result;
}

static const char *result_word(SftResult result) {
  switch (result) {
    case SFT_OK: return "ok";
    case SFT_ERR_NOT_FOUND: return "not_found";
    case SFT_ERR_INVALID_ARGUMENT: return "invalid_argument";
    case SFT_ERR_DUPLICATE_ID: return "duplicate_id";
    case SFT_ERR_INVALID_STATE: return "invalid_state";
    default: return sft_result_name(result);
  }
}

static void run_case(const cJSON *c) {
  const char *name = cJSON_GetObjectItemCaseSensitive(c, "name")->valuestring;
  const char *state = cJSON_GetObjectItemCaseSensitive(c, "task")->valuestring;
  const char *op = cJSON_GetObjectItemCaseSensitive(c, "op")->valuestring;
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(c, "args");
  const cJSON *expect = cJSON_GetObjectItemCaseSensitive(c, "expect");
  char *task_id = plain_text(cJSON_GetObjectItemCaseSensitive(c, "task_id"));
  char holder[512];
  int failed_before = atomic_load(&checks_failed);
  if (!set_up(state, task_id, holder, sizeof holder)) {
    CHECK(!"the case's task could be set up");
    free(task_id);
    return;
  }
  char *before = sft_get_task_status(task_id);
  SftResult result = apply(op, task_id, args);
  char *message = result == SFT_OK ? NULL : sft_last_error_message();
  char *after = sft_get_task_status(task_id);

  const char *expected = cJSON_GetObjectItemCaseSensitive(expect, "result")->valuestring;
  const cJSON *c_result = cJSON_GetObjectItemCaseSensitive(expect, "c_result");
  if (cJSON_IsString(c_result)) expected = c_result->valuestring;
  int result_ok = strcmp(result_word(result), expected) == 0;
  if (!result_ok) fprintf(stderr, "  %s: got %s (%s), expected %s\n", name, result_word(result), message ? message : "", expected);
  CHECK(result_ok);
  const cJSON *contains = cJSON_GetObjectItemCaseSensitive(expect, "message_contains");
  if (cJSON_IsString(contains)) {
    int found = message && strstr(message, contains->valuestring);
    if (!found) fprintf(stderr, "  %s: message \"%s\" lacks \"%s\"\n", name, message ? message : "", contains->valuestring);
    CHECK(found);
  }
  if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(expect, "unchanged"))) {
    int same = (before == NULL && after == NULL) || (before && after && strcmp(before, after) == 0);
    if (!same) fprintf(stderr, "  %s: the status changed:\n    %s\n    %s\n", name, before, after);
    CHECK(same);
  }
  char *value = NULL;
  const cJSON *path = cJSON_GetObjectItemCaseSensitive(expect, "path");
  if (cJSON_IsArray(path)) {
    value = after ? value_at(after, path) : NULL;
    const cJSON *wire = cJSON_GetObjectItemCaseSensitive(expect, "wire");
    const cJSON *ends_with = cJSON_GetObjectItemCaseSensitive(expect, "wire_ends_with");
    const cJSON *max_bytes = cJSON_GetObjectItemCaseSensitive(expect, "wire_max_bytes");
    if (cJSON_IsString(wire)) {
      int same = value && strcmp(value, wire->valuestring) == 0;
      if (!same) fprintf(stderr, "  %s: at the path: %s\n    expected %s\n", name, value ? value : "nothing", wire->valuestring);
      CHECK(same);
    }
    if (cJSON_IsString(ends_with)) {
      size_t len = value ? strlen(value) : 0, tail = strlen(ends_with->valuestring);
      CHECK(value && len >= tail && strcmp(value + len - tail, ends_with->valuestring) == 0);
    }
    if (cJSON_IsNumber(max_bytes)) CHECK(value && strlen(value) <= (size_t)max_bytes->valueint);
  }
  int shown = value && strlen(value) > 120;
  printf("case %s: %s %s%s%s\n", name, result_word(result), shown ? "…" : "", value ? value + (shown ? strlen(value) - 60 : 0) : "-",
         atomic_load(&checks_failed) == failed_before ? "" : "  <- MISMATCH");
  free(value);
  sft_string_free(before);
  sft_string_free(after);
  sft_string_free(message);
  tear_down(task_id, holder);
  free(task_id);
}

static char *read_table(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file) {
    fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
    return NULL;
  }
  Buf text = {0};
  char chunk[8192];
  size_t got;
  buf_puts(&text, "");
  while ((got = fread(chunk, 1, sizeof chunk, file)) > 0) buf_add(&text, chunk, got);
  fclose(file);
  /* cJSON ends strings at NUL: every \u0000 escape becomes the marker. Escapes
   * are read pairwise, so an escaped backslash followed by "u0000" stays text. */
  Buf marked = {0};
  buf_puts(&marked, "");
  for (const char *p = text.text; *p; p++) {
    if (p[0] == '\\' && strncmp(p + 1, "u0000", 5) == 0) {
      buf_puts(&marked, NUL_MARKER);
      p += 5;
    } else if (p[0] == '\\') {
      buf_add(&marked, p, 2);
      p++;
    } else {
      buf_add(&marked, p, 1);
    }
  }
  free(text.text);
  return marked.text;
}

int main(int argc, char **argv) {
  char *text = read_table(argc > 1 ? argv[1] : EDGE_CASES_PATH);
  cJSON *table = text ? cJSON_Parse(text) : NULL;
  free(text);
  CHECK(table != NULL);
  if (!table) return finish_checks("test_edge_cases");
  CHECK_RESULT(sft_runner_register(&runner), SFT_OK);
  const cJSON *c;
  int ran = 0;
  cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(table, "cases")) {
    const cJSON *language;
    int for_c = 0;
    cJSON_ArrayForEach(language, cJSON_GetObjectItemCaseSensitive(c, "languages")) {
      for_c |= strcmp(language->valuestring, "c") == 0;
    }
    if (!for_c) continue;
    run_case(c);
    ran++;
  }
  CHECK(ran > 40);
  CHECK_RESULT(sft_runner_close(runner, 0), SFT_OK);
  cJSON_Delete(table);
  return finish_checks("test_edge_cases");
}
