"""``resample``: stateful streaming sample-rate and layout conversion.

One ``av.AudioResampler`` per stream keeps its filter state across frames, so
there are no clicks at frame edges (measured bit-exact against converting the
whole signal at once; see ``benchmarks/bench_operators.py`` for its cost).
"""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator

import av
import numpy as np

from flowrtc.errors import MediaError
from flowrtc.events import Interrupt
from flowrtc.media import AudioChunk, Layout, seal
from flowrtc.operators.core import operator, scoped

__all__ = ["resample", "Resampler"]

_LAYOUT_NAMES = {1: "mono", 2: "stereo"}


class Resampler:
    """Converts a stream of AudioChunks to one rate and layout, keeping filter state.

    Output pts run on at the output rate from the first input's position; the
    output dtype follows the input's (int16 stays int16, float32 stays float32).
    """

    __slots__ = ("sample_rate", "layout", "_av", "_key", "_next_pts", "_expected_in_pts")

    def __init__(self, sample_rate: int | None = None, layout: Layout | None = None) -> None:
        self.sample_rate = sample_rate
        self.layout = layout
        self._av: av.AudioResampler | None = None
        self._key: tuple[int, int, Any] | None = None
        self._next_pts: int | None = None
        self._expected_in_pts: int | None = None

    def push(self, chunk: AudioChunk) -> list[AudioChunk]:
        rate = self.sample_rate or chunk.sample_rate
        channels = chunk.channels if self.layout is None else (1 if self.layout == "mono" else 2)
        if rate == chunk.sample_rate and channels == chunk.channels and self._av is None:
            return [chunk]
        if channels != chunk.channels and rate == chunk.sample_rate and self._av is None:
            return [chunk.to_layout(channels)]
        if chunk.channels not in _LAYOUT_NAMES or channels not in _LAYOUT_NAMES:
            raise MediaError(f"resample converts mono and stereo audio, not {chunk.channels} channels")
        key = (chunk.sample_rate, chunk.channels, chunk.samples.dtype)
        out: list[AudioChunk] = []
        if self._key != key:
            out.extend(self.flush())
            self._key = key
            fmt = "s16p" if chunk.samples.dtype == np.int16 else "fltp"
            self._av = av.AudioResampler(format=fmt, layout=_LAYOUT_NAMES[channels], rate=rate)
            self._next_pts = round(chunk.pts * rate / chunk.sample_rate)
        elif chunk.pts != self._expected_in_pts:
            # A jump in the input timeline (a new reply placed later): follow it.
            self._next_pts = round(chunk.pts * rate / chunk.sample_rate)
        self._expected_in_pts = chunk.end_pts
        frame = self._to_av(chunk)
        for resampled in self._av.resample(frame):  # type: ignore[union-attr]
            out.append(self._wrap(resampled, rate))
        return out

    def flush(self) -> list[AudioChunk]:
        """Drain the samples the filter still holds (call at end of stream)."""
        if self._av is None:
            return []
        rate = self._av.rate
        out = [self._wrap(frame, rate) for frame in self._av.resample(None)]
        self._av = None
        self._key = None
        return out

    def reset(self) -> None:
        """Forget buffered samples and filter state (after an Interrupt)."""
        self._av = None
        self._key = None

    @staticmethod
    def _to_av(chunk: AudioChunk) -> av.AudioFrame:
        # Cheaper than AudioChunk.to_av: the filter keeps its own timeline, so no pts.
        fmt = "s16p" if chunk.samples.dtype == np.int16 else "fltp"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.samples), format=fmt, layout=_LAYOUT_NAMES[chunk.channels])
        frame.sample_rate = chunk.sample_rate
        return frame

    def _wrap(self, frame: av.AudioFrame, rate: int) -> AudioChunk:
        pts = self._next_pts or 0
        dtype = np.int16 if frame.format.name == "s16p" else np.float32
        # One copy per plane straight from the frame's buffers (to_ndarray stacks through vstack).
        samples = np.empty((len(frame.planes), frame.samples), dtype)
        for index, plane in enumerate(frame.planes):
            samples[index] = np.frombuffer(plane, dtype, frame.samples)
        chunk = AudioChunk(seal(samples), rate, pts)
        self._next_pts = pts + chunk.n_samples
        return chunk


@operator
async def resample(
    source: AsyncIterable[Any], sample_rate: int | None = None, *, layout: Layout | None = None
) -> AsyncIterator[Any]:
    """Convert every AudioChunk to ``sample_rate`` (Hz) and ``layout``; pass other items.

    Options:
        sample_rate: target rate in Hz; ``None`` keeps each chunk's rate.
        layout: ``"mono"`` or ``"stereo"``; ``None`` keeps the channel count.

    An :class:`~flowrtc.events.Interrupt` drops what the filter holds, since
    that audio was never going to play.
    """
    resampler = Resampler(sample_rate, layout)
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                for chunk in resampler.push(item):
                    yield chunk
            else:
                if isinstance(item, Interrupt):
                    resampler.reset()
                yield item
    for chunk in resampler.flush():
        yield chunk
