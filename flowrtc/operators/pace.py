"""``pace``: release items in real time, for output to a live listener."""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Awaitable, Callable

import anyio

from flowrtc.events import Interrupt
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.core import operator, scoped

__all__ = ["pace"]


@operator
async def pace(
    source: AsyncIterable[Any],
    *,
    max_lag_s: float = 0.2,
    lead_s: float = 0.0,
    clock: Callable[[], float] = anyio.current_time,
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
) -> AsyncIterator[Any]:
    """Hold each audio chunk / video frame until its turn in real time.

    Audio is timed by the duration played so far (so gaps between replies are
    not "caught up"); video by the pts distance from the previous frame.

    Options:
        max_lag_s: when the output falls this far behind (the source was idle,
            or the consumer was slow), the clock re-anchors instead of bursting.
        lead_s: release this much ahead of real time (a small client-side
            buffer absorbs network jitter).
        clock, sleep: injected time source, so tests can jump time.

    Events pass at once; an :class:`~flowrtc.events.Interrupt` re-anchors the clock.
    """
    audio_due: float | None = None
    video_due: float | None = None
    last_video_s = 0.0
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                now = clock()
                if audio_due is None or now - audio_due > max_lag_s:
                    audio_due = now
                wait = audio_due - lead_s - now
                if wait > 0:
                    await sleep(wait)
                audio_due += item.duration_s
            elif isinstance(item, VideoFrame):
                now = clock()
                frame_s = item.media_time_s
                if video_due is None or now - video_due > max_lag_s:
                    video_due = now
                else:
                    video_due += max(0.0, frame_s - last_video_s)
                last_video_s = frame_s
                wait = video_due - now
                if wait > 0:
                    await sleep(wait)
            elif isinstance(item, Interrupt):
                audio_due = None
            yield item
