"""``decode``, ``encode``, ``mulaw_encode`` and ``mulaw_decode``: the edges of a graph.

``decode`` turns what transports carry (PyAV frames, PCM or µ-law bytes,
FastRTC-style tuples) into AudioChunk/VideoFrame items; ``encode`` turns
AudioChunks into what a transport sends, at its rate, layout and frame size.
"""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Literal

import av
import numpy as np

from flowrtc.channel import Channel
from flowrtc.errors import ConfigurationError, MediaError
from flowrtc.g711 import mulaw_to_pcm16, pcm16_to_mulaw
from flowrtc.media import AudioChunk, Layout, VideoFrame, seal
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.rechunk import rechunk
from flowrtc.operators.resample import resample

__all__ = ["decode", "encode", "mulaw_encode", "mulaw_decode"]

BytesFormat = Literal["pcm_s16le", "mulaw"]
EncodeTarget = Literal["chunk", "av", "pcm", "mulaw", "tuple"]


def _join_queued(chunk: AudioChunk, queue: Channel, limit_ms: float) -> AudioChunk:
    """``chunk`` joined with the contiguous audio of the same format queued behind it, up to ``limit_ms``."""
    limit = round(limit_ms * chunk.sample_rate / 1000)
    pieces = [chunk]
    n = chunk.n_samples
    end = chunk.end_pts
    while queue.queued:
        following = queue.peek_nowait()
        if (
            type(following) is not AudioChunk
            or following.pts != end
            or following.sample_rate != chunk.sample_rate
            or following.samples.shape[0] != chunk.samples.shape[0]
            or following.samples.dtype != chunk.samples.dtype
            or n + following.n_samples > limit
        ):
            break
        pieces.append(queue.receive_nowait())
        n += following.n_samples
        end = following.end_pts
    return chunk if len(pieces) == 1 else AudioChunk.concat(pieces, pts=chunk.pts)


async def _catching_up(queue: Channel, limit_ms: float) -> AsyncIterator[Any]:
    """The items of ``queue``, with the audio queued behind each AudioChunk joined to it."""
    async for item in queue:
        yield _join_queued(item, queue, limit_ms) if type(item) is AudioChunk and queue.queued else item


def _caught_up(source: AsyncIterable[Any], limit_ms: float) -> AsyncIterable[Any]:
    """``source``, joining queued audio when it reads a channel (a Channel, or a Session's output)."""
    if limit_ms <= 0:
        return source
    queue = source if isinstance(source, Channel) else source.__aiter__()
    return _catching_up(queue, limit_ms) if isinstance(queue, Channel) else source


@operator
async def decode(
    source: AsyncIterable[Any],
    *,
    bytes_format: BytesFormat = "pcm_s16le",
    sample_rate: int | None = None,
    channels: int = 1,
    video_format: Literal["bgr24", "rgb24"] = "bgr24",
    catch_up_ms: float = 0.0,
) -> AsyncIterator[Any]:
    """Turn transport payloads into media items.

    Options:
        bytes_format: how ``bytes`` items are read: ``"pcm_s16le"`` or ``"mulaw"`` (G.711).
        sample_rate: rate in Hz of ``bytes`` items (required if any arrive).
        channels: interleaved channel count of PCM ``bytes`` items.
        video_format: channel order of decoded video (``"bgr24"``, FastRTC's, or ``"rgb24"``).
        catch_up_ms: when ``decode`` reads a channel (a session's input, as the
            graph's first stage does) and the graph has fallen behind, join the AudioChunks
            already queued behind this one (same format, contiguous) into one chunk
            of up to this many ms, so later stages catch up in fewer, larger steps
            (the VAD scores several windows in one trip to its engine). Only what
            has already arrived is joined: a graph that keeps up sees the frames as
            they came. ``0`` (default) passes every frame on as it is.

    Audio pts are rebased to a running sample count from 0, so media time is the
    amount of audio received, whatever clock the sender used. Items that are
    already AudioChunk/VideoFrame, and events, pass through.
    """
    next_pts = 0
    async with scoped(_caught_up(source, catch_up_ms)) as items:
        async for item in items:
            if type(item) is AudioChunk:  # the usual case first
                yield item
                continue
            if isinstance(item, (bytes, bytearray, memoryview)):
                if sample_rate is None:
                    raise ConfigurationError("decode needs sample_rate= to read audio bytes")
                if bytes_format == "mulaw":
                    chunk = AudioChunk.from_mulaw(bytes(item), sample_rate, pts=next_pts)
                else:
                    chunk = AudioChunk.from_pcm(bytes(item), sample_rate, channels=channels, pts=next_pts)
            elif isinstance(item, av.AudioFrame):
                chunk = AudioChunk.from_av(item).with_pts(next_pts)
            elif isinstance(item, tuple) and item and isinstance(item[0], (int, np.integer)):
                chunk = AudioChunk.from_tuple(item, pts=next_pts)
            elif isinstance(item, av.VideoFrame):
                yield VideoFrame.from_av(item, format=video_format)
                continue
            else:
                yield item
                continue
            next_pts = chunk.end_pts
            yield chunk


