"""Test graphs and operators with recorded media, faster than real time.

``run(graph, audio="talk.wav")`` plays a recording through a graph and returns a
:class:`Recording`: every item the graph emitted with its media time, and the
audio out assembled as a listener would have heard it (replies placed at their
media time, cut where an ``Interrupt`` says playback stopped).

A pytest plugin (loaded automatically once flowrtc is installed) provides the
``record`` fixture (this module's :func:`arun`) and ``record_sync`` (:func:`run`).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import anyio
import av
import numpy as np

from flowrtc.errors import MediaError, SessionClosed
from flowrtc.events import Interrupt
from flowrtc.graph import Graph
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.reply import offline_replies
from flowrtc.operators.resample import Resampler
from flowrtc.session import Session

__all__ = ["load_audio", "save_audio", "load_video", "audio_frames", "Recording", "run", "arun", "media_time"]

_CODECS = {".wav": "pcm_s16le", ".flac": "flac", ".ogg": "libopus", ".opus": "libopus", ".webm": "libopus", ".mp3": "libmp3lame"}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def load_audio(path: str | os.PathLike[str], *, sample_rate: int | None = None, layout: str | None = None) -> AudioChunk:
    """Decode a whole audio file (anything PyAV reads) into one int16 AudioChunk.

    ``sample_rate``/``layout`` convert on the way in (streaming resampler).
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"no audio file at {path}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise MediaError(f"PyAV cannot read {path}: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        converter = Resampler(sample_rate, layout)  # type: ignore[arg-type]
        pieces: list[AudioChunk] = []
        read = 0
        for frame in container.decode(stream):
            chunk = _frame_to_int16(frame).with_pts(read)
            read = chunk.end_pts
            pieces.extend(converter.push(chunk))
        pieces.extend(converter.flush())
    if not pieces:
        raise MediaError(f"{path} contains no audio samples")
    return AudioChunk.concat([p.to_int16() for p in pieces], pts=0)


def _frame_to_int16(frame: av.AudioFrame) -> AudioChunk:
    if frame.format.name in ("s16", "s16p", "flt", "fltp"):
        return AudioChunk.from_av(frame).to_int16()
    converted = av.AudioResampler(format="s16p", layout=frame.layout.name, rate=frame.sample_rate).resample(frame)
    return AudioChunk.concat([AudioChunk.from_av(f) for f in converted])


def save_audio(path: str | os.PathLike[str], audio: AudioChunk | Iterable[AudioChunk]) -> Path:
    """Write audio to a file; the codec follows the extension (wav, flac, ogg/opus, webm, mp3)."""
    path = Path(path)
    codec = _CODECS.get(path.suffix.lower())
    if codec is None:
        raise MediaError(f"cannot tell a codec from {path.suffix!r}; use one of {sorted(_CODECS)}")
    try:
        av.codec.Codec(codec, "w")
    except av.codec.codec.UnknownCodecError:
        raise MediaError(f"this PyAV build has no {codec!r} encoder, so it cannot write {path.suffix} files") from None
    chunks = [audio] if isinstance(audio, AudioChunk) else list(audio)
    if not chunks:
        raise MediaError("nothing to save")
    whole = AudioChunk.concat([c.to_int16() for c in chunks], pts=0)
    rate = whole.sample_rate
    if codec == "libopus" and rate not in _OPUS_RATES:
        rate = 48000
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=whole.layout)
        frame_samples = stream.codec_context.frame_size or 1024
        fmt = stream.codec_context.format.name
        resampler = av.AudioResampler(format=fmt, layout=whole.layout, rate=rate, frame_size=frame_samples if codec != "pcm_s16le" else None)
        for frame in [*resampler.resample(whole.to_av("s16")), *resampler.resample(None)]:
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def load_video(path: str | os.PathLike[str], *, format: str = "bgr24") -> list[VideoFrame]:
    """Decode every frame of a video file."""
    with av.open(str(path)) as container:
        return [VideoFrame.from_av(frame, format=format) for frame in container.decode(video=0)]  # type: ignore[arg-type]


def audio_frames(audio: AudioChunk, *, frame_ms: float = 20.0) -> list[AudioChunk]:
    """Cut audio into ``frame_ms`` frames the way a transport would deliver it."""
    size = max(1, round(audio.sample_rate * frame_ms / 1000))
    return [audio.slice(start, start + size) for start in range(0, audio.n_samples, size)]


