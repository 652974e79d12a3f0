"""Text-to-speech models that run on the device, offline.

The default backend is hibari (``hibari-tts``): a 7.9 MB ONNX voice inside the wheel, 24 kHz float32,
far faster than real time on one core::

    from flowrtc.models.tts import get_tts_model

    tts = get_tts_model()                         # hibari, loaded once per process
    rate, audio = tts.tts("Hello there.")         # (24000, float32 1-D)
    async for rate, chunk in tts.stream_tts(text):    # one chunk per sentence, off the event loop
        ...
    for rate, chunk in tts.stream_tts_sync(text):     # the same in a plain thread
        ...

Kokoro (``kokoro-onnx``) works too, given its model and voices files. Any object with the three
methods of :class:`TTSModel` can stand in for these models.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
import os
import re
import threading
from collections.abc import AsyncIterator, Callable, Generator, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import anyio.to_thread
import numpy as np
from numpy.typing import NDArray

from flowrtc.errors import ConfigurationError, MissingExtraError

__all__ = [
    "HibariTTS",
    "HibariTTSOptions",
    "KokoroTTS",
    "KokoroTTSOptions",
    "TTSModel",
    "get_tts_model",
    "split_sentences",
]

OptionsT_contra = TypeVar("OptionsT_contra", contravariant=True)
Chunk = tuple[int, NDArray[np.float32]]


@runtime_checkable
class TTSModel(Protocol[OptionsT_contra]):
    """What flowrtc needs from a text-to-speech model: FastRTC's ``TTSModel`` protocol.

    Every method returns or yields ``(sample_rate, samples)`` with mono float32 samples in [-1, 1].
    """

    def tts(self, text: str, options: OptionsT_contra | None = None) -> Chunk:
        """Synthesize all of ``text`` at once."""
        ...

    def stream_tts(self, text: str, options: OptionsT_contra | None = None) -> AsyncIterator[Chunk]:
        """Yield audio piece by piece (an async generator) without blocking the event loop."""
        ...

    def stream_tts_sync(self, text: str, options: OptionsT_contra | None = None) -> Iterator[Chunk]:
        """Yield audio piece by piece (a plain generator)."""
        ...


@dataclass(frozen=True)
class HibariTTSOptions:
    """Options for the hibari voice.

    Attributes:
        speed: speaking rate; 1.0 is the voice's natural pace, 0.5 half as fast, 2.0 twice as fast.
        seed: fixes hibari's noise component, so the same text gives bit-identical audio.
            ``None`` draws fresh noise every call (inaudibly different).
    """

    speed: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ConfigurationError(f"hibari speed must be between 0.5 and 2.0, got {self.speed}")


@dataclass(frozen=True)
class KokoroTTSOptions:
    """Options for Kokoro, with FastRTC's names and defaults.

    Attributes:
        voice: a voice in the voices file, e.g. ``"af_heart"``, ``"am_adam"``, ``"bf_emma"``.
        speed: speaking rate between 0.5 and 2.0.
        lang: the espeak language code used to phonemize, e.g. ``"en-us"``, ``"en-gb"``.
    """

    voice: str = "af_heart"
    speed: float = 1.0
    lang: str = "en-us"

    def __post_init__(self) -> None:
        if not 0.5 <= self.speed <= 2.0:
            raise ConfigurationError(f"Kokoro speed must be between 0.5 and 2.0, got {self.speed}")


# -- sentence splitting ------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split ``text`` at line breaks and sentence ends; cut sentences longer than ``max_chars``
    at clause punctuation (``, ; : —``) where possible."""
    out: list[str] = []
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(line.strip()):
            sentence = sentence.strip()
            if len(sentence) <= max_chars:
                if sentence:
                    out.append(sentence)
                continue
            current = ""
            for clause in _CLAUSE_END.split(sentence):
                if current and len(current) + 1 + len(clause) > max_chars:
                    out.append(current)
                    current = clause
                else:
                    current = f"{current} {clause}" if current else clause
            if current:
                out.append(current)
    return out


# -- shared streaming machinery ----------------------------------------------------------------

_DONE = object()


def _next_or_done(iterator: Iterator[Chunk]) -> Any:
    return next(iterator, _DONE)


