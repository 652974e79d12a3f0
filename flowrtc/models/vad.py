"""Voice activity detection with Silero VAD v6 (ONNX, CPU), unbatched or batched.

* :func:`get_silero_vad` / :class:`SileroVAD`: the model, one ONNX session per
  process per model file; :meth:`SileroVAD.infer` scores a batch of windows.
* :class:`VADStream`: one stream, scored directly on the calling thread.
* :func:`get_vad_engine` / :class:`VADEngine` / :class:`EngineStream`: many
  concurrent streams of one event loop, their windows batched into few model
  calls run off the loop.

Audio must be mono at 8000 or 16000 Hz; resample other rates in the graph first.
"""

from __future__ import annotations

from .silero import (
    CONTEXT_SAMPLES,
    STATE_SHAPE,
    SUPPORTED_RATES,
    WINDOW_SAMPLES,
    SileroVAD,
    VADStream,
    default_model_path,
    get_silero_vad,
)
from .vad_engine import EngineStream, VADEngine, get_vad_engine

__all__ = [
    "CONTEXT_SAMPLES",
    "STATE_SHAPE",
    "SUPPORTED_RATES",
    "WINDOW_SAMPLES",
    "EngineStream",
    "SileroVAD",
    "VADEngine",
    "VADStream",
    "default_model_path",
    "get_silero_vad",
    "get_vad_engine",
]
