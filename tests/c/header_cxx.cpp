// The header compiles as C++ and its functions link from C++ code.
#include <cstdio>
#include <cstring>

#include "storyflow_tasks.h"

int main() {
  SftTaskFn task = [](const char *, void *) -> int32_t { return 0; };
  char *task_id = nullptr;
  SftResult result = sft_submit_task(task, nullptr, nullptr, "cxx-task", &task_id);
  char *status = nullptr;
  bool ok = result == SFT_OK && sft_wait_task(task_id, 60000, &status) == SFT_OK &&
            std::strstr(status, "\"status\":\"COMPLETED\"") != nullptr;
  sft_string_free(status);
  sft_string_free(task_id);
  std::printf("header_cxx: %d passed, %d failed\n", ok ? 1 : 0, ok ? 0 : 1);
  return ok ? 0 : 1;
}
