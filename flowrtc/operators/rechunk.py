"""``rechunk``: cut audio into frames of one fixed duration."""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Iterator

import numpy as np

from flowrtc.errors import ConfigurationError
from flowrtc.events import Interrupt
from flowrtc.media import AudioChunk, seal
from flowrtc.operators.core import operator, scoped

__all__ = ["rechunk", "Rechunker"]


class Rechunker:
    """Collects samples and hands them out in frames of ``duration_ms``.

    Every sample that goes in comes out once, in order, with continuous pts.
    """

    __slots__ = ("duration_ms", "_pending", "_count", "_rate", "_channels", "_pts", "_dtype")

    def __init__(self, duration_ms: float = 20.0) -> None:
        if duration_ms <= 0:
            raise ConfigurationError(f"rechunk duration_ms must be positive, got {duration_ms}")
        self.duration_ms = duration_ms
        self._pending: list[np.ndarray] = []
        self._count = 0
        self._rate = 0
        self._channels = 0
        self._pts = 0
        self._dtype: Any = None

    def push(self, chunk: AudioChunk) -> list[AudioChunk]:
        """Add ``chunk``; return the whole frames now complete."""
        return list(self.frames(chunk))

    def frames(self, chunk: AudioChunk) -> Iterator[AudioChunk]:
        """Like :meth:`push`, but the frames are made one at a time as they are taken.

        A long reply (25 s is 1250 frames) then never has all its frames alive
        at once: each is made when the consumer asks for it, which keeps a burst
        of output from filling the garbage collector's young generation. The
        chunker's own state moves on before the first frame comes out, so it
        stays right even if the caller stops early.
        """
        flushed: list[AudioChunk] = []
        if (chunk.sample_rate, chunk.channels, chunk.samples.dtype) != (self._rate, self._channels, self._dtype):
            flushed = self.flush()
            self._rate, self._channels, self._dtype = chunk.sample_rate, chunk.channels, chunk.samples.dtype
            self._pts = chunk.pts
        elif chunk.pts != self._pts + self._count:
            # A jump in the timeline: the partial frame ends where its audio ends.
            flushed = self.flush()
            self._pts = chunk.pts
        size = round(self._rate * self.duration_ms / 1000)
        if self._count == 0 and chunk.n_samples == size:
            # The common case (20 ms in, 20 ms out) costs no copy.
            frame = chunk if chunk.pts == self._pts else chunk.with_pts(self._pts)
            self._pts += size
            return iter((*flushed, frame))
        self._pending.append(chunk.samples)
        self._count += chunk.n_samples
        if self._count < size:
            return iter(flushed)
        joined = seal(np.concatenate(self._pending, axis=1)) if len(self._pending) > 1 else self._pending[0]
        whole = (self._count // size) * size
        first_pts, rate = self._pts, self._rate
        self._pts += whole
        rest = joined[:, whole:]
        self._pending = [rest] if rest.shape[1] else []
        self._count = rest.shape[1]
        return _frames(flushed, joined, whole, size, first_pts, rate)

    def flush(self) -> list[AudioChunk]:
        """The samples left over, as one short frame (or nothing)."""
        if not self._count:
            return []
        joined = seal(np.concatenate(self._pending, axis=1))
        chunk = AudioChunk(joined, self._rate, self._pts)
        self._pts += self._count
        self.drop()
        return [chunk]

    def drop(self) -> None:
        """Forget the partial frame."""
        self._pending = []
        self._count = 0


def _frames(flushed: list[AudioChunk], joined: Any, whole: int, size: int, pts: int, rate: int) -> Iterator[AudioChunk]:
    yield from flushed
    for start in range(0, whole, size):
        yield AudioChunk._trusted(joined[:, start : start + size], rate, pts + start)


@operator
async def rechunk(source: AsyncIterable[Any], *, duration_ms: float = 20.0, pad_final: bool = False) -> AsyncIterator[Any]:
    """Re-cut AudioChunks into frames of exactly ``duration_ms`` milliseconds.

    Options:
        duration_ms: frame length in milliseconds (20 ms is what WebRTC and Twilio use).
        pad_final: pad the last, short frame with silence instead of emitting it short.

    Other items pass through in order. An :class:`~flowrtc.events.Interrupt`
    drops the partial frame (it would only have played after the cut).
    """
    chunker = Rechunker(duration_ms)
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                for frame in chunker.frames(item):
                    yield frame
            else:
                if isinstance(item, Interrupt):
                    chunker.drop()
                yield item
    for frame in chunker.flush():
        if pad_final:
            size = round(frame.sample_rate * duration_ms / 1000)
            padded = np.zeros((frame.channels, size), frame.samples.dtype)
            padded[:, : frame.n_samples] = frame.samples
            frame = AudioChunk(seal(padded), frame.sample_rate, frame.pts)
        yield frame
