"""Immutable media items: :class:`AudioChunk` and :class:`VideoFrame`.

Audio is always held planar, ``(channels, n)``, as int16 or float32, with its
``pts`` counted in samples at its own ``sample_rate``. Conversions to and from
PyAV frames, FastRTC-style ``(rate, ndarray)`` tuples, PCM bytes and µ-law bytes
are lossless wherever the target format can hold the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, Sequence

import av
import numpy as np

from flowrtc.errors import MediaError
from flowrtc.g711 import mulaw_to_pcm16, pcm16_to_mulaw

__all__ = ["AudioChunk", "VideoFrame", "Layout", "as_audio_chunk", "seal"]

Layout = Literal["mono", "stereo"]

_AUDIO_DTYPES = (np.dtype(np.int16), np.dtype(np.float32))
_INT16_SCALE = 32768.0
_MAX_CHANNELS = 8
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2}
# PyAV sample formats we read losslessly, mapped to the numpy dtype they carry.
_AV_FORMATS = {"s16": np.int16, "s16p": np.int16, "flt": np.float32, "fltp": np.float32}


_set = object.__setattr__


def _readonly(array: np.ndarray) -> np.ndarray:
    # A writable array still belongs to whoever made it, who may write to it
    # (or reuse it as a buffer) after handing it over: keep a private copy.
    copy = array.copy()
    copy.flags.writeable = False
    return copy


def seal(array: np.ndarray) -> np.ndarray:
    """Mark an array that nothing else references read-only in place (no copy).

    For arrays an operator has just made, so wrapping them in an item costs no copy.
    """
    array.flags.writeable = False
    return array


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A run of audio samples.

    Attributes:
        samples: ``(channels, n)`` int16 or float32 array (read-only).
        sample_rate: samples per second per channel, in Hz.
        pts: position of the first sample, counted in samples at ``sample_rate``.
    """

    samples: np.ndarray
    sample_rate: int
    pts: int = 0

    def __post_init__(self) -> None:
        samples = self.samples
        if not isinstance(samples, np.ndarray):
            raise MediaError(f"AudioChunk samples must be a numpy array, got {type(samples).__name__}")
        if samples.ndim != 2:
            raise MediaError(f"AudioChunk samples must be shaped (channels, n), got shape {samples.shape}")
        if samples.dtype not in _AUDIO_DTYPES:
            raise MediaError(f"AudioChunk samples must be int16 or float32, got {samples.dtype}")
        if not 0 < samples.shape[0] <= _MAX_CHANNELS:
            raise MediaError(f"AudioChunk must have 1 to {_MAX_CHANNELS} channels, got {samples.shape[0]}")
        if not isinstance(self.sample_rate, (int, np.integer)) or self.sample_rate <= 0:
            raise MediaError(f"sample_rate must be a positive integer in Hz, got {self.sample_rate!r}")
        if samples.flags.writeable:
            object.__setattr__(self, "samples", _readonly(samples))

    def __repr__(self) -> str:
        # Short: items end up in logs, test failures and task reprs, where printing
        # every sample of every frame cost seconds.
        return (
            f"AudioChunk({self.channels}ch x {self.n_samples} {self.samples.dtype} @ {self.sample_rate} Hz, "
            f"pts={self.pts}, t={self.media_time_s:.3f}s)"
        )

    def __eq__(self, other: object) -> bool:
        # Compare sample values (the generated __eq__ asked numpy for the truth of an array).
        if not isinstance(other, AudioChunk):
            return NotImplemented
        return (
            self.sample_rate == other.sample_rate
            and self.pts == other.pts
            and self.samples.dtype == other.samples.dtype
            and np.array_equal(self.samples, other.samples)
        )

    # -- shape ---------------------------------------------------------------
    @property
    def channels(self) -> int:
        return self.samples.shape[0]

    @property
    def n_samples(self) -> int:
        """Samples per channel."""
        return self.samples.shape[1]

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.sample_rate

    @property
    def end_pts(self) -> int:
        """The pts just after the last sample."""
        return self.pts + self.samples.shape[1]

    @property
    def media_time_s(self) -> float:
        return self.pts / self.sample_rate

    @property
    def layout(self) -> Layout:
        return "mono" if self.channels == 1 else "stereo"

    @classmethod
    def _trusted(cls, samples: np.ndarray, sample_rate: int, pts: int) -> AudioChunk:
        """Wrap samples already known to be valid and read-only, without checking them again.

        For operators deriving a chunk from a valid one (a new pts, a slice of
        sealed samples): at one item per 20 ms frame per session and stage, the
        checks were a measurable part of a busy server's time.
        """
        chunk = object.__new__(cls)
        _set(chunk, "samples", samples)
        _set(chunk, "sample_rate", sample_rate)
        _set(chunk, "pts", pts)
        return chunk

    # -- derived chunks --------------------------------------------------------
    def with_pts(self, pts: int) -> AudioChunk:
        return AudioChunk._trusted(self.samples, self.sample_rate, pts)

    def to_int16(self) -> AudioChunk:
        if self.samples.dtype == np.int16:
            return self
        scaled = np.clip(np.rint(self.samples * _INT16_SCALE), -32768, 32767).astype(np.int16)
        return AudioChunk(seal(scaled), self.sample_rate, self.pts)

    def to_float32(self) -> AudioChunk:
        if self.samples.dtype == np.float32:
            return self
        return AudioChunk(seal(self.samples.astype(np.float32) / np.float32(_INT16_SCALE)), self.sample_rate, self.pts)

    def to_dtype(self, dtype: Any) -> AudioChunk:
        return self.to_int16() if np.dtype(dtype) == np.int16 else self.to_float32()

    def to_layout(self, layout: Layout | int) -> AudioChunk:
        """Mix down to mono (mean of the channels) or up from mono by copying."""
        channels = _LAYOUT_CHANNELS[layout] if isinstance(layout, str) else layout
        if channels == self.channels:
            return self
        if channels == 1:
            mixed = self.samples.mean(axis=0, keepdims=True, dtype=np.float32)
            if self.samples.dtype == np.int16:
                mixed = np.rint(mixed).astype(np.int16)
            return AudioChunk(seal(mixed), self.sample_rate, self.pts)
        if self.channels == 1:
            return AudioChunk(seal(np.repeat(self.samples, channels, axis=0)), self.sample_rate, self.pts)
        raise MediaError(f"cannot convert {self.channels} channels to {channels}")

    def slice(self, start: int, stop: int | None = None) -> AudioChunk:
        """Samples ``[start, stop)`` of this chunk, with the pts moved to match."""
        return AudioChunk._trusted(self.samples[:, start:stop], self.sample_rate, self.pts + start)

    @staticmethod
    def concat(chunks: Sequence[AudioChunk], *, pts: int | None = None) -> AudioChunk:
        """Join chunks of one rate and layout end to end (their pts are not consulted)."""
        if not chunks:
            raise MediaError("cannot concatenate zero chunks")
        first = chunks[0]
        for chunk in chunks:
            if chunk.sample_rate != first.sample_rate or chunk.channels != first.channels:
                raise MediaError("chunks to concatenate must share sample_rate and channels")
        dtype = np.float32 if any(c.samples.dtype == np.float32 for c in chunks) else np.int16
        joined = np.concatenate([c.to_dtype(dtype).samples for c in chunks], axis=1)
        return AudioChunk(seal(joined), first.sample_rate, first.pts if pts is None else pts)

    @staticmethod
    def silence(duration_s: float, sample_rate: int, *, channels: int = 1, pts: int = 0) -> AudioChunk:
        return AudioChunk(np.zeros((channels, round(duration_s * sample_rate)), np.int16), sample_rate, pts)

    # -- FastRTC tuples --------------------------------------------------------
    @classmethod
    def from_tuple(cls, audio: tuple[int, np.ndarray], *, pts: int = 0, layout: Layout | None = None) -> AudioChunk:
        """Accept ``(rate, array)`` in every shape FastRTC users pass.

        ``(n,)`` is mono; ``(1, n)`` and ``(c, n)`` are planar; ``(n, c)`` is
        interleaved and is transposed. ``layout`` (FastRTC's third tuple element)
        settles an ambiguous ``(2, 2)``-like shape. int16, float32 and float64
        are accepted; float64 becomes float32.
        """
        if not isinstance(audio, tuple) or len(audio) not in (2, 3):
            raise MediaError(f"audio must be a (sample_rate, ndarray) tuple, got {type(audio).__name__}")
        rate, array = audio[0], audio[1]
        if len(audio) == 3 and layout is None:
            layout = audio[2]
        if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
            raise MediaError(f"sample rate must be a positive integer in Hz, got {rate!r}")
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        elif array.dtype not in _AUDIO_DTYPES:
            raise MediaError(f"audio arrays must be int16, float32 or float64, got {array.dtype}")
        if array.ndim == 1:
            array = array[None, :]
        elif array.ndim == 2:
            rows, cols = array.shape
            want = _LAYOUT_CHANNELS.get(layout) if layout else None
            if want is not None and rows != want and cols == want:
                array = array.T
            elif want is None and 0 < cols <= _MAX_CHANNELS and rows > cols:
                array = array.T
        else:
            raise MediaError(f"audio arrays must be 1-D or 2-D, got shape {array.shape}")
        if array.shape[0] > _MAX_CHANNELS:
            raise MediaError(f"cannot tell channels from samples in an audio array of shape {array.shape}")
        return cls(np.ascontiguousarray(array), int(rate), pts)

    def to_tuple(self) -> tuple[int, np.ndarray]:
        """``(sample_rate, (channels, n) array)``, the shape FastRTC handlers receive."""
        return self.sample_rate, self.samples

    # -- PCM and µ-law bytes -----------------------------------------------------
    @classmethod
    def from_pcm(cls, data: bytes, sample_rate: int, *, channels: int = 1, pts: int = 0) -> AudioChunk:
        """Interleaved signed 16-bit little-endian PCM."""
        frame_bytes = 2 * channels
        if len(data) % frame_bytes:
            raise MediaError(f"PCM16 payload of {len(data)} bytes is not a whole number of {channels}-channel frames")
        interleaved = np.frombuffer(data, dtype="<i2").astype(np.int16, copy=False)
        return cls(np.ascontiguousarray(interleaved.reshape(-1, channels).T), sample_rate, pts)

    def to_pcm(self) -> bytes:
        return self.to_int16().samples.T.astype("<i2").tobytes()

    @classmethod
    def from_mulaw(cls, data: bytes, sample_rate: int = 8000, *, pts: int = 0) -> AudioChunk:
        """G.711 µ-law bytes, mono."""
        return cls(seal(mulaw_to_pcm16(np.frombuffer(data, np.uint8))[None, :]), sample_rate, pts)

    def to_mulaw(self) -> bytes:
        """Mono G.711 µ-law bytes (channels are mixed down first)."""
        return pcm16_to_mulaw(self.to_layout(1).to_int16().samples[0]).tobytes()

    # -- PyAV ----------------------------------------------------------------------
    @classmethod
    def from_av(cls, frame: av.AudioFrame) -> AudioChunk:
        fmt = frame.format.name
        if fmt not in _AV_FORMATS:
            raise MediaError(f"unsupported av audio format {fmt!r}; expected one of {sorted(_AV_FORMATS)}")
        channels = frame.layout.nb_channels
        array = frame.to_ndarray()
        if not frame.format.is_planar:
            array = array.reshape(-1, channels).T
        pts = 0
        if frame.pts is not None:
            time_base = frame.time_base or Fraction(1, frame.sample_rate)
            pts = int(frame.pts * time_base * frame.sample_rate)
        return cls(seal(np.ascontiguousarray(array)), frame.sample_rate, pts)

    def to_av(self, format: str = "s16") -> av.AudioFrame:
        """A PyAV frame in ``format`` (``s16``, ``s16p``, ``flt`` or ``fltp``)."""
        if format not in _AV_FORMATS:
            raise MediaError(f"unsupported av audio format {format!r}")
        samples = self.to_dtype(_AV_FORMATS[format]).samples
        if not format.endswith("p"):
            samples = samples.T.reshape(1, -1)
        layout = {1: "mono", 2: "stereo"}.get(self.channels)
        if layout is None:
            raise MediaError(f"PyAV frames support mono and stereo here, not {self.channels} channels")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=format, layout=layout)
        frame.sample_rate = self.sample_rate
        frame.pts = self.pts
        frame.time_base = Fraction(1, self.sample_rate)
        return frame