def media_time(item: Any) -> float:
    """Seconds of input media time at which an item was emitted (its own timestamp)."""
    return float(getattr(item, "media_time_s", 0.0))


@dataclass
class Recording:
    """What a graph emitted for one recording.

    Attributes:
        items: every output item, in emission order.
        audio: the output audio as heard: chunks placed at their pts, audio
            after each ``Interrupt`` that was already queued removed; ``None`` if
            the graph emitted no audio.
        input_duration_s: length of the input audio.
    """

    items: list[Any] = field(default_factory=list)
    audio: AudioChunk | None = None
    input_duration_s: float = 0.0

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for item in self.items:
            kinds[type(item).__name__] = kinds.get(type(item).__name__, 0) + 1
        counts = ", ".join(f"{name}: {count}" for name, count in kinds.items())
        return f"Recording({len(self.items)} items ({counts}), audio={self.audio!r}, input_duration_s={self.input_duration_s})"

    @property
    def timeline(self) -> list[tuple[float, Any]]:
        """``(media_time_s, item)`` for every event and media item."""
        return [(media_time(item), item) for item in self.items]

    @property
    def events(self) -> list[Any]:
        return [item for item in self.items if not isinstance(item, (AudioChunk, VideoFrame))]

    @property
    def video(self) -> list[VideoFrame]:
        return [item for item in self.items if isinstance(item, VideoFrame)]

    @property
    def audio_chunks(self) -> list[AudioChunk]:
        return [item for item in self.items if isinstance(item, AudioChunk)]

    def of_type(self, *types: type) -> list[Any]:
        return [item for item in self.items if isinstance(item, types)]

    def times(self, *types: type) -> list[float]:
        """Media times of the items of these types."""
        return [media_time(item) for item in self.of_type(*types)]

    def log(self) -> list[str]:
        """The ``log`` messages, in order (``started_talking``, ``pause_detected``, ...)."""
        return [item.data for item in self.items if type(item).__name__ == "Log"]


class _Player:
    """Places output audio at its media time, and cuts it at interrupts."""

    def __init__(self) -> None:
        self.segments: list[list[Any]] = []  # [start_sample, samples]
        self.rate: int | None = None
        self.channels = 1
        self._resampler: Resampler | None = None

    def add(self, chunk: AudioChunk) -> None:
        if self.rate is None:
            self.rate, self.channels = chunk.sample_rate, chunk.channels
            self._resampler = Resampler(self.rate, "mono" if self.channels == 1 else "stereo")
        for piece in self._resampler.push(chunk) if chunk.sample_rate != self.rate else [chunk]:  # type: ignore[union-attr]
            self.segments.append([piece.pts, piece.to_int16().to_layout(self.channels).samples])

    def interrupt(self, media_time_s: float) -> None:
        if self.rate is None:
            return
        cut = round(media_time_s * self.rate)
        for segment in self.segments:
            start, samples = segment
            if start + samples.shape[1] > cut:
                segment[1] = samples[:, : max(0, cut - start)]

    def audio(self) -> AudioChunk | None:
        if self.rate is None:
            return None
        end = max((start + s.shape[1] for start, s in self.segments), default=0)
        begin = min((start for start, _ in self.segments), default=0)
        begin = min(begin, 0)
        out = np.zeros((self.channels, end - begin), np.int16)
        for start, samples in self.segments:
            out[:, start - begin : start - begin + samples.shape[1]] = samples
        return AudioChunk(out, self.rate, begin)


def _as_audio(audio: Any) -> AudioChunk:
    if isinstance(audio, AudioChunk):
        return audio
    if isinstance(audio, tuple):
        return AudioChunk.from_tuple(audio)
    return load_audio(audio)


