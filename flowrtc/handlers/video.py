"""Video function handlers: ``fn(frame, *inputs) -> frame`` as a graph.

The function gets each input frame as a BGR ``(h, w, 3)`` uint8 array (a copy
it may change) plus the stream's extra inputs, and returns a frame, a frame
and :class:`~flowrtc.events.AdditionalOutputs`, or ``None`` (nothing to send).
Plain, async, generator and async-generator functions all work; sync code runs
in a worker thread (one per session, so a slow model never holds up the event
loop or another session).

:class:`VideoStreamHandler` adds FastRTC's two options: ``skip_frames`` (a slow
function always gets the newest frame; older ones are dropped, nothing queues)
and ``fps`` (the frame rate of a receive-mode generator).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, AsyncIterable, AsyncIterator, Callable, Sequence

import anyio

from flowrtc.events import Message
from flowrtc.graph import Graph, Ports
from flowrtc.handlers.base import resolve_args
from flowrtc.media import VideoFrame
from flowrtc.operators.codec import decode
from flowrtc.operators.core import scoped
from flowrtc.operators.handler import iterate_call, normalize_output, to_user_input
from flowrtc.operators.video import skip_frames as skip_frames_operator
from flowrtc.session import current_session

__all__ = ["VideoStreamHandler", "video_function_graph", "required_parameters"]


@dataclass
class VideoStreamHandler:
    """A video function with FastRTC's frame-rate options.

    Args:
        callable: ``fn(frame, *inputs)`` returning a frame (send-receive / send), or
            a generator function yielding frames (receive).
        fps: frames per second of a receive-mode generator's output.
        skip_frames: when ``fn`` is slower than the input, call it on the newest
            frame each time and drop the frames that arrived meanwhile.
    """

    callable: Callable[..., Any]
    fps: float = 30
    skip_frames: bool = False

    def graph(self) -> Graph:
        """The graph for this handler: a receive-mode generator, or a frame function."""
        from flowrtc.handlers.generators import receive_graph

        fn = self.callable
        if (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)) and not required_parameters(fn):
            return receive_graph(fn, modality="video", frames_per_s=self.fps)
        return video_function_graph(fn, skip_frames=self.skip_frames)


def required_parameters(fn: Callable[..., Any]) -> int:
    """How many positional arguments ``fn`` cannot do without (0 if its signature is unknown)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return 0
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in signature.parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty)


async def _call_on_frames(
    source: AsyncIterable[Any], fn: Callable[..., Any], defaults: Sequence[Any], limiter: anyio.CapacityLimiter
) -> AsyncIterator[Any]:
    """Call ``fn(image, *inputs)`` per frame, the newest inputs each call."""
    session = current_session()
    required = required_parameters(fn)
    asked = False
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, VideoFrame):
                yield item
                continue
            args = resolve_args(session, defaults)
            if required > 1 + len(args):
                # It needs inputs nobody has set yet: ask once, show the frames as they are meanwhile.
                if not asked and session is not None and not session.phone_mode:
                    asked = True
                    yield Message(type="send_input", data=[], media_time_s=item.media_time_s)
                yield item
                continue
            async with scoped(iterate_call(fn, to_user_input(item), *args, limiter=limiter)) as values:
                async for value in values:
                    for out in normalize_output(value, like=item):
                        yield out


def video_function_graph(fn: Callable[..., Any], *, skip_frames: bool = False, defaults: Sequence[Any] = ()) -> Graph:
    """The graph of a frame function: ``video_in | [skip_frames] | decode | fn``.

    Args:
        fn: ``fn(image, *inputs)``; inputs are the newest ``set_input`` values (or ``defaults``).
        skip_frames: drain the input at each call and keep only the newest frame.
        defaults: the additional inputs' default values.

    Client messages arrive in band on the video input and pass through.
    """
    defaults = list(defaults)

    def build(ports: Ports) -> AsyncIterable[Any]:
        limiter = anyio.CapacityLimiter(1)
        source: AsyncIterable[Any] = ports.video
        if skip_frames:
            source = skip_frames_operator.raw(source)
        return _call_on_frames(decode.raw(source), fn, defaults, limiter)

    return Graph(build=build, name=getattr(fn, "__name__", "video"), modality="video", message_port="video")