def as_audio_chunk(value: Any, *, pts: int = 0) -> AudioChunk:
    """Coerce what a user handler returns — a chunk, an av frame or a tuple — to an AudioChunk."""
    if isinstance(value, AudioChunk):
        return value
    if isinstance(value, av.AudioFrame):
        return AudioChunk.from_av(value)
    if isinstance(value, tuple):
        return AudioChunk.from_tuple(value, pts=pts)
    raise MediaError(f"expected audio as (sample_rate, ndarray), got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One video image.

    Attributes:
        image: ``(height, width, 3)`` uint8 array (read-only) in ``format`` channel order.
        pts: presentation time in units of ``time_base``.
        time_base: seconds per pts tick (90 kHz, the RTP video clock, by default).
        format: ``"bgr24"`` (what FastRTC and OpenCV handlers expect) or ``"rgb24"``.
    """

    image: np.ndarray
    pts: int = 0
    time_base: Fraction = Fraction(1, 90000)
    format: Literal["bgr24", "rgb24"] = "bgr24"

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray):
            raise MediaError(f"VideoFrame image must be a numpy array, got {type(image).__name__}")
        if image.ndim != 3 or image.shape[2] != 3:
            raise MediaError(f"VideoFrame image must be shaped (height, width, 3), got {image.shape}")
        if image.dtype != np.uint8:
            raise MediaError(f"VideoFrame image must be uint8, got {image.dtype}")
        if self.format not in ("bgr24", "rgb24"):
            raise MediaError(f"VideoFrame format must be 'bgr24' or 'rgb24', got {self.format!r}")
        if image.flags.writeable:
            object.__setattr__(self, "image", _readonly(image))

    def __repr__(self) -> str:
        return f"VideoFrame({self.width}x{self.height} {self.format}, pts={self.pts}, t={self.media_time_s:.3f}s)"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VideoFrame):
            return NotImplemented
        return (
            self.pts == other.pts
            and self.time_base == other.time_base
            and self.format == other.format
            and np.array_equal(self.image, other.image)
        )

    @property
    def media_time_s(self) -> float:
        return float(self.pts * self.time_base)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]

    def with_image(self, image: np.ndarray) -> VideoFrame:
        """The same timing with another image (what a frame → frame handler returns)."""
        return VideoFrame(np.ascontiguousarray(image), self.pts, self.time_base, self.format)

    def to_format(self, format: Literal["bgr24", "rgb24"]) -> VideoFrame:
        if format == self.format:
            return self
        return VideoFrame(seal(np.ascontiguousarray(self.image[:, :, ::-1])), self.pts, self.time_base, format)

    @classmethod
    def from_av(cls, frame: av.VideoFrame, *, format: Literal["bgr24", "rgb24"] = "bgr24") -> VideoFrame:
        time_base = frame.time_base or Fraction(1, 90000)
        return cls(seal(frame.to_ndarray(format=format)), frame.pts or 0, time_base, format)

    def to_av(self) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.image), format=self.format)
        frame.pts = self.pts
        frame.time_base = self.time_base
        return frame
