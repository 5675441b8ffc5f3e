"""A text-to-speech engine: libespeak-ng through ctypes, one sentence to one WAV file.

The library and its voice data come from the PyPI package ``espeakng-loader``
(no root, no system espeak-ng needed). libespeak-ng keeps global state and is
not thread-safe: that suits storyflow-tasks, whose single worker thread runs
one task at a time, so one engine serves every task of a process.
"""

from __future__ import annotations

import array
import ctypes
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

ENS_OK = 0
ENOUTPUT_MODE_SYNCHRONOUS = 0x0001
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
DEFAULT_VOICE = "en"

#: int callback(short *wav, int numsamples, espeak_EVENT *events): 0 goes on, 1 aborts.
SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


def little_endian(samples: bytes) -> bytes:
    """16-bit samples in the machine's byte order, as WAV files want them: little-endian."""
    if sys.byteorder == "little":
        return bytes(samples)
    swapped = array.array("h", bytes(samples))
    swapped.byteswap()
    return swapped.tobytes()


class SynthesisError(RuntimeError):
    """espeak-ng could not synthesise a sentence; the message is the engine's own reason."""


@dataclass(frozen=True)
class Utterance:
    """A sentence spoken into ``path``: ``frames`` 16-bit mono samples at ``sample_rate``."""

    path: Path
    frames: int
    sample_rate: int

    @property
    def duration(self) -> float:
        """Seconds of audio, exactly as the WAV header gives them."""
        return self.frames / self.sample_rate


class EspeakEngine:
    """libespeak-ng loaded from ``espeakng-loader``, initialised for synchronous synthesis."""

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        if library_path is None or data_path is None:
            try:
                import espeakng_loader
            except ImportError as error:
                raise SynthesisError(
                    "the PyPI package 'espeakng-loader' is not installed "
                    "(examples/demo.sh installs it into the project's .venv)"
                ) from error
            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        try:
            self._lib = ctypes.CDLL(library_path)
        except OSError as error:
            raise SynthesisError(f"cannot load libespeak-ng from {library_path}: {error}") \
                from error
        self._declare()
        self._samples = bytearray()
        # Kept on self: libespeak-ng holds the pointer for as long as it lives.
        self._callback = SYNTH_CALLBACK(self._collect)
        self._lib.espeak_ng_InitializePath(data_path.encode())
        context = ctypes.c_void_p()
        status = self._lib.espeak_ng_Initialize(ctypes.byref(context))
        if status != ENS_OK:
            self._lib.espeak_ng_ClearErrorContext(ctypes.byref(context))
            raise SynthesisError(f"espeak_ng_Initialize({data_path}): {self._message(status)}")
        self._check(self._lib.espeak_ng_InitializeOutput(ENOUTPUT_MODE_SYNCHRONOUS, 0, None),
                    "espeak_ng_InitializeOutput")
        self.sample_rate = self._lib.espeak_ng_GetSampleRate()
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _declare(self) -> None:
        lib = self._lib
        status = ctypes.c_int
        lib.espeak_ng_InitializePath.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_InitializePath.restype = None
        lib.espeak_ng_Initialize.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.espeak_ng_Initialize.restype = status
        lib.espeak_ng_ClearErrorContext.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        lib.espeak_ng_ClearErrorContext.restype = None
        lib.espeak_ng_InitializeOutput.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p]
        lib.espeak_ng_InitializeOutput.restype = status
        lib.espeak_ng_GetSampleRate.argtypes = []
        lib.espeak_ng_GetSampleRate.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_ng_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_ng_SetVoiceByName.restype = status
        lib.espeak_ng_Synthesize.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
        ]
        lib.espeak_ng_Synthesize.restype = status
        lib.espeak_ng_Synchronize.argtypes = []
        lib.espeak_ng_Synchronize.restype = status
        lib.espeak_ng_GetStatusCodeMessage.argtypes = [status, ctypes.c_char_p, ctypes.c_size_t]
        lib.espeak_ng_GetStatusCodeMessage.restype = None
        lib.espeak_ng_Terminate.argtypes = []
        lib.espeak_ng_Terminate.restype = status

    def _message(self, status: int) -> str:
        buffer = ctypes.create_string_buffer(512)
        self._lib.espeak_ng_GetStatusCodeMessage(status, buffer, len(buffer))
        return f"{buffer.value.decode(errors='replace')} (status 0x{status & 0xFFFFFFFF:08X})"

    def _check(self, status: int, call: str) -> None:
        if status != ENS_OK:
            raise SynthesisError(f"{call}: {self._message(status)}")

    def _collect(self, wav, numsamples, _events) -> int:
        if wav and numsamples > 0:
            self._samples += ctypes.string_at(wav, numsamples * ctypes.sizeof(ctypes.c_short))
        return 0

    def set_voice(self, name: str) -> None:
        """Selects an espeak-ng voice by name; SynthesisError if espeak-ng has no such voice."""
        if name == self._voice:
            return
        status = self._lib.espeak_ng_SetVoiceByName(name.encode())
        if status != ENS_OK:
            # A failed switch may leave a half-changed voice: make the next call set one again.
            self._voice = None
            raise SynthesisError(f"voice {name!r}: {self._message(status)}")
        self._voice = name

    def synthesize(self, text: str, path: str | Path, voice: str | None = None) -> Utterance:
        """Speaks ``text`` with ``voice`` (default: English) into a 16-bit mono WAV at ``path``."""
        if not text.strip():
            raise SynthesisError("nothing to say: the sentence is empty")
        self.set_voice(voice or DEFAULT_VOICE)
        data = text.encode("utf-8")
        self._samples = bytearray()
        # size counts the terminating NUL, as the espeak-ng API asks.
        self._check(
            self._lib.espeak_ng_Synthesize(data, len(data) + 1, 0, POS_CHARACTER, 0,
                                           ESPEAK_CHARS_UTF8, None, None),
            "espeak_ng_Synthesize",
        )
        self._check(self._lib.espeak_ng_Synchronize(), "espeak_ng_Synchronize")
        samples, self._samples = self._samples, bytearray()
        if not samples:
            raise SynthesisError(f"espeak-ng produced no audio for {text[:40]!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(little_endian(samples))
        return Utterance(path, len(samples) // 2, self.sample_rate)

    def close(self) -> None:
        """Releases libespeak-ng's state; the engine cannot be used afterwards."""
        if self._lib is not None:
            self._lib.espeak_ng_Terminate()
            self._lib = None