async def arun(
    graph: Graph,
    audio: Any = None,
    video: Sequence[VideoFrame] | str | os.PathLike[str] | None = None,
    *,
    realtime: bool = False,
    frame_ms: float = 20.0,
    messages: Sequence[tuple[float, Any]] = (),
    inputs: Sequence[tuple[float, Sequence[Any]]] = (),
    trailing_silence_s: float = 0.0,
    timeout_s: float | None = 120.0,
    progress: Callable[[float, float], None] | None = None,
    **session_options: Any,
) -> Recording:
    """Play media through ``graph`` and record what it emits.

    Args:
        graph: the graph under test (a :class:`~flowrtc.graph.Graph`, or anything with ``.graph()``).
        audio: a file path, an AudioChunk or a ``(rate, ndarray)`` tuple, fed in ``frame_ms`` frames.
        video: VideoFrames, or a video file path.
        realtime: pace the input in real time (default: as fast as the graph takes it;
            replies are then judged in media time alone, see
            :func:`~flowrtc.operators.reply.offline_replies`, so the recording does
            not depend on the machine's speed).
        messages: ``(media_time_s, message)`` client messages, delivered in band at that time.
        inputs: ``(media_time_s, args)``: call ``set_input(*args)`` at that media time.
        trailing_silence_s: silence appended to the audio (lets a pause be detected after the last word).
        timeout_s: give up after this many wall-clock seconds (``None``: never).
        progress: called as ``progress(media_time_s, total_s)`` while the input is fed.
        session_options: passed to :class:`~flowrtc.session.Session`.
    """
    if not isinstance(graph, Graph) and hasattr(graph, "graph"):
        graph = graph.graph()
    feed: list[tuple[float, int, Any]] = []
    input_duration = 0.0
    if audio is not None:
        chunk = _as_audio(audio)
        if trailing_silence_s:
            chunk = AudioChunk.concat([chunk.to_int16(), AudioChunk.silence(trailing_silence_s, chunk.sample_rate, channels=chunk.channels)])
        input_duration = chunk.duration_s
        feed += [(frame.media_time_s, 1, frame) for frame in audio_frames(chunk, frame_ms=frame_ms)]
    if video is not None:
        frames = load_video(video) if isinstance(video, (str, os.PathLike)) else list(video)
        feed += [(frame.media_time_s, 1, frame) for frame in frames]
    feed += [(t, 0, ("message", m)) for t, m in messages]
    feed += [(t, 0, ("inputs", a)) for t, a in inputs]
    feed.sort(key=lambda entry: (entry[0], entry[1]))

    recording = Recording(input_duration_s=input_duration)
    player = _Player()

    deadline = anyio.move_on_after(timeout_s if timeout_s is not None else math.inf)
    with deadline, (contextlib.nullcontext() if realtime else offline_replies()):
        await _play_and_record(graph, feed, recording, player, realtime, progress, input_duration, session_options)
    if deadline.cancelled_caught:
        raise TimeoutError(f"the graph had not finished {timeout_s} s after the input started (raise timeout_s, or check for a handler that waits)")
    recording.audio = player.audio()
    return recording


async def _play_and_record(
    graph: Graph,
    feed: list[tuple[float, int, Any]],
    recording: Recording,
    player: _Player,
    realtime: bool,
    progress: Callable[[float, float], None] | None,
    input_duration: float,
    session_options: dict[str, Any],
) -> None:
    async with Session(graph, **session_options) as session:

        async def feeder() -> None:
            try:
                await play(session)
            except SessionClosed:  # the graph ended early (an error, CloseStream): stop feeding
                return

        async def play(session: Session) -> None:
            started = anyio.current_time()
            ports: set[str] = set()
            for at, _, item in feed:
                if progress is not None:
                    progress(at, input_duration)
                if realtime:
                    await anyio.sleep(max(0.0, started + at - anyio.current_time()))
                if isinstance(item, tuple) and item and item[0] == "message":
                    ports.add(session.graph.message_port)
                    await session.send_message(item[1])
                elif isinstance(item, tuple) and item and item[0] == "inputs":
                    await _graph_caught_up(session, ports)
                    session.set_input(*item[1])
                else:
                    ports.add("video" if isinstance(item, VideoFrame) else "audio")
                    await session.send(item)
            await session.end_input()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feeder)
            async for item in session:
                recording.items.append(item)
                if isinstance(item, AudioChunk):
                    player.add(item)
                elif isinstance(item, Interrupt):
                    player.interrupt(item.media_time_s)
            tg.cancel_scope.cancel()


async def _graph_caught_up(session: Session, ports: set[str]) -> None:
    """Wait until the graph has taken every input sent so far on ``ports`` and waits for more.

    A graph runs behind its input buffer: without this, ``set_input`` would
    reach handler calls for audio sent *before* its media time.
    """
    channels = {"audio": session._audio, "video": session._video, "messages": session._messages}
    while True:
        behind = False
        for port in ports:
            channel = channels[port]
            if not channel.receive_closed and (channel.queued or not channel.receivers_waiting):
                behind = True
        if not behind:
            return
        await anyio.sleep(0.001)


def run(graph: Graph, audio: Any = None, video: Any = None, **options: Any) -> Recording:
    """Synchronous :func:`arun` (starts its own event loop)."""
    return anyio.run(lambda: arun(graph, audio, video, **options))

