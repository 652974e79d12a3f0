"""``Graph``: a per-session factory of pipelines between named ports.

A graph names what it consumes (``audio_in``, ``video_in``, ``messages_in``) and
what it produces (``audio_out``, ``video_out``, ``messages_out``). It holds no
per-session state itself: :meth:`Graph.open` builds fresh pipelines each time a
:class:`~flowrtc.session.Session` starts, so two sessions never share an
operator's buffers.

Outputs are one stream per pipeline; the session routes what comes out by type
(AudioChunk → ``audio_out``, VideoFrame → ``video_out``, events →
``messages_out``), keeping events in order with the media they describe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, AsyncIterable, Callable, Literal, Sequence

from flowrtc.errors import GraphError
from flowrtc.operators.core import Pipe

__all__ = ["Graph", "Ports", "PORTS_IN", "PORTS_OUT"]

PORTS_IN = ("audio_in", "video_in", "messages_in")
PORTS_OUT = ("audio_out", "video_out", "messages_out")

PipeLike = Callable[[AsyncIterable[Any]], AsyncIterable[Any]]
Builder = Callable[["Ports"], "AsyncIterable[Any] | Sequence[AsyncIterable[Any]]"]


@dataclass(frozen=True, slots=True)
class Ports:
    """The input streams of one session, handed to a graph's builder."""

    audio: AsyncIterable[Any]
    video: AsyncIterable[Any]
    messages: AsyncIterable[Any]


class Graph:
    """Describe a session's pipelines once; build them fresh per session.

    Use one of three forms:

    * ``Graph(audio=pipe)``: ``pipe`` is applied to ``audio_in`` (client
      messages arrive in band on the same stream);
    * ``Graph(audio=pipe_a, video=pipe_v)``: two independent pipelines;
    * ``Graph(build=fn)``: ``fn(ports)`` returns one output stream or a list
      of them, for anything else (fan-in, fan-out, per-session objects).

    Attributes:
        name: shown in logs and errors.
        modality: ``"audio"``, ``"video"`` or ``"audio-video"``, derived from the pipes
            unless given.
        message_port: where client messages are delivered: the audio stream,
            the video stream, or a separate ``messages`` stream (``build`` graphs).
    """

    __slots__ = ("audio", "video", "build", "name", "modality", "message_port")

    def __init__(
        self,
        audio: PipeLike | None = None,
        video: PipeLike | None = None,
        *,
        build: Builder | None = None,
        name: str = "graph",
        modality: Literal["audio", "video", "audio-video"] | None = None,
        message_port: Literal["audio", "video", "messages"] | None = None,
    ) -> None:
        if build is None and audio is None and video is None:
            raise GraphError("a Graph needs an audio pipe, a video pipe or a build function")
        if build is not None and (audio is not None or video is not None):
            raise GraphError("give either build= or audio=/video= pipes, not both")
        for pipe in (audio, video, build):
            if pipe is not None and not callable(pipe):
                raise GraphError(f"graph pipes must be callable (an operator chain), got {type(pipe).__name__}")
        self.audio = audio
        self.video = video
        self.build = build
        self.name = name
        if modality is None:
            modality = "audio-video" if (audio and video) or build else ("audio" if audio else "video")
        self.modality = modality
        self.message_port: Literal["audio", "video", "messages"] = message_port or (
            "messages" if build is not None else ("audio" if audio is not None else "video")
        )

    def open(self, ports: Ports) -> list[AsyncIterable[Any]]:
        """Build this graph's pipelines for one session."""
        if self.build is not None:
            built = self.build(ports)
            streams = [built] if hasattr(built, "__aiter__") else list(built)  # type: ignore[arg-type]
        else:
            streams = []
            if self.audio is not None:
                streams.append(self.audio(ports.audio))
            if self.video is not None:
                streams.append(self.video(ports.video))
        for stream in streams:
            if not hasattr(stream, "__aiter__"):
                raise GraphError(f"graph {self.name!r} built {type(stream).__name__}, not an async stream")
        return streams

    def __repr__(self) -> str:
        parts = []
        for label, pipe in (("audio", self.audio), ("video", self.video), ("build", self.build)):
            if pipe is not None:
                parts.append(f"{label}={pipe!r}" if isinstance(pipe, Pipe) else f"{label}={getattr(pipe, '__name__', pipe)}")
        return f"Graph({', '.join(parts)}, name={self.name!r})"
