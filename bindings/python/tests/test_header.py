"""The ctypes tables of the package agree with include/storyflow_tasks.h, which defines them.

The header is the one definition of the C API: every function's signature and
every result code. The package keeps its own table (it cannot read the header
at run time: an installed wheel carries none, and parsing C at import would
slow every start), so this test parses the header and compares, name by name
and type by type; a change to the C API that the package missed fails here.
"""

from __future__ import annotations

import ctypes
import re
from typing import Any, Dict, List, Tuple

import pytest

from storyflow_tasks import _errors, _native

from conftest import REPOSITORY

HEADER = REPOSITORY / "include" / "storyflow_tasks.h"

# How each C type of the header is declared to ctypes. A `char *` result is a string the
# library allocated: it is taken as a raw pointer, so that it can be freed (c_char_p would
# copy it and drop the pointer); a `const char *` result is static and is read in place.
_ARGUMENT_TYPES: Dict[str, Any] = {
    "const char *": ctypes.c_char_p,
    "char **": ctypes.POINTER(ctypes.c_void_p),
    "char *": ctypes.c_void_p,
    "bool *": ctypes.POINTER(ctypes.c_bool),
    "uint64_t *": ctypes.POINTER(ctypes.c_uint64),
    "void *": ctypes.c_void_p,
    "SftResult": ctypes.c_int32,
    "int32_t": ctypes.c_int32,
    "uint32_t": ctypes.c_uint32,
    "int64_t": ctypes.c_int64,
    "uint64_t": ctypes.c_uint64,
    "double": ctypes.c_double,
    "bool": ctypes.c_bool,
}
_RESULT_TYPES: Dict[str, Any] = {**_ARGUMENT_TYPES, "void": None, "char *": ctypes.c_void_p, "const char *": ctypes.c_char_p}


def _header_text() -> str:
    text = HEADER.read_text(encoding="utf-8")
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"//[^\n]*", "", text)
    # Test-only exports (built with SFT_TESTING) are not in the library the package loads.
    text = re.sub(r"#if defined\(SFT_TESTING\).*?#endif", "", text, flags=re.DOTALL)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _normalised(c_type: str) -> str:
    c_type = " ".join(c_type.replace("*", " * ").split())
    return c_type.replace("* *", "**").replace(" *", " *").strip()


def header_functions() -> Dict[str, Tuple[str, List[str]]]:
    """Every function the header declares: name -> (result type, [argument types])."""
    functions = {}
    declaration = re.compile(r"([A-Za-z_][\w\s\*]*?[\s\*])(sft_\w+)\s*\(([^()]*)\)\s*$", re.DOTALL)
    for statement in _header_text().split(";"):
        match = declaration.search(re.split(r"[{}]", statement)[-1].strip())
        if match is None:
            continue
        result, name, parameters = match.group(1), match.group(2), match.group(3)
        if "typedef" in result:
            continue
        arguments = []
        for parameter in parameters.split(","):
            parameter = parameter.strip()
            if parameter in ("", "void"):
                continue
            type_part = re.sub(r"\b\w+$", "", parameter)  # drop the parameter's name
            arguments.append(_normalised(type_part))
        functions[name] = (_normalised(result), arguments)
    return functions


def header_result_codes() -> Dict[str, int]:
    """The SftResult enum: name -> value."""
    body = re.search(r"enum SftResult[^{]*\{(.*?)\}", _header_text(), re.DOTALL)
    assert body is not None, "no enum SftResult in the header"
    return {name: int(value) for name, value in re.findall(r"(SFT_\w+)\s*=\s*(-?\d+)", body.group(1))}


def header_constants() -> Dict[str, int]:
    text = HEADER.read_text(encoding="utf-8")
    return {name: int(value) for name, value in re.findall(r"#define (SFT_\w+) (-?\d+)\s*$", text, re.MULTILINE)}


def test_the_header_parses_into_functions_and_codes():
    functions = header_functions()
    assert {"sft_get_task_status", "sft_string_free", "sft_version", "sft_submit_task"} <= set(functions)
    assert functions["sft_string_free"] == ("void", ["char *"])
    assert header_result_codes()["SFT_OK"] == 0


@pytest.mark.parametrize("name", sorted(_native._SIGNATURES))
def test_each_declared_function_has_the_headers_signature(name):
    functions = header_functions()
    assert name in functions, f"{name} is declared in _native.py but not in {HEADER.name}"
    c_result, c_arguments = functions[name]
    restype, argtypes, _ = _native._SIGNATURES[name]
    for c_type in [c_result, *c_arguments]:
        assert c_type in _RESULT_TYPES, f"{name}: no ctypes mapping known for the C type {c_type!r}"
    assert restype == _RESULT_TYPES[c_result], f"{name}: result {c_result!r} is declared as {restype!r}"
    assert argtypes == [_ARGUMENT_TYPES[c] for c in c_arguments], f"{name}: arguments {c_arguments} are declared as {argtypes!r}"


def test_the_result_codes_are_the_headers():
    codes = header_result_codes()
    kept = {name: value for name, value in vars(_native).items() if name.startswith("SFT_ERR_") or name == "SFT_OK"}
    for name, value in kept.items():
        assert codes.get(name) == value, f"_native.{name} = {value}, the header says {codes.get(name)}"
    by_code = {cls.code: cls for cls in _errors._BY_CODE.values()}
    for name, value in codes.items():
        if value == 0:
            continue
        assert value in by_code, f"no exception class for {name} = {value}"
        assert by_code[value].code_name == name, f"{by_code[value].__name__} names {by_code[value].code_name}, the header {name}"
    assert set(by_code) == {value for value in codes.values() if value != 0}


def test_the_constants_are_the_headers():
    constants = header_constants()
    for name in ("SFT_WAIT_FOREVER", "SFT_MAX_TIMEOUT_MS"):
        assert getattr(_native, name) == constants[name], name
