"""WebRTC transport over aiortc: signalling results, peers, and the session they feed.

The adapter only converts. Each peer connection is one
``stream.session(webrtc_id, transport="webrtc")``:

* input: every decoded aiortc frame becomes an AudioChunk (48 kHz int16, mono
  unless the client declared stereo Opus; pts = samples received) or a
  VideoFrame (bgr24) and goes to the session; the graph resamples. Audio is
  decoded in the loop's shared thread and each frame goes into the session
  from that thread's callback (:class:`_AudioInlet`); video is read from
  aiortc's (unbounded) queue by a task per track. Either way a bounded buffer
  drops the oldest frame when the graph falls more than
  ``input_buffer_frames`` behind.
* output: AudioChunks (what is queued joined, ``encode(catch_up_ms=)``) → 20 ms
  48 kHz frames → :class:`AudioOutputTrack` (bounded, paced by wall clock,
  Opus-encoded by the track when Opus was negotiated, mono unless the offer asks
  for ``stereo=1``, silent while idle); VideoFrames → :class:`VideoOutputTrack`
  (latest wins); ``Interrupt`` flushes unplayed audio; events become
  FastRTC's data-channel messages (``adapters.messages.to_wire``).
* lifecycle: the session ends when the connection fails or closes, when the
  peer is not connected within ``connect_timeout_s``, or when the graph ends
  (``CloseStream``, an error, the time limit); then everything is closed.

The data channel is optional: media flows without one; messages sent before a
channel opens are kept (up to ``pending_messages``) and delivered when it does.
Signalling results use FastRTC's JSON (``{"status": "failed", "meta": {...}}``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from flowrtc.adapters import OUTPUT_CATCH_UP_MS
from flowrtc.adapters.messages import encode_message, to_wire
from flowrtc.adapters.webrtc_signalling import SignallingError, declares_stereo, first_audio_codec, offered_kinds, parse_candidate, prefers_stereo
from flowrtc.adapters.webrtc_tracks import (
    OPUS_INPUT_RATES,
    AudioFrameEncoder,
    AudioOutputTrack,
    VideoOutputTrack,
    chunk_from_frame,
    decode_audio_shared,
    hold_audio_packets,
    frame_samples,
)
from flowrtc.channel import Channel
from flowrtc.errors import ConfigurationError, SessionClosed
from flowrtc.events import CloseStream, Error, Interrupt
from flowrtc.hub import ConcurrencyLimitReached, ConnectionExists
from flowrtc.ice import aiortc_configuration
from flowrtc.limits import RateLimiter
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.codec import encode
from flowrtc.operators.core import scoped

__all__ = ["WebRTCOptions", "WebRTCTransport", "SignallingError", "webrtc_transport"]

logger = logging.getLogger("flowrtc.webrtc")


@dataclass(frozen=True)
class WebRTCOptions:
    """Settings of the WebRTC transport of one Stream.

    Attributes:
        connect_timeout_s: a peer not connected this long after its offer is closed
            and frees its slot (FastRTC: 30 s).
        audio_queue_ms: output audio queued ahead of playback, in ms (a multiple of
            20); the graph waits when it is full.
        input_buffer_frames: input frames buffered per track when the graph is
            slower than real time; past that the oldest are dropped.
        max_video_fps: most output video frames sent per second.
        pending_messages: data-channel messages kept until a channel opens.
        close_grace_s: time given to final messages and queued audio before closing.
        max_negotiating: peers allowed to be negotiating (offered, not yet connected)
            at once; more offers are refused with ``too_many_pending_connections``
            (a flood of offers cannot pile up peer connections, whatever the
            stream's ``concurrency_limit``).
        held_audio_packets: received audio packets held back before one is decoded:
            the buffer releases packets in order only, and waits for this many newer
            ones first. aiortc's default, 4, is 80 ms more at the end of every turn;
            1 (20 ms) is its least. A server reads speech rather than playing it, so it
            needs no more for reordering, which the buffer handles either way.
    """

    connect_timeout_s: float = 30.0
    audio_queue_ms: int = 200
    input_buffer_frames: int = 50
    max_video_fps: float = 60.0
    pending_messages: int = 64
    close_grace_s: float = 1.0
    max_negotiating: int = 100
    held_audio_packets: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.held_audio_packets, int) or not 1 <= self.held_audio_packets <= 8:
            raise ConfigurationError(f"held_audio_packets must be a whole number of packets from 1 to 8, got {self.held_audio_packets!r}")


@dataclass(eq=False)
class Peer:
    """One peer connection and what it feeds (also the session's ``transport``)."""

    webrtc_id: str
    pc: RTCPeerConnection
    options: WebRTCOptions
    channel: Any = None
    audio_out: AudioOutputTrack | None = None
    video_out: VideoOutputTrack | None = None
    remote_tracks: list[Any] = field(default_factory=list)
    described: anyio.Event = field(default_factory=anyio.Event)
    connected: anyio.Event = field(default_factory=anyio.Event)
    ended: anyio.Event = field(default_factory=anyio.Event)
    end_reason: str = ""
    pending: list[str] = field(default_factory=list)
    inbox: Any = None  # client messages for the session (bounded)
    rate: RateLimiter | None = None  # client messages per second (Stream.limits)
    stereo_input: bool = False  # the client declared stereo Opus (sprop-stereo=1)
    inlets: dict[Any, _AudioInlet] = field(default_factory=dict)  # remote audio track -> its inlet

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    def send_message(self, message: dict[str, Any]) -> None:
        """Send a FastRTC message on the data channel, or keep it until one opens."""
        text = encode_message(message)
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            try:
                channel.send(text)
            except Exception as exc:  # the transport closed under us; the peer is ending anyway
                logger.debug("webrtc peer %s: message not sent: %s", self.webrtc_id, exc)
        elif len(self.pending) < self.options.pending_messages:
            self.pending.append(text)

    def _flush_pending(self) -> None:
        while self.pending and self.channel is not None and self.channel.readyState == "open":
            self.channel.send(self.pending.pop(0))


class _AudioInlet:
    """One remote audio track's decoded frames, put into the session as they come.

    :meth:`push_samples` is the shared decoding thread's callback (on the loop;
    the thread has already turned each frame into samples): each frame becomes
    an AudioChunk and goes straight into the session's input when
    it has room, with no task in between. Frames that find it full (or come
    before the session starts) wait in ``backlog``, which drops the oldest past
    ``size``, and :meth:`run` feeds them in order as the graph catches up.
    """

    __slots__ = ("mono", "pts", "session", "backlog", "draining")

    def __init__(self, *, mono: bool, size: int) -> None:
        self.mono = mono
        self.pts = 0
        self.session: Any = None
        self.backlog = Channel(size, drop_oldest=True)
        self.draining = False  # run() is handing a backlog frame over: later frames queue behind it

    def push(self, frame: Any) -> None:
        """Put one decoded frame in."""
        self.push_samples((frame_samples(frame, mono=self.mono), frame.sample_rate))

    def push_samples(self, decoded: tuple[Any, int]) -> None:
        """Put one frame's ``(samples, sample_rate)`` in (as converted by the codec thread)."""
        samples, rate = decoded
        chunk = AudioChunk(samples, rate, self.pts)
        self.pts += samples.shape[1]
        session = self.session
        if session is not None and not self.draining and not self.backlog.queued:
            try:
                session.send_nowait(chunk)
                return
            except anyio.WouldBlock:
                pass
            except SessionClosed:
                return
        try:
            self.backlog.put_nowait(chunk)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the track has ended

    async def run(self, session: Any, track: Any) -> None:
        """Feed ``session`` until ``track`` ends and the backlog is empty."""
        self.session = session
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_end, track)
            async for chunk in self.backlog:
                self.draining = True
                try:
                    await session.send(chunk)
                except SessionClosed:
                    group.cancel_scope.cancel()
                    return
                finally:
                    self.draining = False

    async def _watch_end(self, track: Any) -> None:
        try:
            while True:  # frames only come this way if the decoder hands them to the track
                self.push(await track.recv())
        except MediaStreamError:
            pass
        finally:
            self.backlog.close_send()


_transports: weakref.WeakKeyDictionary[Any, WebRTCTransport] = weakref.WeakKeyDictionary()


def webrtc_transport(stream: Any, options: WebRTCOptions | None = None) -> WebRTCTransport:
    """The WebRTC transport of ``stream`` (one per Stream, shared by every app it is mounted on)."""
    transport = _transports.get(stream)
    if transport is None:
        transport = _transports[stream] = WebRTCTransport(stream, options)
    elif options is not None and options != transport.options:
        transport.options = options
    return transport


class WebRTCTransport:
    """The live peers of one Stream, and the task group they run in.

    The task group lives in a supervisor task started by the first offer, so
    the transport works wherever the app is mounted; :meth:`aclose` (wired to
    the app's lifespan) closes every peer.
    """

    def __init__(self, stream: Any, options: WebRTCOptions | None = None) -> None:
        self.stream = stream
        self.options = options or WebRTCOptions()
        self.peers: dict[str, Peer] = {}
        self._task_group: TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    # -- supervisor ------------------------------------------------------------------
    async def _ensure_running(self) -> TaskGroup:
        supervisor = self._supervisor
        loop = asyncio.get_running_loop()
        # (A supervisor of another, finished event loop, e.g. a previous test client's, is left behind.)
        if self._task_group is not None and supervisor is not None and not supervisor.done() and supervisor.get_loop() is loop:
            return self._task_group
        ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._supervisor = loop.create_task(self._supervise(ready, self._stop), name="flowrtc-webrtc-peers")
        await ready.wait()
        assert self._task_group is not None
        return self._task_group

    async def _supervise(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        try:
            async with anyio.create_task_group() as group:
                self._task_group = group
                ready.set()
                await stop.wait()
                group.cancel_scope.cancel()
        finally:
            self._task_group = None

    async def aclose(self) -> None:
        """Close every peer and stop the supervisor."""
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None or supervisor.done():
            return
        assert self._stop is not None
        self._stop.set()
        await asyncio.wait([supervisor], timeout=10)

    # -- signalling ------------------------------------------------------------------
    async def offer(self, webrtc_id: str, sdp: str) -> dict[str, Any]:
        """Answer an offer: ``{"sdp", "type": "answer"}``; raises :class:`SignallingError`."""
        kinds = offered_kinds(sdp)
        wanted = {"audio": {"audio"}, "video": {"video"}, "audio-video": {"audio", "video"}}[self.stream.modality]
        extra = sorted(set(kinds) - wanted - {"application"})
        if extra and not self.stream.allow_extra_tracks:
            raise SignallingError("unsupported_track", detail=f"this stream takes {self.stream.modality}; the offer also has {', '.join(extra)}")
        negotiating = sum(1 for peer in self.peers.values() if not peer.connected.is_set())
        if negotiating >= self.options.max_negotiating:
            raise SignallingError("too_many_pending_connections", limit=self.options.max_negotiating)
        group = await self._ensure_running()
        try:
            return await group.start(self._run_peer, webrtc_id, sdp)
        except ConcurrencyLimitReached as exc:
            raise SignallingError("concurrency_limit_reached", limit=exc.limit) from None
        except ConnectionExists:
            raise SignallingError("connection_already_exists") from None
        except SignallingError:
            raise
        except (ValueError, AttributeError, KeyError, IndexError) as exc:
            raise SignallingError("invalid_sdp", detail=str(exc) or type(exc).__name__) from None

    async def add_candidate(self, webrtc_id: str, candidate: dict[str, Any] | None) -> dict[str, Any]:
        """Add a trickled client ICE candidate; an empty one means end-of-candidates."""
        peer = self.peers.get(webrtc_id)
        if peer is None:
            raise SignallingError("unknown_connection")
        parsed = parse_candidate(candidate)
        if peer.ended.is_set() or peer.pc.connectionState == "closed":
            raise SignallingError("connection_closed")
        with anyio.move_on_after(10):
            await peer.described.wait()
        if not peer.described.is_set() or peer.ended.is_set() or peer.pc.connectionState == "closed":
            raise SignallingError("connection_closed")
        try:
            await peer.pc.addIceCandidate(parsed)
        except ValueError as exc:
            raise SignallingError("invalid_candidate_format", detail=str(exc)) from None
        return {"status": "success"}

    def close_peer(self, webrtc_id: str, reason: str = "closed by the server") -> bool:
        """End one connection (its session ends too); ``False`` if it is unknown."""
        peer = self.peers.get(webrtc_id)
        if peer is None:
            return False
        peer.end(reason)
        return True

    def statistics(self) -> dict[str, Any]:
        """Per-peer counters (queue depth, frames played, pauses, clock re-anchors, where Opus was encoded) for monitoring."""
        stats: dict[str, Any] = {}
        for webrtc_id, peer in self.peers.items():
            audio = peer.audio_out
            stats[webrtc_id] = {
                "state": peer.pc.connectionState,
                "audio_queued": audio.queued if audio else 0,
                "audio_played": audio.frames_played if audio else 0,
                "audio_primers": audio.primers if audio else 0,
                "audio_idle_s": audio.idle_s if audio else 0.0,
                "audio_reanchors": audio.reanchors if audio else 0,
                "audio_encoded_ahead": audio.encoded_ahead if audio else 0,
                "audio_encoded_on_loop": audio.encoded_on_loop if audio else 0,
                "video_sent": peer.video_out.frames_sent if peer.video_out else 0,
            }
        return stats

    # -- one peer --------------------------------------------------------------------
    async def _run_peer(self, webrtc_id: str, sdp: str, *, task_status: TaskStatus[dict[str, Any]]) -> None:
        stream = self.stream
        pc = RTCPeerConnection(aiortc_configuration(stream.server_rtc_configuration))
        peer = Peer(webrtc_id, pc, self.options)
        refusal: Exception | None = None
        started = False
        try:
            # A short session output queue: an Interrupt overtakes at most a few queued
            # frames before it reaches the track queue, which it flushes.
            # No transport_object: FastRTC code reads get_current_context().websocket to tell a
            # WebSocket or phone call from WebRTC, where it is None.
            async with stream.session(webrtc_id, transport="webrtc", output_buffer=4) as session:
                self.peers[webrtc_id] = peer
                try:
                    answer = await self._negotiate(peer, sdp)
                except Exception as exc:  # raised to the offer's caller once the session is closed
                    refusal = exc
                else:
                    started = True
                    task_status.started(answer)
                    await self._serve(peer, session)
                finally:
                    if self.peers.get(webrtc_id) is peer:
                        del self.peers[webrtc_id]
        except Exception:
            if started:
                logger.exception("webrtc peer %s failed", webrtc_id)
            elif refusal is None:
                raise  # the session could not open (limits, a graph that fails to build)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                for track in (peer.audio_out, peer.video_out):
                    if track is not None:
                        track.stop()
                try:
                    await pc.close()
                except Exception as exc:  # noqa: BLE001 - must not replace the refusal, or end the other peers' task group
                    # aiortc stops part-way on some malformed offers (a transceiver its BUNDLE
                    # left without a transport); nothing of it is left running by then.
                    logger.debug("webrtc peer %s: closing raised %r", webrtc_id, exc)
            logger.debug("webrtc peer %s closed (%s)", webrtc_id, peer.end_reason or "shutdown")
        if refusal is not None:
            raise refusal

    async def _negotiate(self, peer: Peer, sdp: str) -> dict[str, Any]:
        pc = peer.pc
        stream = self.stream
        kinds_in = {"audio": {"audio"}, "video": {"video"}, "audio-video": {"audio", "video"}}[stream.modality]

        @pc.on("track")
        def on_track(track: Any) -> None:
            peer.remote_tracks.append(track)

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            peer.channel = channel
            channel.on("message", lambda message: self._on_client_message(peer, message))
            channel.on("open", peer._flush_pending)
            peer._flush_pending()

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected":
                peer.connected.set()
            elif state in ("failed", "closed"):
                peer.end(f"connection {state}")

        peer.stereo_input = declares_stereo(sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio":
                hold_audio_packets(transceiver.receiver, self.options.held_audio_packets)
                inlet = _AudioInlet(mono=not peer.stereo_input, size=max(1, self.options.input_buffer_frames))
                if decode_audio_shared(transceiver.receiver, mono=inlet.mono, deliver=inlet.push_samples, as_samples=True):
                    peer.inlets[transceiver.receiver.track] = inlet
        if stream.mode != "send":
            for transceiver in pc.getTransceivers():
                kind = transceiver.kind
                if kind not in kinds_in or transceiver.sender.track is not None:
                    continue
                if kind == "audio" and peer.audio_out is None:
                    peer.audio_out = AudioOutputTrack(max(1, self.options.audio_queue_ms // 20))
                    pc.addTrack(peer.audio_out)
                elif kind == "video" and peer.video_out is None:
                    peer.video_out = VideoOutputTrack(self.options.max_video_fps)
                    pc.addTrack(peer.video_out)
        await pc.setLocalDescription(await pc.createAnswer())
        if peer.audio_out is not None and first_audio_codec(pc.localDescription.sdp) == "audio/opus":
            peer.audio_out.encode_opus(mono=not prefers_stereo(sdp))
        peer.described.set()
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    def _on_client_message(self, peer: Peer, message: Any) -> None:
        text = message if isinstance(message, str) else bytes(message).decode("utf-8", "replace")
        limits = getattr(self.stream, "limits", None)
        if limits is not None:
            if len(text.encode()) > limits.max_message_bytes:
                notice = f"a message over {limits.max_message_bytes} bytes was ignored"
                peer.send_message({"type": "warning", "message": notice, "data": notice})
                return
            if peer.rate is None:
                peer.rate = RateLimiter(limits.max_messages_per_s, limits.message_burst)
            if not peer.rate.allow():
                return
        # FastRTC's one reaction to client text, kept for clients that wait for it.
        peer.send_message({"type": "log", "data": f"Server received: {text}"})
        if peer.inbox is not None:
            try:
                peer.inbox.send_nowait(text)
            except anyio.WouldBlock:
                logger.warning("webrtc peer %s: client messages arrive faster than the graph reads them; dropped one", peer.webrtc_id)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def _serve(self, peer: Peer, session: Any) -> None:
        stream = self.stream
        wanted = {"audio": {"audio"}, "video": {"video"}, "audio-video": {"audio", "video"}}[stream.modality]
        inbox_send, inbox_receive = anyio.create_memory_object_stream[str](16)
        peer.inbox = inbox_send
        with inbox_send, inbox_receive:
            await self._serve_tasks(peer, session, inbox_receive, wanted)

    async def _serve_tasks(self, peer: Peer, session: Any, inbox: Any, wanted: set[str]) -> None:
        stream = self.stream
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_connect, peer)
            group.start_soon(self._pump_output, peer, session)
            group.start_soon(self._pump_messages, session, inbox)
            readers = []
            for track in peer.remote_tracks:
                if stream.mode != "receive" and track.kind in wanted:
                    readers.append(track)
                else:
                    group.start_soon(_discard, track)
            if readers:
                group.start_soon(self._pump_inputs, peer, session, readers)
            await peer.ended.wait()
            group.cancel_scope.cancel()

    async def _watch_connect(self, peer: Peer) -> None:
        with anyio.move_on_after(self.options.connect_timeout_s):
            await peer.connected.wait()
            return
        logger.info("webrtc peer %s not connected after %.0f s; closing it", peer.webrtc_id, self.options.connect_timeout_s)
        peer.end("connect timeout")

    async def _pump_messages(self, session: Any, inbox: Any) -> None:
        async for text in inbox:
            try:
                await session.send_message(text)
            except SessionClosed:
                return

    async def _pump_inputs(self, peer: Peer, session: Any, tracks: list[Any]) -> None:
        """Read every input track; when all have ended, end the session's input."""
        async with anyio.create_task_group() as group:
            for track in tracks:
                group.start_soon(self._pump_track, peer, session, track)
        if not peer.ended.is_set():
            try:
                await session.end_input()
            except SessionClosed:
                pass

    async def _pump_track(self, peer: Peer, session: Any, track: Any) -> None:
        inlet = peer.inlets.get(track)
        if inlet is not None:
            await inlet.run(session, track)
            return
        size = max(1, self.options.input_buffer_frames)
        send, receive = anyio.create_memory_object_stream[Any](size)

        async def read() -> None:
            # Keep aiortc's unbounded queue empty; drop our oldest frame when the graph lags.
            pts = 0
            with send:
                while True:
                    try:
                        frame = await track.recv()
                    except MediaStreamError:
                        return
                    if track.kind == "audio":
                        item: Any = chunk_from_frame(frame, pts, mono=not peer.stereo_input)
                        pts = item.end_pts
                    else:
                        item = VideoFrame.from_av(frame)
                    while True:
                        try:
                            send.send_nowait(item)
                            break
                        except anyio.WouldBlock:
                            receive.receive_nowait()

        with send, receive:
            async with anyio.create_task_group() as group:
                group.start_soon(read)
                async for item in receive:
                    try:
                        await session.send(item)
                    except SessionClosed:
                        group.cancel_scope.cancel()
                        return

    async def _pump_output(self, peer: Peer, session: Any) -> None:
        audio, video = peer.audio_out, peer.video_out
        encoder = AudioFrameEncoder(
            mono=audio is not None and audio.mono,
            native_rates=OPUS_INPUT_RATES if audio is not None and audio.codes_opus else frozenset(),
        )
        closing = False
        # Reply audio already queued comes joined (up to OUTPUT_CATCH_UP_MS), so when its
        # rate needs converting it is resampled in a few calls rather than one per 20 ms frame.
        async with scoped(encode(session, frame_ms=None, catch_up_ms=OUTPUT_CATCH_UP_MS)) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    if audio is not None:
                        for frame in encoder.push(item):
                            if not await audio.put(frame):
                                peer.end("audio track stopped")
                                return
                    continue
                if isinstance(item, VideoFrame):
                    if video is not None:
                        video.put(item)
                    continue
                if isinstance(item, Interrupt):
                    encoder.reset()
                    if audio is not None:
                        audio.flush()
                    continue
                message = to_wire(item)
                if message is not None:
                    peer.send_message(message)
                if isinstance(item, Error):
                    logger.info("webrtc peer %s: the graph failed (%s: %s); closing", peer.webrtc_id, item.kind, item.message)
                if isinstance(item, CloseStream):
                    closing = True
                    break
        # The graph is over: play what is queued, let the last messages go out, then close.
        grace = self.options.close_grace_s
        if audio is not None and not closing:
            for frame in encoder.flush():
                with anyio.move_on_after(grace):
                    await audio.put(frame)
        if audio is not None:
            await audio.drained(grace + audio.queued * 0.02)
        with anyio.move_on_after(grace):
            while peer.channel is not None and peer.channel.readyState == "open" and peer.channel.bufferedAmount:
                await anyio.sleep(0.01)
            await anyio.sleep(0.05)
        peer.end("stream ended")


async def _discard(track: Any) -> None:
    """Read and drop a track this stream does not use (aiortc queues it without bound otherwise)."""
    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
