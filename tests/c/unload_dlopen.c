/* The library stays loaded once loaded (-z nodelete): a dlclose() while the
 * worker runs a task must not pull its code away. Not linked against the
 * library: it is loaded with dlopen from STORYFLOW_TASKS_LIB. */
#define _DEFAULT_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int32_t (*TaskFn)(const char *, void *);
typedef int32_t (*SubmitFn)(TaskFn, void *, void (*)(void *), const char *, char **);
typedef int32_t (*WaitFn)(const char *, int64_t, char **);
typedef void (*FreeFn)(char *);

static int32_t sleep_a_little(const char *task_id, void *user_data) {
  (void)task_id;
  (void)user_data;
  usleep(200 * 1000); /* the worker is inside library code when dlclose runs */
  return 0;
}

int main(void) {
  const char *path = getenv("STORYFLOW_TASKS_LIB");
  int passed = 0, failed = 0;
#define EXPECT(cond) ((cond) ? passed++ : (failed++, fprintf(stderr, "check failed: %s\n", #cond)))
  void *library = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
  EXPECT(library != NULL);
  if (library == NULL) return 1;
  SubmitFn submit = (SubmitFn)(uintptr_t)dlsym(library, "sft_submit_task");
  WaitFn wait_task = (WaitFn)(uintptr_t)dlsym(library, "sft_wait_task");
  FreeFn string_free = (FreeFn)(uintptr_t)dlsym(library, "sft_string_free");
  EXPECT(submit && wait_task && string_free);
  EXPECT(submit(sleep_a_little, NULL, NULL, "unload-1", NULL) == 0);
  EXPECT(dlclose(library) == 0);
  /* Still mapped: a no-load open finds it, and its functions still work. */
  void *again = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  EXPECT(again != NULL);
  char *status = NULL;
  EXPECT(wait_task("unload-1", 60000, &status) == 0 && strstr(status, "\"status\":\"COMPLETED\"") != NULL);
  string_free(status);
  printf("unload_dlopen: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
