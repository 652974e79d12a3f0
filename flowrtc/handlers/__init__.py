"""The classic handler API: FastRTC's handler kinds, each a prebuilt graph.

* :class:`StreamHandler` / :class:`AsyncStreamHandler`: ``receive`` / ``emit`` audio handlers.
* :class:`AudioVideoStreamHandler` / :class:`AsyncAudioVideoStreamHandler`: add ``video_receive`` / ``video_emit``.
* :class:`VideoStreamHandler`: a video function with ``skip_frames`` and ``fps``.
* plain functions (``frame -> frame``) and receive-mode generators need no class.

:func:`graph_factory` decides which graph a ``Stream``'s handler becomes.
"""

from flowrtc.handlers.base import (
    AsyncAudioVideoStreamHandler,
    AsyncStreamHandler,
    AudioVideoStreamHandler,
    StreamHandler,
    StreamHandlerBase,
)
from flowrtc.handlers.build import graph_factory
from flowrtc.handlers.driver import stream_handler_graph
from flowrtc.handlers.generators import receive_graph
from flowrtc.handlers.video import VideoStreamHandler, video_function_graph

__all__ = [
    "AsyncAudioVideoStreamHandler",
    "AsyncStreamHandler",
    "AudioVideoStreamHandler",
    "StreamHandler",
    "StreamHandlerBase",
    "VideoStreamHandler",
    "graph_factory",
    "receive_graph",
    "stream_handler_graph",
    "video_function_graph",
]
