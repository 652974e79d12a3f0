"""FastRTC's ``PauseDetectionModel`` protocol, and the adapter that streams one.

A FastRTC pause-detection model scores a whole chunk of audio at a time:
``model.vad((sample_rate, audio), options) -> (speech_seconds, segments)``.
flowrtc's ``vad`` operator works on a stream of speech probabilities instead,
one per window; :class:`ChunkedPauseModel` turns a chunk model into such a
stream, one "window" per chunk, with probability ``speech_seconds / chunk_s``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowrtc.errors import ConfigurationError, MediaError

__all__ = ["PauseDetectionModel", "ChunkedPauseModel"]

#: FastRTC scored 0.6 s chunks (``AlgoOptions.audio_chunk_duration``).
DEFAULT_CHUNK_S = 0.6


@runtime_checkable
class PauseDetectionModel(Protocol):
    """Any VAD with FastRTC's shape can decide turns in ``ReplyOnPause``.

    ``vad`` gets ``(sample_rate, audio)`` with ``audio`` a 1-D int16 array (as
    FastRTC passed it) and the handler's ``model_options``, and returns the
    seconds of speech in the chunk and the speech segments
    (``[{"start": sample, "end": sample}, ...]``; flowrtc reads only the seconds).
    ``warmup`` is called once, when the handler is made.
    """

    def vad(self, audio: tuple[int, np.ndarray], options: Any) -> tuple[float, list[dict[str, Any]]]: ...

    def warmup(self) -> None: ...


class ChunkedPauseModel:
    """Feed a :class:`PauseDetectionModel` fixed chunks and read one probability per chunk.

    Attributes:
        model: the wrapped chunk model.
        options: passed to every ``model.vad`` call (FastRTC's ``model_options``).
        chunk_s: chunk length in seconds; also the "window" of the probabilities.

    :meth:`cut` is cheap and runs on the event loop; :meth:`probability` calls the
    model (blocking: the ``vad`` operator runs it in a worker thread). The model's
    ``warmup`` is not called here: call it once when the model is made
    (``ReplyOnPause`` does).
    """

    def __init__(self, model: PauseDetectionModel, options: Any = None, *, chunk_s: float = DEFAULT_CHUNK_S) -> None:
        if not callable(getattr(model, "vad", None)):
            raise ConfigurationError(f"{type(model).__name__} has no vad((sample_rate, audio), options) method")
        if not chunk_s > 0:
            raise ConfigurationError(f"chunk_s must be > 0 s, got {chunk_s!r}")
        self.model = model
        self.options = options
        self.chunk_s = float(chunk_s)
        self._pending: list[np.ndarray] = []
        self._count = 0

    def window_s(self, sample_rate: int) -> float:
        """Duration in seconds of one scored chunk at ``sample_rate`` (whole samples)."""
        return self.chunk_samples(sample_rate) / sample_rate

    def chunk_samples(self, sample_rate: int) -> int:
        return max(1, round(self.chunk_s * sample_rate))

    def cut(self, samples: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """Append 1-D int16 ``samples``; return the complete chunks now ready."""
        if samples.ndim != 1:
            raise MediaError(f"ChunkedPauseModel takes 1-D mono samples, not shape {samples.shape}")
        size = self.chunk_samples(sample_rate)
        self._pending.append(samples)
        self._count += samples.shape[0]
        if self._count < size:
            return []
        joined = np.concatenate(self._pending)
        whole = (self._count // size) * size
        chunks = [joined[start : start + size] for start in range(0, whole, size)]
        rest = joined[whole:]
        self._pending = [rest] if rest.shape[0] else []
        self._count = rest.shape[0]
        return chunks

    def probability(self, chunk: np.ndarray, sample_rate: int) -> float:
        """The fraction of ``chunk`` the model calls speech (0..1)."""
        speech_s, _segments = self.model.vad((sample_rate, chunk), self.options)
        seconds = float(speech_s)
        if seconds != seconds:  # NaN: the model could not tell; FastRTC treated failures as speech
            return 1.0
        return min(1.0, max(0.0, seconds / (chunk.shape[0] / sample_rate)))

    def reset(self) -> None:
        """Drop the partial chunk."""
        self._pending = []
        self._count = 0