class _SentenceTTS(ABC):
    """Base of the bundled backends: synthesis sentence by sentence under a lock.

    Subclasses implement :meth:`_options` (validate and default the options) and :meth:`_pieces`
    (a generator doing one bounded piece of work, about a sentence, per step).
    """

    sample_rate: int = 24_000

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def _options(self, options: Any) -> Any:
        """Validate ``options`` and fill in the defaults."""

    @abstractmethod
    def _pieces(self, text: str, options: Any) -> Generator[NDArray[np.float32], None, None]:
        """Synthesise ``text`` one bounded piece (about a sentence) per step."""

    def stream_tts_sync(self, text: str, options: Any = None) -> Generator[Chunk, None, None]:
        """Yield ``(sample_rate, float32 1-D)`` per sentence, each as soon as it is synthesized.

        Runs in the calling thread; several threads may stream from one model at once (each
        sentence is synthesized under the model's lock).
        """
        opts = self._options(options)
        pieces = self._pieces(text, opts)
        try:
            while True:
                with self._lock:
                    audio = next(pieces, None)
                if audio is None:
                    return
                if audio.size:
                    yield self.sample_rate, np.ascontiguousarray(audio, dtype=np.float32)
        finally:
            pieces.close()

    async def stream_tts(self, text: str, options: Any = None) -> AsyncIterator[Chunk]:
        """Async generator of ``(sample_rate, float32 1-D)``, one per sentence.

        Each sentence is synthesized in a worker thread, so the event loop never waits on the
        model. Stopping early (``break`` plus ``aclose()``, or cancellation) stops the synthesis
        after the sentence in progress.
        """
        chunks = self.stream_tts_sync(text, options)
        try:
            while True:
                chunk = await anyio.to_thread.run_sync(_next_or_done, chunks)
                if chunk is _DONE:
                    return
                yield chunk
        finally:
            # No worker thread is inside the generator here: run_sync waits for it even when cancelled.
            chunks.close()

    def tts(self, text: str, options: Any = None) -> Chunk:
        """Synthesize all of ``text``: ``(sample_rate, float32 1-D)``; empty text gives no samples."""
        parts = [audio for _, audio in self.stream_tts_sync(text, options)]
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return self.sample_rate, audio

    async def atts(self, text: str, options: Any = None) -> Chunk:
        """Like :meth:`tts` but in a worker thread, so the event loop keeps running."""
        return await anyio.to_thread.run_sync(self.tts, text, options)


# -- hibari ------------------------------------------------------------------------------------


class HibariTTS(_SentenceTTS):
    """The hibari voice "heart" (American English, distilled from Kokoro's af_heart), 24 kHz.

    Only the voice inside the wheel is used; the other hibari voices would need a download.
    Options are :class:`HibariTTSOptions`; FastRTC's :class:`KokoroTTSOptions` are accepted too
    when they ask for ``af_heart`` in American English (their ``speed`` is honoured).

    Args:
        threads: onnxruntime threads for this model (one is plenty).
        warm_up: synthesize a word at load time, so the first real call is fast.
    """

    def __init__(self, *, threads: int = 1, warm_up: bool = True) -> None:
        super().__init__()
        try:
            from hibari import SAMPLE_RATE, Hibari
        except ImportError as exc:
            raise MissingExtraError(extra="tts", package="hibari-tts", what="hibari TTS") from exc
        if threads < 1:
            raise ConfigurationError(f"threads must be >= 1, got {threads}")
        self.sample_rate = int(SAMPLE_RATE)
        self._hibari = Hibari(threads=threads)  # the bundled voice; never a download
        self._split: Callable[[str], list[str]] = Hibari.split_sentences
        if warm_up:
            self._hibari("Hello.", seed=0)  # loads the G2P lexicons

    def _options(self, options: Any) -> HibariTTSOptions:
        if options is None:
            return HibariTTSOptions()
        if isinstance(options, HibariTTSOptions):
            return options
        if isinstance(options, KokoroTTSOptions):
            if options.voice not in ("af_heart", "heart") or options.lang.lower() not in ("en-us", "en", "a"):
                raise ConfigurationError(
                    f"hibari has only the af_heart voice in American English, not voice={options.voice!r} "
                    f"lang={options.lang!r}; use get_tts_model('kokoro', model_path=..., voices_path=...) for "
                    f"other Kokoro voices"
                )
            return HibariTTSOptions(speed=options.speed)
        raise ConfigurationError(f"hibari takes HibariTTSOptions, not {type(options).__name__}")

    def _pieces(self, text: str, options: HibariTTSOptions) -> Generator[NDArray[np.float32], None, None]:
        h = self._hibari
        rng = np.random.default_rng(options.seed)
        for sentence in self._split(text):
            # A very long sentence comes back as several phoneme chunks: one step each.
            for phonemes in h.phonemize(sentence):
                yield h.from_ids(h.ids(phonemes), options.speed, rng)


