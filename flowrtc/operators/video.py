"""Video operators: ``skip_frames`` (latest wins) and ``fps`` (a steady frame rate).

``skip_frames`` goes right on a session's video input, where frames queue while
a slow handler runs: each time the handler asks for a frame it gets the newest
one, and the older ones are dropped, so nothing ever piles up. ``fps`` gives
frames that have no timing of their own (a generator's) a constant rate: it
stamps them ``1/frames_per_s`` apart and releases each at its time.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable

import anyio

from flowrtc.errors import ConfigurationError, GraphError
from flowrtc.media import VideoFrame
from flowrtc.operators.core import operator, scoped

__all__ = ["skip_frames", "fps"]

_VIDEO_TIME_BASE = Fraction(1, 90000)


@operator
async def skip_frames(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Hand on only the newest queued video frame; drop the older ones.

    The source must be a channel that can be read without waiting (an anyio
    receive stream such as a session's video input): each time downstream asks
    for an item, everything already queued is taken at once, the newest frame
    is kept and the other frames are dropped. Other items (client messages) are
    never dropped and keep their order. No extra buffer is added, so a handler
    taking 200 ms per frame always sees a frame at most one frame-interval old.
    """
    receive_nowait = getattr(source, "receive_nowait", None)
    if receive_nowait is None:
        raise GraphError(
            "skip_frames reads a channel it can drain without waiting (a session's video input); "
            f"got {type(source).__name__}"
        )
    async with scoped(source) as items:
        async for first in items:
            pending = [first]
            while True:
                try:
                    pending.append(receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
            newest = max((i for i, item in enumerate(pending) if isinstance(item, VideoFrame)), default=-1)
            for index, item in enumerate(pending):
                if index == newest or not isinstance(item, VideoFrame):
                    yield item


@operator
async def fps(
    source: AsyncIterable[Any],
    frames_per_s: float = 30.0,
    *,
    max_lag_s: float = 0.2,
    clock: Callable[[], float] = anyio.current_time,
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
) -> AsyncIterator[Any]:
    """Release video frames at ``frames_per_s``, stamped as a constant-rate stream.

    Frame ``n`` gets pts ``n / frames_per_s`` seconds (90 kHz time base) and is
    held until ``n / frames_per_s`` seconds after the first one. A frame that
    comes more than ``max_lag_s`` late (the source was slow) re-anchors the
    clock instead of bursting to catch up. Other items pass at once.

    Options:
        frames_per_s: output frame rate.
        max_lag_s: how late a frame may be before the clock re-anchors, in seconds.
        clock, sleep: injected time source, so tests can jump time.
    """
    if not frames_per_s > 0:
        raise ConfigurationError(f"fps needs frames_per_s > 0, got {frames_per_s!r}")
    interval_s = 1.0 / frames_per_s
    anchor: float | None = None
    count = 0
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, VideoFrame):
                yield item
                continue
            now = clock()
            if anchor is None or now - (anchor + count * interval_s) > max_lag_s:
                anchor = now - count * interval_s
            wait = anchor + count * interval_s - now
            if wait > 0:
                await sleep(wait)
            pts = round(count * interval_s / _VIDEO_TIME_BASE)
            count += 1
            yield dataclasses.replace(item, pts=pts, time_base=_VIDEO_TIME_BASE)
