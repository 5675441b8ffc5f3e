'use strict';
// The ffi-napi engine, through the maintained fork @2060.io/ffi-napi (upstream
// ffi-napi 4.0.3 does not compile on current Node) and its ref-napi types.

const ffi = require('@2060.io/ffi-napi');
const ref = require('@2060.io/ref-napi');

/**
 * Loads the library with ffi-napi.
 * @param {string} libraryPath the shared library file
 * @returns {import('./native').EngineHandle}
 */
function open(libraryPath) {
  const pointerOut = ref.refType('pointer');
  const boolOut = ref.refType('bool');
  // Returned strings are declared 'pointer' (not 'string') so that the pointer
  // can be handed back to sft_string_free after decoding.
  const fns = ffi.Library(libraryPath, {
    sft_version: ['string', []],
    sft_result_name: ['string', ['int32']],
    sft_last_error_message: ['pointer', []],
    sft_string_free: ['void', ['pointer']],
    sft_submit_external_task: ['int32', ['string', pointerOut]],
    sft_get_task_status: ['pointer', ['string']],
    sft_update_task_progress: ['int32', ['string', 'uint64', 'uint64', 'string']],
    sft_add_completed_segment_json: ['int32', ['string', 'string', 'string', 'double']],
    sft_add_error_json: ['int32', ['string', 'string', 'string']],
    sft_finish_task: ['int32', ['string', 'int32', 'string']],
    sft_cancel_task: ['int32', ['string']],
    sft_is_cancel_requested: ['int32', ['string', boolOut]],
    sft_wait_events: ['int32', ['uint64', 'uint32', 'int64', pointerOut]],
    sft_last_event_seq: ['uint64', []],
    sft_list_tasks: ['int32', ['string', pointerOut]],
    sft_get_stats: ['pointer', []],
    sft_configure: ['int32', ['string']],
    sft_get_config: ['pointer', []],
    sft_shutdown: ['int32', ['int64']],
  });
  return {
    fns,
    // Plain zeroed Buffers: several times cheaper than ref.alloc() and deref().
    newOutPointer: () => Buffer.alloc(ref.sizeof.pointer),
    readOutPointer: (out) => ref.readPointer(out, 0),
    newOutBool: () => Buffer.alloc(1),
    readOutBool: (out) => out[0] !== 0,
    isNull: (pointer) => ref.isNull(pointer),
    readString: (pointer) => ref.readCString(pointer, 0),
    // ref-napi takes 64-bit integers beyond 2^53 as decimal strings.
    asUint64: (value) => (typeof value === 'bigint' ? value.toString() : value),
  };
}

module.exports = { name: 'ffi-napi', open };