def _convert(chunk: AudioChunk, to: EncodeTarget, dtype: Any) -> Any:
    if to == "chunk":
        return chunk.to_dtype(dtype) if dtype is not None else chunk
    if to == "av":
        return chunk.to_av("s16" if dtype in (None, np.int16) else "flt")
    if to == "pcm":
        return chunk.to_pcm()
    if to == "mulaw":
        return chunk.to_mulaw()
    return chunk.sample_rate, (chunk.samples if dtype is None else chunk.to_dtype(dtype).samples)


@operator
async def encode(
    source: AsyncIterable[Any],
    *,
    sample_rate: int | None = None,
    layout: Layout | None = None,
    frame_ms: float | None = 20.0,
    to: EncodeTarget = "chunk",
    dtype: Any = None,
    catch_up_ms: float = 0.0,
) -> AsyncIterator[Any]:
    """Convert AudioChunks to the rate, layout, frame size and form a transport sends.

    Options:
        sample_rate: output rate in Hz (``None`` keeps each chunk's rate).
        layout: ``"mono"``/``"stereo"`` (``None`` keeps the channel count).
        frame_ms: output frame duration in ms (``None`` keeps chunk sizes).
        to: ``"chunk"`` (AudioChunk), ``"av"`` (``av.AudioFrame``), ``"pcm"``
            (s16le bytes), ``"mulaw"`` (G.711 bytes) or ``"tuple"`` (``(rate, ndarray)``).
        dtype: ``numpy.int16`` or ``numpy.float32`` for chunk/tuple/av output.
        catch_up_ms: when ``encode`` reads a channel (or a session, whose output
            is one, as transports do) and AudioChunks are already queued behind this one (same
            format, contiguous), join them into one chunk of up to this many ms before
            converting, so a reply made faster than it plays is resampled in a few
            calls instead of one per frame. Only what has already arrived is joined,
            never past an event: nothing waits and nothing is reordered. ``0`` (default)
            converts every chunk as it comes.

    An :class:`~flowrtc.events.Interrupt` drops buffered, unplayed samples and passes on,
    so the transport after it can flush its own queue.
    """
    if to not in ("chunk", "av", "pcm", "mulaw", "tuple"):
        raise ConfigurationError(f"encode to= must be chunk, av, pcm, mulaw or tuple, not {to!r}")
    stream = _caught_up(source, catch_up_ms)
    if sample_rate is not None or layout is not None:
        stream = resample.raw(stream, sample_rate, layout=layout)
    if frame_ms is not None:
        stream = rechunk.raw(stream, duration_ms=frame_ms)
    async with scoped(stream) as items:
        async for item in items:
            yield _convert(item, to, dtype) if isinstance(item, AudioChunk) else item


@operator
async def mulaw_encode(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """AudioChunk (mono int16) → G.711 µ-law ``bytes``; other items pass through."""
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                if item.channels != 1:
                    raise MediaError(f"µ-law is mono; got {item.channels} channels (resample to mono first)")
                yield pcm16_to_mulaw(item.to_int16().samples[0]).tobytes()
            else:
                yield item


@operator
async def mulaw_decode(source: AsyncIterable[Any], *, sample_rate: int = 8000) -> AsyncIterator[Any]:
    """G.711 µ-law ``bytes`` → mono int16 AudioChunk at ``sample_rate`` Hz, pts counted in samples."""
    next_pts = 0
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, (bytes, bytearray, memoryview)):
                codes = np.frombuffer(item, np.uint8)
                chunk = AudioChunk(seal(mulaw_to_pcm16(codes)[None, :]), sample_rate, next_pts)
                next_pts = chunk.end_pts
                yield chunk
            else:
                yield item
