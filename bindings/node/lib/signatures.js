'use strict';
// The C functions this package calls, written once, as include/storyflow_tasks.h
// declares them (test/signatures.test.js checks them against the header).
// Each engine derives its own declarations from this table with `engineTypes`.

/** The prototypes, with the header's types; parameter names are for reading only. */
const PROTOTYPES = [
  'const char *sft_version(void)',
  'const char *sft_result_name(int32_t result)',
  'char *sft_last_error_message(void)',
  'void sft_string_free(char *s)',
  'SftResult sft_runner_register(uint64_t *out_runner)',
  'SftResult sft_submit_runner_task_with_options(uint64_t runner, const char *task_id, const char *options_json, char **out_task_id)',
  'SftResult sft_runner_next(uint64_t runner, int64_t timeout_ms, char **out_assignment_json)',
  'SftResult sft_runner_finish(uint64_t runner, const char *task_id, int32_t code, const char *message_json)',
  'SftResult sft_runner_close(uint64_t runner, int64_t timeout_ms)',
  'SftResult sft_runner_add_handler(uint64_t runner, const char *name)',
  'SftResult sft_submit_named_with_options(const char *handler, const char *payload_json, const char *task_id, const char *options_json, char **out_task_id)',
  'SftResult sft_set_checkpoint(const char *task_id, const char *checkpoint_json)',
  'char *sft_get_task_status(const char *task_id)',
  'SftResult sft_update_task_progress(const char *task_id, uint64_t current, uint64_t total, const char *extra_json)',
  'SftResult sft_add_completed_segment_from_json(const char *task_id, const char *segment_json)',
  'SftResult sft_add_error_from_json(const char *task_id, const char *error_json)',
  'SftResult sft_cancel_task(const char *task_id)',
  'SftResult sft_is_cancel_requested(const char *task_id, bool *out_requested)',
  'SftResult sft_is_yield_requested(const char *task_id, bool *out_requested)',
  'SftResult sft_yield_task(const char *task_id)',
  'SftResult sft_wait_events(uint64_t after_seq, uint32_t max_events, int64_t timeout_ms, char **out_events_json)',
  'uint64_t sft_last_event_seq(void)',
  'SftResult sft_list_tasks(const char *status_filter, char **out_json)',
  'char *sft_get_stats(void)',
  'SftResult sft_configure(const char *config_json)',
  'char *sft_get_config(void)',
  'SftResult sft_shutdown(int64_t timeout_ms)',
];

/**
 * Each C type of the table in each engine's terms. A `char *` the library
 * returns is owned by the caller, so both engines take it as a raw pointer
 * (decoded, then handed back to sft_string_free), never as an auto-decoded string;
 * `T *` and `T **` parameters are out parameters.
 */
const TYPES = Object.freeze({
  void: { koffi: 'void', ffi: 'void' },
  bool: { koffi: 'bool', ffi: 'bool' },
  int32_t: { koffi: 'int32_t', ffi: 'int32' },
  SftResult: { koffi: 'int32_t', ffi: 'int32' },
  uint32_t: { koffi: 'uint32_t', ffi: 'uint32' },
  int64_t: { koffi: 'int64_t', ffi: 'int64' },
  uint64_t: { koffi: 'uint64_t', ffi: 'uint64' },
  double: { koffi: 'double', ffi: 'double' },
  'const char *': { koffi: 'const char *', ffi: 'string' },
  'char *': { koffi: 'void *', ffi: 'void*' },
  'char **': { koffi: '_Out_ void **', ffi: 'void**' },
  'bool *': { koffi: '_Out_ bool *', ffi: 'bool*' },
  'uint64_t *': { koffi: '_Out_ uint64_t *', ffi: 'uint64*' },
});

/** `char  * *x` -> `char **`: one spelling per type. */
function normaliseType(text) {
  return text.replace(/\s+/g, ' ').replace(/\s*\*/g, ' *').replace(/\* \*/g, '**').trim();
}

/**
 * Splits one C prototype into its name, return type and parameter types.
 * @param {string} prototype e.g. 'SftResult sft_cancel_task(const char *task_id)'
 * @returns {{ name: string, returns: string, params: string[] }}
 */
function parsePrototype(prototype) {
  const match = /^\s*([\w\s*]+?)\s*\b(\w+)\s*\(([^)]*)\)\s*;?\s*$/s.exec(prototype);
  if (match === null) throw new Error(`not a C prototype: ${prototype}`);
  const [, returns, name, paramText] = match;
  const params = paramText.trim() === 'void' || paramText.trim() === '' ? [] : paramText.split(',').map((param) => {
    // Drop the parameter name: the last identifier, unless the whole text is a type.
    const withoutName = param.trim().replace(/\b\w+$/, '');
    return normaliseType(/\w/.test(withoutName) ? withoutName : param);
  });
  return { name, returns: normaliseType(returns), params };
}

/** The table, parsed. */
const FUNCTIONS = PROTOTYPES.map(parsePrototype);

/**
 * A C type as engine `engine` ('koffi' or 'ffi') names it.
 * @param {string} type a type of the table
 * @param {'koffi' | 'ffi'} engine
 */
function engineType(type, engine) {
  const known = TYPES[type];
  if (known === undefined) throw new Error(`storyflow-tasks: no engine type for the C type ${JSON.stringify(type)}`);
  return known[engine];
}

module.exports = { PROTOTYPES, FUNCTIONS, TYPES, parsePrototype, normaliseType, engineType };