# -- Kokoro ------------------------------------------------------------------------------------


class KokoroTTS(_SentenceTTS):
    """Kokoro-82M through ``kokoro-onnx``, from model and voices files you provide, 24 kHz.

    Args:
        model_path: the Kokoro ONNX model, e.g. ``kokoro-v1.0.onnx``.
        voices_path: the voices file, e.g. ``voices-v1.0.bin``.
    """

    def __init__(self, model_path: str | os.PathLike[str], voices_path: str | os.PathLike[str]) -> None:
        super().__init__()
        model_file, voices_file = os.fspath(model_path), os.fspath(voices_path)
        for label, path in (("model_path", model_file), ("voices_path", voices_file)):
            if not os.path.isfile(path):
                raise ConfigurationError(f"Kokoro {label} {path!r} is not a file")
        try:
            from kokoro_onnx import Kokoro
        except ImportError as exc:
            raise MissingExtraError(extra="kokoro", package="kokoro-onnx", what="Kokoro TTS") from exc
        self._kokoro = Kokoro(model_file, voices_file)

    def _options(self, options: Any) -> KokoroTTSOptions:
        if options is None:
            return KokoroTTSOptions()
        if isinstance(options, KokoroTTSOptions):
            return options
        if isinstance(options, HibariTTSOptions):
            return KokoroTTSOptions(speed=options.speed)
        raise ConfigurationError(f"Kokoro takes KokoroTTSOptions, not {type(options).__name__}")

    def _pieces(self, text: str, options: KokoroTTSOptions) -> Generator[NDArray[np.float32], None, None]:
        for sentence in split_sentences(text):
            samples, rate = self._kokoro.create(sentence, voice=options.voice, speed=options.speed, lang=options.lang)
            self.sample_rate = int(rate)
            yield np.asarray(samples, dtype=np.float32).reshape(-1)


# -- factory -----------------------------------------------------------------------------------

_cache: dict[Hashable, Any] = {}
_cache_lock = threading.Lock()

_KOKORO_HELP = (
    "Kokoro's weights are not in any wheel and flowrtc never downloads on its own. Get "
    "kokoro-v1.0.onnx and voices-v1.0.bin (from the kokoro-onnx releases on GitHub, or the Hugging "
    "Face repo fastrtc/kokoro-onnx) and pass get_tts_model('kokoro', model_path=..., voices_path=...). "
    "The default get_tts_model() (hibari) needs no files."
)


def get_tts_model(model: str = "hibari", **kwargs: Any) -> HibariTTS | KokoroTTS:
    """Return the text-to-speech model ``model``, loaded once per process per set of arguments.

    Args:
        model: ``"hibari"`` (default; the voice is inside ``hibari-tts``) or ``"kokoro"``
            (needs ``model_path=`` and ``voices_path=`` local files and ``kokoro-onnx``).
        **kwargs: backend options: ``threads``/``warm_up`` for hibari; ``model_path``/``voices_path``
            for Kokoro.

    Raises:
        MissingExtraError: the backend's package is not installed (``pip install 'flowrtc[tts]'``).
        ConfigurationError: unknown model, bad option, or Kokoro files not given.
    """
    cls = {"hibari": HibariTTS, "kokoro": KokoroTTS}.get(model)
    defaults = (
        {}
        if cls is None
        else {p.name: p.default for p in inspect.signature(cls).parameters.values() if p.default is not p.empty}
    )
    options = {**defaults, **kwargs}  # explicit defaults share the cached instance
    key = (model, tuple(sorted((k, os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in options.items())))
    try:
        hash(key)
    except TypeError:
        return _build(model, kwargs)
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _build(model, kwargs)
        return _cache[key]  # type: ignore[no-any-return]


def _build(model: str, kwargs: dict[str, Any]) -> HibariTTS | KokoroTTS:
    if model == "hibari":
        _check_options(HibariTTS, model, kwargs)
        return HibariTTS(**kwargs)
    if model == "kokoro":
        if kwargs.get("model_path") is None or kwargs.get("voices_path") is None:
            raise ConfigurationError(_KOKORO_HELP)
        _check_options(KokoroTTS, model, kwargs)
        return KokoroTTS(**kwargs)
    raise ConfigurationError(f"unknown TTS model {model!r}; choose 'hibari' or 'kokoro'")


def _check_options(cls: type, model: str, kwargs: dict[str, Any]) -> None:
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise ConfigurationError(f"bad option for TTS model {model!r}: {exc}") from None
