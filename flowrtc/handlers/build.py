"""Which graph a handler becomes.

``graph_factory(handler, modality=..., mode=...)`` validates FastRTC's modality ×
mode × handler table once, at ``Stream`` construction, and returns a function
that builds a fresh graph per session:

============  ===============================  ==================  ======================
modality      send-receive                     send                receive
============  ===============================  ==================  ======================
audio         StreamHandler / AsyncStream-     same                generator function
              Handler (ReplyOnPause, ...)
video         ``fn(frame, *inputs)`` or        same                generator function or
              VideoStreamHandler                                   VideoStreamHandler
audio-video   (Async)AudioVideoStreamHandler   not supported       not supported
============  ===============================  ==================  ======================

A :class:`~flowrtc.graph.Graph` is accepted for any combination. In ``send``
mode the client receives no media: the graph's audio and video are dropped,
its events (additional outputs, messages) still go out. The graphs themselves
are built in :mod:`flowrtc.handlers.driver` (stream handlers),
:mod:`flowrtc.handlers.video` and :mod:`flowrtc.handlers.generators`.
"""

from __future__ import annotations

import inspect
from typing import Any, AsyncIterable, AsyncIterator, Callable

from flowrtc.errors import ConfigurationError
from flowrtc.graph import Graph
from flowrtc.handlers.base import AsyncAudioVideoStreamHandler, AudioVideoStreamHandler, StreamHandlerBase, missing_methods
from flowrtc.inputs import input_values
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.core import operator, scoped

__all__ = ["graph_factory", "default_modality", "drop_media", "has_video_methods"]


# ---------------------------------------------------------------------------- dispatch
def graph_factory(handler: Any, *, modality: str, mode: str, stream: Any = None) -> Callable[[], Graph]:
    """Return a per-session graph builder for ``handler``, or raise ConfigurationError."""
    from flowrtc.handlers.generators import receive_graph
    from flowrtc.handlers.video import VideoStreamHandler, video_function_graph

    defaults = input_values(getattr(stream, "additional_inputs", None) or [])
    if isinstance(handler, Graph):
        return lambda: _for_mode(handler, mode)
    if modality == "audio-video" and mode != "send-receive":
        raise ConfigurationError(
            f"modality='audio-video' supports mode='send-receive' only (got mode={mode!r}); "
            "use modality='audio' or 'video' for one-way streams"
        )
    if isinstance(handler, VideoStreamHandler):
        if modality != "video":
            raise ConfigurationError(f"VideoStreamHandler serves modality='video', not {modality!r}")
        if mode == "receive":
            _require_generator(handler.callable, "VideoStreamHandler in receive mode")
            return lambda: receive_graph(handler.callable, modality="video", frames_per_s=handler.fps, defaults=defaults)
        return lambda: _for_mode(
            video_function_graph(handler.callable, skip_frames=handler.skip_frames, defaults=defaults), mode
        )
    if isinstance(handler, StreamHandlerBase) or _is_handler_object(handler):
        return _stream_handler_factory(handler, modality=modality, mode=mode, defaults=defaults)
    if callable(handler):
        if modality == "audio-video":
            raise ConfigurationError(
                "modality='audio-video' needs an AudioVideoStreamHandler or AsyncAudioVideoStreamHandler, "
                f"not a function ({_name(handler)})"
            )
        if mode == "receive":
            _require_generator(handler, f"modality={modality!r}, mode='receive'")
            return lambda: receive_graph(handler, modality=modality, defaults=defaults)
        if modality == "audio":
            raise ConfigurationError(
                f"modality='audio', mode={mode!r} needs a StreamHandler or AsyncStreamHandler, not a function "
                f"({_name(handler)}); to answer each user turn, wrap it: ReplyOnPause({_name(handler)})"
            )
        return lambda: _for_mode(video_function_graph(handler, skip_frames=False, defaults=defaults), mode)
    raise ConfigurationError(
        f"cannot serve a {type(handler).__name__} handler with modality={modality!r}, mode={mode!r}"
    )


def default_modality(handler: Any) -> str:
    """The modality a handler serves when ``Stream`` is not told: FastRTC's default (video) for functions."""
    if isinstance(handler, Graph):
        return handler.modality
    if isinstance(handler, StreamHandlerBase) or _is_handler_object(handler):
        return "audio-video" if has_video_methods(handler) else "audio"
    return "video"


def _is_handler_object(handler: Any) -> bool:
    # Handler classes that do not derive from StreamHandlerBase but build their own graph.
    return not inspect.isroutine(handler) and callable(getattr(handler, "graph", None)) and callable(getattr(handler, "copy", None))


def has_video_methods(handler: Any) -> bool:
    return isinstance(handler, (AudioVideoStreamHandler, AsyncAudioVideoStreamHandler)) or (
        callable(getattr(handler, "video_receive", None)) and callable(getattr(handler, "video_emit", None))
    )


def _stream_handler_factory(handler: Any, *, modality: str, mode: str, defaults: list[Any]) -> Callable[[], Graph]:
    kind = type(handler).__name__
    if modality == "video":
        raise ConfigurationError(
            f"{kind} is an audio handler; modality='video' needs a function frame -> frame or a "
            "VideoStreamHandler (for audio and video together use modality='audio-video')"
        )
    if modality == "audio-video" and not has_video_methods(handler):
        raise ConfigurationError(f"modality='audio-video' needs an AudioVideoStreamHandler or AsyncAudioVideoStreamHandler, not {kind}")
    if mode == "receive":
        raise ConfigurationError(
            f"mode='receive' streams from the server only: its handler is a generator function yielding "
            f"audio, not a {kind}"
        )
    if isinstance(handler, StreamHandlerBase) and type(handler).graph is StreamHandlerBase.graph:
        missing = missing_methods(handler)
        if missing:
            raise ConfigurationError(f"{kind} must implement {', '.join(missing)}")

    def make() -> Graph:
        session_handler = handler.copy()
        if session_handler is None or session_handler is handler:
            raise ConfigurationError(f"{kind}.copy() must return a new handler for each connection")
        if isinstance(session_handler, StreamHandlerBase):
            session_handler._input_defaults = defaults
        return _for_mode(session_handler.graph(), mode)

    return make


def _require_generator(fn: Any, what: str) -> None:
    target = getattr(fn, "__call__", None) if not inspect.isroutine(fn) and not hasattr(fn, "func") else fn
    for candidate in (fn, target):
        if candidate is not None and (inspect.isgeneratorfunction(candidate) or inspect.isasyncgenfunction(candidate)):
            return
    raise ConfigurationError(f"{what} needs a generator function (sync or async) that yields frames, not {_name(fn)}")


def _name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _for_mode(graph: Graph, mode: str) -> Graph:
    if mode != "send":
        return graph
    return Graph(
        build=lambda ports: [drop_media(stream) for stream in graph.open(ports)],
        name=graph.name,
        modality=graph.modality,
        message_port=graph.message_port,
    )


@operator
async def drop_media(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Drop audio and video, keep events (``send`` mode: the client receives no media)."""
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, (AudioChunk, VideoFrame)):
                yield item
