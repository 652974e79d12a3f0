"""``handler``: call a user function per item, off the event loop when it is sync.

User functions come in four kinds — plain, ``async def``, generator and async
generator — and return audio and video in every shape FastRTC allowed.
:func:`iterate_call` runs any of them and :func:`normalize_output` turns what
they produce into items, so every handler kind shares one implementation.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterator, Sequence

import anyio
import anyio.to_thread
import av
import numpy as np

from flowrtc.errors import MediaError
from flowrtc.events import AdditionalOutputs, CloseStream, Event, Utterance
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.core import operator, scoped

__all__ = ["handler", "iterate_call", "normalize_output", "to_user_input"]

_DONE = object()


def _next_or_done(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def _iterate_sync(iterator: Iterator[Any], limiter: anyio.CapacityLimiter | None) -> AsyncIterator[Any]:
    """Step a sync generator in a worker thread, closing it there if we stop early."""
    try:
        while True:
            value = await anyio.to_thread.run_sync(_next_or_done, iterator, limiter=limiter)
            if value is _DONE:
                return
            yield value
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close, limiter=limiter)


async def iterate_call(
    fn: Callable[..., Any], *args: Any, limiter: anyio.CapacityLimiter | None = None
) -> AsyncIterator[Any]:
    """Call ``fn(*args)`` whatever its kind and iterate the values it produces.

    Sync code (plain functions and each step of a sync generator) runs in a
    worker thread; the event loop never waits on user code. A function that
    returns a single value produces that value (``None`` produces nothing).
    """
    if inspect.isasyncgenfunction(fn):
        agen = fn(*args)
        try:
            async for value in agen:
                yield value
        finally:
            with anyio.CancelScope(shield=True):
                await agen.aclose()
        return
    if inspect.isgeneratorfunction(fn):
        result: Any = fn(*args)
    elif inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None)):
        result = await fn(*args)
    else:
        result = await anyio.to_thread.run_sync(lambda: fn(*args), limiter=limiter)
        if inspect.isawaitable(result):
            result = await result
    if hasattr(result, "__anext__"):
        try:
            async for value in result:
                yield value
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(result, "aclose", None)
                if aclose is not None:
                    await aclose()
    elif inspect.isgenerator(result) or _is_plain_iterator(result):
        steps = _iterate_sync(result, limiter)
        try:
            async for value in steps:
                yield value
        finally:
            await steps.aclose()
    elif result is not None:
        yield result


def _is_plain_iterator(value: Any) -> bool:
    """An iterator a function returned (``iter(...)``, ``map(...)``): stepped like a generator."""
    return hasattr(value, "__next__") and hasattr(value, "__iter__")


def normalize_output(value: Any, *, like: Any = None, next_pts: int | None = None) -> list[Any]:
    """Turn one value a user function produced into items.

    Accepts AudioChunk/VideoFrame/events, ``(rate, ndarray[, layout])`` audio,
    ``(h, w, 3)`` uint8 images, PyAV frames, ``AdditionalOutputs``,
    ``CloseStream``, and ``(media, AdditionalOutputs | CloseStream)`` pairs.
    ``like`` is the input item the value answers: images inherit its timing.
    """
    if value is None:
        return []
    if isinstance(value, (Event, AdditionalOutputs)):
        return [value]
    if isinstance(value, AudioChunk):
        return [value if next_pts is None else value.with_pts(next_pts)]
    if isinstance(value, VideoFrame):
        return [value]
    if isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[1], (AdditionalOutputs, CloseStream)):
            return [*normalize_output(value[0], like=like, next_pts=next_pts), value[1]]
        if value and isinstance(value[0], (int, np.integer)) and not isinstance(value[0], bool):
            chunk = AudioChunk.from_tuple(value)
            return [chunk if next_pts is None else chunk.with_pts(next_pts)]
    if isinstance(value, np.ndarray):
        if value.ndim == 3:
            image = value if value.dtype == np.uint8 else np.clip(value, 0, 255).astype(np.uint8)
            if isinstance(like, VideoFrame):
                return [like.with_image(image)]
            return [VideoFrame(np.ascontiguousarray(image))]
        raise MediaError(f"a handler returned an array of shape {value.shape}: audio must be (rate, array), video (h, w, 3)")
    if isinstance(value, av.AudioFrame):
        return [AudioChunk.from_av(value)]
    if isinstance(value, av.VideoFrame):
        return [VideoFrame.from_av(value)]
    raise MediaError(f"a handler produced {type(value).__name__}; expected audio, a video frame or an event")


def to_user_input(item: Any) -> Any:
    """What a FastRTC-style function receives for an item: ``(rate, (1, n) int16)`` audio, a bgr image."""
    if isinstance(item, AudioChunk):
        return item.sample_rate, item.to_int16().samples
    if isinstance(item, Utterance):
        return item.audio.sample_rate, item.audio.to_int16().samples
    if isinstance(item, VideoFrame):
        return np.array(item.image)
    return item


@operator
async def handler(
    source: AsyncIterable[Any],
    fn: Callable[..., Any],
    *,
    on: type | tuple[type, ...] = (AudioChunk, VideoFrame),
    args: Sequence[Any] | Callable[[], Sequence[Any]] = (),
    convert: Callable[[Any], Any] = to_user_input,
    limiter: anyio.CapacityLimiter | None = None,
) -> AsyncIterator[Any]:
    """Call ``fn(item, *args)`` for each item of type ``on`` and emit what it produces.

    Options:
        fn: plain, async, generator or async generator function.
        on: the item types the function handles; all other items pass through.
        args: extra arguments, or a callable returning the current ones
            (how additional inputs set with ``set_input`` reach the next call).
        convert: how an item is handed to ``fn`` (default: FastRTC shapes).
        limiter: anyio CapacityLimiter bounding worker threads for sync code.

    Outputs of one call are emitted in order before the next item is handled.
    Audio a call produces is placed from the input item's media time onward.
    """
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, on):
                yield item
                continue
            extra = args() if callable(args) else args
            next_pts: int | None = None
            values = iterate_call(fn, convert(item), *extra, limiter=limiter)
            try:
                async for value in values:
                    for out in normalize_output(value, like=item):
                        if isinstance(out, AudioChunk):
                            if next_pts is None:
                                next_pts = round(_media_time(item) * out.sample_rate)
                            out = out.with_pts(next_pts)
                            next_pts = out.end_pts
                        yield out
            finally:
                # Close it now, so a user generator stops as soon as we do, not when collected.
                await values.aclose()


def _media_time(item: Any) -> float:
    return float(getattr(item, "media_time_s", 0.0))
