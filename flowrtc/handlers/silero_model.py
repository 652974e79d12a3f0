"""``get_silero_model()``: FastRTC's pause-detection model, backed by flowrtc's Silero v6.

The object it returns speaks FastRTC's ``PauseDetectionModel`` protocol
(``vad((rate, audio), options) -> (speech_s, segments)`` and ``warmup()``) for
code that calls it directly, and also exposes ``infer``, so ``ReplyOnPause(model=...)``
streams it window by window instead of falling back to FastRTC's 0.6 s chunks.
"""

from __future__ import annotations

import functools

import numpy as np

from flowrtc.handlers.options import SileroVadOptions
from flowrtc.media import AudioChunk
from flowrtc.models.silero import WINDOW_SAMPLES, SileroVAD, VADStream, get_silero_vad
from flowrtc.operators.resample import Resampler
from flowrtc.operators.vad import SpeechDetector

__all__ = ["SileroPauseModel", "get_silero_model"]

_ANALYSIS_RATE = 16000


class SileroPauseModel:
    """Silero v6 behind FastRTC's chunk-based ``vad()``; streams inside flowrtc graphs.

    Attributes:
        model: the shared :class:`~flowrtc.models.silero.SileroVAD`.
        model_path: its ONNX file (the batching engine is keyed by it).
    """

    def __init__(self, model: SileroVAD) -> None:
        self.model = model
        self.model_path = model.model_path

    def infer(self, windows: np.ndarray, state: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch of windows (see :meth:`SileroVAD.infer`)."""
        return self.model.infer(windows, state, sample_rate)

    def warmup(self) -> None:
        """Run the model once so the first real call is not the slow one."""
        self.vad((_ANALYSIS_RATE, np.zeros(_ANALYSIS_RATE, np.float32)), None)

    def vad(self, audio: tuple[int, np.ndarray], options: SileroVadOptions | None) -> tuple[float, list[dict[str, int]]]:
        """Seconds of (padded) speech in one chunk of audio, and the speech segments.

        The chunk is scored from a fresh model state, as FastRTC did; segments are
        ``{"start", "end"}`` in samples at 16 kHz (8 kHz input is scored at 8 kHz).
        """
        options = options or SileroVadOptions()
        chunk = AudioChunk.from_tuple(audio).to_layout(1).to_float32()
        rate = chunk.sample_rate if chunk.sample_rate in WINDOW_SAMPLES else _ANALYSIS_RATE
        if rate != chunk.sample_rate:
            resampler = Resampler(rate)
            pieces = [*resampler.push(chunk), *resampler.flush()]
            chunk = AudioChunk.concat(pieces) if pieces else AudioChunk(np.zeros((1, 0), np.float32), rate)
        probabilities = VADStream(rate, self.model).push(chunk.samples[0])
        window_s = WINDOW_SAMPLES[rate] / rate
        detector = SpeechDetector(
            window_s=window_s,
            threshold=options.threshold,
            min_speech_ms=options.min_speech_duration_ms,
            min_silence_ms=options.min_silence_duration_ms,
        )
        events = detector.feed(probabilities) + detector.finish(chunk.duration_s)
        pad_s, lead_s = options.speech_pad_ms / 1000, detector.speech_windows * window_s
        trail_s = detector.silence_windows * window_s
        segments: list[dict[str, int]] = []
        start_s = 0.0
        for event in events:
            if type(event).__name__ == "SpeechStarted":
                start_s = max(0.0, event.media_time_s - lead_s - pad_s)
            else:
                stop = event.media_time_s - (trail_s if event.media_time_s < chunk.duration_s else 0.0)
                end_s = min(chunk.duration_s, stop + pad_s)
                if segments and start_s * rate <= segments[-1]["end"]:
                    segments[-1]["end"] = round(end_s * rate)
                else:
                    segments.append({"start": round(start_s * rate), "end": round(end_s * rate)})
        return sum(s["end"] - s["start"] for s in segments) / rate, segments


@functools.cache
def get_silero_model() -> SileroPauseModel:
    """The process-wide Silero pause-detection model (FastRTC's ``get_silero_model``), offline."""
    return SileroPauseModel(get_silero_vad())


