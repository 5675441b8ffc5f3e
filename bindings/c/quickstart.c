/* The README's C quick-start, built by `make test` against the installed
 * library with `pkg-config --cflags --libs storyflow_tasks`. */
#include <stdio.h>
#include <storyflow_tasks.h>

/* Runs on the library's worker thread: narrate, report, return 0 for success. */
static int32_t narrate_chapter(const char *task_id, void *user_data) {
  const char *chapter = user_data;
  for (uint64_t sentence = 1; sentence <= 3; sentence++) {
    bool stop = false;
    if (sft_is_cancel_requested(task_id, &stop) == SFT_OK && stop) return 1;
    char segment_id[32], audio_url[64];
    snprintf(segment_id, sizeof segment_id, "%s-%llu", chapter, (unsigned long long)sentence);
    snprintf(audio_url, sizeof audio_url, "/media/audio/%s.wav", segment_id);
    sft_add_completed_segment(task_id, segment_id, audio_url, 1.5);
    sft_update_task_progress(task_id, sentence, 3, NULL);
  }
  return 0;
}

int main(void) {
  char *task_id = NULL;
  SftResult result = sft_submit_task(narrate_chapter, "chapter-1", NULL, NULL, &task_id);
  if (result != SFT_OK) {
    char *why = sft_last_error_message();
    fprintf(stderr, "submit failed: %s: %s\n", sft_result_name(result), why);
    sft_string_free(why);
    return 1;
  }
  char *status = NULL;
  result = sft_wait_task(task_id, 10000, &status); /* or poll sft_get_task_status */
  printf("%s\n", result == SFT_OK ? status : sft_result_name(result));
  sft_string_free(status);
  sft_string_free(task_id);
  return result == SFT_OK ? 0 : 1;
}
