"""FastRTC's helper functions: waiting on queues and converting audio.

* :func:`wait_for_item`: the idiom for an ``emit`` that must not block forever.
* :func:`audio_to_bytes` / :func:`audio_to_file`: a ``(rate, ndarray)`` tuple as an
  encoded file (MP3 by default), for speech APIs that take files.
* :func:`aggregate_bytes_to_16bit` / :func:`async_aggregate_bytes_to_16bit`: raw
  PCM16 byte chunks of any length (as TTS APIs stream them) as int16 arrays.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Iterable, Iterator

import anyio
import av
import numpy as np

from flowrtc.errors import MediaError
from flowrtc.media import AudioChunk

__all__ = [
    "wait_for_item",
    "audio_to_bytes",
    "audio_to_file",
    "aggregate_bytes_to_16bit",
    "async_aggregate_bytes_to_16bit",
    "audio_to_float32",
    "audio_to_int16",
]

_FORMATS = {"mp3": ("mp3", "libmp3lame"), "wav": ("wav", "pcm_s16le"), "flac": ("flac", "flac")}
# MP3 only exists at these rates; other rates are converted to the nearest one above.
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)


async def wait_for_item(queue: Any, timeout: float = 0.1) -> Any:
    """The next item of an ``asyncio.Queue``, or ``None`` if none arrives within ``timeout`` seconds.

    No item is lost when the wait times out. Works with anything that has an
    awaitable ``get()``.
    """
    with anyio.move_on_after(timeout):
        return await queue.get()
    return None


def _encode(audio: tuple[int, np.ndarray] | AudioChunk, fmt: str) -> bytes:
    if fmt not in _FORMATS:
        raise MediaError(f"audio format must be one of {sorted(_FORMATS)}, got {fmt!r}")
    chunk = audio if isinstance(audio, AudioChunk) else AudioChunk.from_tuple(audio)
    chunk = chunk.to_int16()
    if chunk.channels > 2:
        chunk = chunk.to_layout("stereo")
    container_format, codec = _FORMATS[fmt]
    rate = chunk.sample_rate
    if fmt == "mp3" and rate not in _MP3_RATES:
        rate = next((r for r in _MP3_RATES if r >= rate), 48000)
    sink = io.BytesIO()
    with av.open(sink, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout=chunk.layout)
        context = stream.codec_context
        frame_size = context.frame_size or None
        resampler = av.AudioResampler(format=context.format.name, layout=chunk.layout, rate=rate, frame_size=frame_size)
        container.start_encoding()  # the header, even for empty audio
        frames = [*resampler.resample(chunk.with_pts(0).to_av("s16")), *resampler.resample(None)] if chunk.n_samples else []
        for frame in frames:
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return sink.getvalue()


def audio_to_bytes(audio: tuple[int, np.ndarray] | AudioChunk, format: str = "mp3") -> bytes:
    """Encode ``(sample_rate, ndarray)`` audio (any FastRTC shape, int16 or float) as a file's bytes.

    ``format`` is ``"mp3"`` (FastRTC's choice, what speech APIs accept), ``"wav"`` or ``"flac"``.
    """
    return _encode(audio, format)


def audio_to_file(audio: tuple[int, np.ndarray] | AudioChunk, format: str = "mp3") -> str:
    """Write ``(sample_rate, ndarray)`` audio to a new temporary file and return its path.

    The caller owns the file and deletes it when done.
    """
    data = _encode(audio, format)
    handle, path = tempfile.mkstemp(suffix=f".{format}", prefix="flowrtc-")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return str(Path(path))


class _Int16Aggregator:
    """Carries an odd trailing byte over to the next chunk."""

    __slots__ = ("_carry",)

    def __init__(self) -> None:
        self._carry = b""

    def push(self, chunk: bytes) -> np.ndarray | None:
        data = self._carry + bytes(chunk)
        whole = len(data) - len(data) % 2
        self._carry = data[whole:]
        if not whole:
            return None
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16).reshape(1, -1)


def aggregate_bytes_to_16bit(chunks_iterator: Iterable[bytes]) -> Iterator[np.ndarray]:
    """Turn byte chunks of any length (little-endian PCM16) into int16 arrays shaped ``(1, n)``.

    A sample split across two chunks is joined; a final odd byte is dropped.
    """
    aggregator = _Int16Aggregator()
    for chunk in chunks_iterator:
        samples = aggregator.push(chunk)
        if samples is not None:
            yield samples


async def async_aggregate_bytes_to_16bit(chunks_iterator: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[np.ndarray]:
    """:func:`aggregate_bytes_to_16bit` for an async iterable of byte chunks (a plain iterable works too)."""
    aggregator = _Int16Aggregator()
    chunks = chunks_iterator if isinstance(chunks_iterator, AsyncIterable) else _each(chunks_iterator)
    async for chunk in chunks:
        samples = aggregator.push(chunk)
        if samples is not None:
            yield samples


async def _each(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


def _samples(audio: tuple[int, np.ndarray] | np.ndarray | AudioChunk) -> np.ndarray:
    if isinstance(audio, AudioChunk):
        return audio.samples
    if isinstance(audio, tuple):
        return np.asarray(audio[1])
    return np.asarray(audio)


def audio_to_float32(audio: tuple[int, np.ndarray] | np.ndarray | AudioChunk) -> np.ndarray:
    """Samples as float32 in [-1, 1] (int16 is scaled by 1/32768; float is passed through), same shape."""
    samples = _samples(audio)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / np.float32(32768.0)
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise MediaError(f"audio_to_float32 takes int16 or float samples, got {samples.dtype}")


def audio_to_int16(audio: tuple[int, np.ndarray] | np.ndarray | AudioChunk) -> np.ndarray:
    """Samples as int16 (float in [-1, 1] is scaled by 32767 and clipped; int16 is passed through), same shape."""
    samples = _samples(audio)
    if samples.dtype == np.int16:
        return samples
    if np.issubdtype(samples.dtype, np.floating):
        return np.clip(np.rint(samples * 32767.0), -32768, 32767).astype(np.int16)
    raise MediaError(f"audio_to_int16 takes int16 or float samples, got {samples.dtype}")
