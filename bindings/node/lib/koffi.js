'use strict';
// The koffi engine: declares the C functions with koffi (3.x, pointers are BigInt)
// and gives lib/native.js the few pointer helpers that differ between engines.

const koffi = require('koffi');

/**
 * Loads the library with koffi.
 * @param {string} libraryPath the shared library file
 * @returns {import('./native').EngineHandle}
 */
function open(libraryPath) {
  const lib = koffi.load(libraryPath);
  // Returned strings are declared `void *` so that the pointer reaches JS
  // untouched and can be handed back to sft_string_free after decoding.
  const declarations = [
    'const char *sft_version(void)',
    'const char *sft_result_name(int32_t result)',
    'void *sft_last_error_message(void)',
    'void sft_string_free(void *s)',
    'int32_t sft_submit_external_task(const char *task_id, _Out_ void **out_task_id)',
    'void *sft_get_task_status(const char *task_id)',
    'int32_t sft_update_task_progress(const char *task_id, uint64_t current, uint64_t total, const char *extra_json)',
    'int32_t sft_add_completed_segment_json(const char *task_id, const char *segment_id_json, const char *audio_url, double duration)',
    'int32_t sft_add_error_json(const char *task_id, const char *segment_id_json, const char *error_message)',
    'int32_t sft_finish_task(const char *task_id, int32_t code, const char *message)',
    'int32_t sft_cancel_task(const char *task_id)',
    'int32_t sft_is_cancel_requested(const char *task_id, _Out_ bool *out_requested)',
    'int32_t sft_wait_events(uint64_t after_seq, uint32_t max_events, int64_t timeout_ms, _Out_ void **out_events_json)',
    'uint64_t sft_last_event_seq(void)',
    'int32_t sft_list_tasks(const char *status_filter, _Out_ void **out_json)',
    'void *sft_get_stats(void)',
    'int32_t sft_configure(const char *config_json)',
    'void *sft_get_config(void)',
    'int32_t sft_shutdown(int64_t timeout_ms)',
  ];
  const fns = {};
  for (const declaration of declarations) {
    const fn = lib.func(declaration);
    fns[fn.info.name] = fn;
  }
  return {
    fns,
    newOutPointer: () => [null],
    readOutPointer: (out) => out[0],
    newOutBool: () => [false],
    readOutBool: (out) => out[0] === true,
    isNull: (pointer) => pointer === null || pointer === 0n,
    readString: (pointer) => koffi.decode.string(pointer),
    asUint64: (value) => value,
  };
}

module.exports = { name: 'koffi', open };
