"""Audio over a WebSocket: FastRTC's JSON protocol at ``WS /websocket/offer``.

Client → server: ``start`` (``websocket_id``; optional ``sample_rate``,
``output_sample_rate``, ``format``), ``media`` (base64 µ-law, or s16le PCM with
``"format": "pcm16"``, which also allows binary frames), ``mark``, ``ping``, ``stop``.
Server → client: paced 20 ms ``media`` (binary in PCM16 mode), ``clear`` on barge-in,
``pong``, ``started`` (only after a negotiated start), FastRTC's ``{"type", "data"}``
messages, and typed errors followed by a close code (:mod:`flowrtc.limits`).
The full wire is in ``docs/websocket-and-phone.md``.

:class:`MediaSocket` holds what every audio WebSocket shares (limits, pacing,
barge-in, session lifecycle); :mod:`flowrtc.adapters.twilio` speaks Twilio's Media
Streams on top of it. Input reaches the session at the client's rate (the graph
resamples); output goes through ``encode`` to the wire's rate.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import weakref
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import numpy as np
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from flowrtc.adapters import OUTPUT_CATCH_UP_MS
from flowrtc.adapters.messages import encode_message, to_wire
from flowrtc.channel import _wake_all
from flowrtc.errors import SessionClosed
from flowrtc.events import CloseStream, Error, Event, Interrupt, PlaybackMark
from flowrtc.g711 import pcm16_to_mulaw
from flowrtc.hub import ConcurrencyLimitReached, ConnectionExists
from flowrtc.limits import CLOSE_CODES, CloseCode, ConnectionSlots, Limits, RateLimiter, WireError, error_message
from flowrtc.media import AudioChunk
from flowrtc.operators.codec import encode
from flowrtc.operators.core import scoped
from flowrtc.session import Session

if TYPE_CHECKING:
    from flowrtc.stream import Stream

__all__ = [
    "websocket_route_handlers",
    "serve_websocket",
    "connection_slots",
    "MediaSocket",
    "FastRTCSocket",
    "Playout",
    "decode_json",
    "decode_base64",
]

logger = logging.getLogger("flowrtc.websocket")

AUDIO_FRAME_MS = 20
#: Audio sent ahead of real time, so network jitter does not starve the client: the
#: sender tops the client up to PLAYOUT_LEAD_S ahead and sleeps until it is down to
#: PLAYOUT_REFILL_S, so it wakes once per two 20 ms frames, not per frame.
PLAYOUT_LEAD_S = 0.1
PLAYOUT_REFILL_S = 0.06
#: FastRTC's defaults when the handler states no rate.
DEFAULT_INPUT_RATE = 48_000
DEFAULT_OUTPUT_RATE = 24_000
MIN_RATE, MAX_RATE = 8_000, 96_000
_MAX_ID_CHARS = 256


def _disconnect_errors() -> tuple[type[BaseException], ...]:
    """What sending on a WebSocket whose client has gone raises, in Litestar and in Starlette."""
    errors: list[type[BaseException]] = [WebSocketDisconnect, OSError, RuntimeError]
    try:
        from starlette.websockets import WebSocketDisconnect as StarletteDisconnect
    except ImportError:
        pass
    else:
        errors.append(StarletteDisconnect)
    return tuple(errors)


_DISCONNECTED = _disconnect_errors()
_slots: weakref.WeakKeyDictionary[Any, ConnectionSlots] = weakref.WeakKeyDictionary()


def connection_slots(stream: Any) -> ConnectionSlots:
    """The WebSocket connections open on ``stream``, counted against ``Limits.max_connections``.

    One count per Stream, shared by its FastRTC-protocol and phone routes, by every app it
    is mounted on, and by its :meth:`~flowrtc.stream.Stream.websocket_offer` and
    :meth:`~flowrtc.stream.Stream.telephone_handler` in routes of your own.
    """
    slots = _slots.get(stream)
    if slots is None:
        slots = _slots[stream] = ConnectionSlots(stream_limits(stream).max_connections)
    return slots


def decode_json(text: str) -> dict[str, Any]:
    try:
        message = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise WireError("bad_json", "messages must be JSON text") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise WireError("bad_message", 'messages must be JSON objects with a string "event"')
    return message


def decode_base64(payload: Any) -> bytes:
    if not isinstance(payload, str):
        raise WireError("bad_message", "media.payload must be a base64 string")
    try:
        return binascii.a2b_base64(payload, strict_mode=True)
    except (binascii.Error, ValueError):
        raise WireError("bad_base64", "media.payload is not valid base64") from None


class Playout:
    """Reply audio waiting to be sent, bounded by duration.

    :meth:`clear` (barge-in) drops every queued frame and bumps ``generation``, so
    a frame the sender has taken but not yet sent is dropped as well.
    """

    __slots__ = ("max_queued_s", "generation", "_frames", "_queued_s", "_in_flight", "_waiters")

    def __init__(self, max_queued_s: float) -> None:
        self.max_queued_s = max_queued_s
        self.generation = 0
        self._frames: deque[AudioChunk] = deque()
        self._queued_s = 0.0
        self._in_flight = False
        # Tasks waiting for any change, as bare futures: this runs once per 20 ms frame of
        # every session, and an anyio Event per change cost more than the rest of a put.
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._frames)

    def _notify(self) -> None:
        _wake_all(self._waiters)

    async def _wait(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    async def put(self, frame: AudioChunk) -> None:
        while self._queued_s >= self.max_queued_s:
            await self._wait()
        self._frames.append(frame)
        self._queued_s += frame.duration_s
        self._notify()

    async def get(self) -> tuple[int, AudioChunk]:
        """The next frame and the generation it belongs to; call :meth:`done` after sending it."""
        while not self._frames:
            await self._wait()
        frame = self._frames.popleft()
        self._queued_s -= frame.duration_s
        self._in_flight = True
        self._notify()
        return self.generation, frame

    async def wait_for_frames(self) -> None:
        while not self._frames:
            await self._wait()

    def done(self) -> None:
        self._in_flight = False
        self._notify()

    def clear(self) -> int:
        """Drop every queued frame; returns how many were dropped."""
        dropped = len(self._frames)
        self._frames.clear()
        self._queued_s = 0.0
        self.generation += 1
        self._notify()
        return dropped

    async def drained(self) -> None:
        """Wait until every queued frame has been sent (or dropped)."""
        while self._frames or self._in_flight:
            await self._wait()


def stream_limits(stream: Any) -> Limits:
    limits = getattr(stream, "limits", None)
    return limits if isinstance(limits, Limits) else Limits()


def handler_rate(stream: Any, name: str, default: int) -> int:
    """``input_sample_rate``/``output_sample_rate`` of the stream's handler, if it states one."""
    value = getattr(getattr(stream, "handler", None), name, None)
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0 else default


class MediaSocket(ABC):
    """One audio WebSocket serving one session.

    Enforces :class:`~flowrtc.limits.Limits`, turns the session's output into
    paced 20 ms frames (``encode`` then :class:`Playout`), and on
    :class:`~flowrtc.events.Interrupt` drops queued audio and tells the client.
    Subclasses speak a protocol: they wait for its start message, read its
    messages and say how frames, ``clear`` and events go on the wire.
    """

    transport = "websocket"
    phone_mode = False
    #: call :meth:`end_batch` when the playout empties (Twilio marks)
    marks_batches = False
    #: a batch ends when no audio follows within this long
    batch_gap_s = 0.04

    def __init__(self, socket: WebSocket, stream: Stream, limits: Limits) -> None:
        self.socket = socket
        self.stream = stream
        self.limits = limits
        self.rate = RateLimiter(limits.max_messages_per_s, limits.message_burst)
        self.playout = Playout(limits.max_queued_output_s)
        self.send_lock = asyncio.Lock()  # taken per frame: asyncio's never yields when free
        self.closed = False
        self.input_rate = DEFAULT_INPUT_RATE
        self.output_rate = DEFAULT_OUTPUT_RATE
        self.input_pts = 0
        self.input_open = True
        self._scope: anyio.CancelScope | None = None

    # -- protocol hooks --------------------------------------------------------------
    @abstractmethod
    async def wait_for_start(self) -> str | None:
        """Read messages until the protocol's start; return the session id (``None``: the client left)."""

    @abstractmethod
    async def handle(self, session: Session, data: str | bytes) -> bool:
        """Act on one message of a started session; ``False`` ends the connection normally."""

    @abstractmethod
    async def send_frame(self, frame: AudioChunk) -> None:
        """Send one 20 ms frame of output audio in the protocol's format."""

    @abstractmethod
    async def send_clear(self) -> None:
        """Tell the client to drop the audio it has queued but not played."""

    async def send_event(self, item: Any) -> None:
        """An output item that is neither audio, Interrupt, CloseStream nor Error."""

    async def refuse(self, kind: str, message: str, meta: dict[str, Any]) -> None:
        await self.fail(WireError(kind, message))

    async def end_batch(self) -> None:
        """The playout ran dry after a batch of frames (called with the send lock held)."""

    async def after_frame(self, frame: AudioChunk) -> None:
        """A frame was sent (called with the send lock held)."""

    # -- wire ------------------------------------------------------------------------
    async def receive_event(self, binary: WireError) -> tuple[str, dict[str, Any]] | None:
        """The next JSON message as ``(event, message)`` (``None`` once the client is gone).

        A binary frame raises ``binary``: before start, neither protocol takes one.
        """
        data = await self.receive()
        if data is None:
            return None
        if isinstance(data, bytes):
            raise binary
        message = decode_json(data)
        return message["event"], message

    async def receive(self) -> str | bytes | None:
        """The next message within the limits, or ``None`` once the client is gone."""
        message = await self.socket.receive()
        if message["type"] != "websocket.receive":
            self.closed = True
            return None
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        if len(data) > self.limits.max_message_bytes:
            raise WireError("message_too_big", f"messages are limited to {self.limits.max_message_bytes} bytes")
        if not self.rate.allow():
            raise WireError("rate_limited", f"more than {self.limits.max_messages_per_s:g} messages per second")
        return data

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            await self.socket.send(message)
        except _DISCONNECTED:
            self.lost()

    async def send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "text": text})

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_text(encode_message(message))

    def lost(self) -> None:
        """The client is gone: stop everything this connection runs."""
        self.closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        if not self.closed:
            await self.send({"type": "websocket.close", "code": int(code), "reason": reason.encode()[:120].decode(errors="ignore")})
            self.closed = True

    async def fail(self, error: WireError) -> None:
        logger.debug("%s %s: closing (%s): %s", self.transport, id(self), error.kind, error.message)
        await self.send_json(error_message(error.kind, error.message))
        await self.close(error.close_code, error.kind)

    # -- lifecycle -------------------------------------------------------------------
    async def serve(self, slots: ConnectionSlots) -> None:
        await self.socket.accept()
        if not slots.take():
            await self.fail(WireError("too_many_connections", "the server holds too many connections; try again later"))
            return
        try:
            await self._serve()
        except WireError as error:
            await self.fail(error)
        except Exception as exc:  # the handler's graph could not start: this session only
            logger.exception("%s session failed to start", self.transport)
            await self.send_json(error_message(type(exc).__name__, str(exc) or type(exc).__name__))
            await self.close(CloseCode.INTERNAL_ERROR, type(exc).__name__)
        finally:
            slots.release()
            await self.close()

    async def _serve(self) -> None:
        session_id = None
        with anyio.move_on_after(self.limits.start_timeout_s):
            session_id = await self.wait_for_start()
            if session_id is None:
                return
        if session_id is None:
            raise WireError("start_timeout", f"no start within {self.limits.start_timeout_s:g} s")
        try:
            async with self.stream.session(
                session_id, transport=self.transport, phone_mode=self.phone_mode, transport_object=self.socket
            ) as session:
                await self._run(session)
        except ConcurrencyLimitReached as exc:
            await self.refuse("concurrency_limit_reached", str(exc), {"limit": exc.limit})
        except ConnectionExists as exc:
            await self.refuse("connection_already_exists", str(exc), {})

    async def _run(self, session: Session) -> None:
        async with anyio.create_task_group() as group:
            self._scope = group.cancel_scope
            group.start_soon(self._pump_output, session)
            group.start_soon(self._send_paced)
            try:
                while True:
                    data = await self.receive()
                    if data is None or not await self.handle(session, data):
                        break
            except WireError as error:
                await self.fail(error)
            group.cancel_scope.cancel()

    async def deliver(self, session: Session, chunk: AudioChunk) -> None:
        """Hand one input chunk to the session (dropped once its graph has ended)."""
        self.input_pts = chunk.end_pts
        if self.input_open:
            try:
                await session.send(chunk)
            except SessionClosed:
                self.input_open = False

    async def deliver_event(self, session: Session, event: Event) -> None:
        if self.input_open:
            try:
                await session.send(event)
            except SessionClosed:
                self.input_open = False

    @property
    def input_time_s(self) -> float:
        return self.input_pts / self.input_rate

    async def _pump_output(self, session: Session) -> None:
        frames = encode(session, sample_rate=self.output_rate, layout="mono", frame_ms=AUDIO_FRAME_MS, catch_up_ms=OUTPUT_CATCH_UP_MS)
        async with scoped(frames) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    await self.playout.put(item)
                elif isinstance(item, Interrupt):
                    async with self.send_lock:
                        self.playout.clear()
                        await self.send_clear()
                elif isinstance(item, CloseStream):
                    await self.send_event(item)
                    await self.playout.drained()
                    await self.close(CloseCode.NORMAL, item.msg)
                    break
                elif isinstance(item, Error):
                    await self.send_json(error_message(item.kind, item.message))
                    await self.close(CloseCode.INTERNAL_ERROR, item.kind)
                    break
                else:
                    await self.send_event(item)
            else:
                await self.playout.drained()
                await self.close(CloseCode.NORMAL, "session ended")
        self.lost()

    async def _send_paced(self) -> None:
        due = 0.0  # when the client will have played everything sent so far
        due_generation = 0
        batch_open = False
        clock = asyncio.get_running_loop().time  # anyio.current_time, without its per-call backend lookup
        while True:
            if self.marks_batches and batch_open and not len(self.playout):
                with anyio.move_on_after(self.batch_gap_s):
                    await self.playout.wait_for_frames()
                if not len(self.playout):
                    async with self.send_lock:
                        await self.end_batch()
                    batch_open = False
            generation, frame = await self.playout.get()
            now = clock()
            if generation != due_generation:  # after a clear the client holds nothing
                due, due_generation = 0.0, generation
            if due < now:
                due = now
            elif due - now >= PLAYOUT_LEAD_S:
                await asyncio.sleep(due - now - PLAYOUT_REFILL_S)
            async with self.send_lock:
                if generation == self.playout.generation:
                    await self.send_frame(frame)
                    await self.after_frame(frame)
                    due += frame.duration_s
                    batch_open = True
                self.playout.done()


class FastRTCSocket(MediaSocket):
    """FastRTC's WebSocket protocol, with an optional rate and PCM16 negotiation."""

    def __init__(self, socket: WebSocket, stream: Stream, limits: Limits) -> None:
        super().__init__(socket, stream, limits)
        self.format = "mulaw"
        self.input_rate = handler_rate(stream, "input_sample_rate", DEFAULT_INPUT_RATE)
        self.output_rate = handler_rate(stream, "output_sample_rate", DEFAULT_OUTPUT_RATE)

    async def wait_for_start(self) -> str | None:
        while True:
            received = await self.receive_event(WireError("not_started", "send start before any audio"))
            if received is None:
                return None
            event, message = received
            if event == "start":
                return await self._start(message)
            if event == "ping":
                await self.send_text('{"event":"pong"}')
            elif event == "stop":
                return None
            elif event in ("media", "mark"):
                raise WireError("not_started", f"{event} before start: send start first")
            else:
                await self.send_json(error_message("unknown_event", f"unknown event {event!r} ignored"))

    async def _start(self, message: dict[str, Any]) -> str:
        session_id = message.get("websocket_id")
        if not isinstance(session_id, str) or not 0 < len(session_id) <= _MAX_ID_CHARS:
            raise WireError("bad_message", f"start needs a websocket_id string of 1 to {_MAX_ID_CHARS} characters")
        fmt = message.get("format", "mulaw")
        if fmt not in ("mulaw", "pcm16"):
            raise WireError("bad_message", 'format must be "mulaw" or "pcm16"')
        self.format = fmt
        self.input_rate = _rate(message, "sample_rate", self.input_rate)
        self.output_rate = _rate(message, "output_sample_rate", self.output_rate)
        if any(key in message for key in ("format", "sample_rate", "output_sample_rate")):
            await self.send_json(
                {
                    "event": "started",
                    "websocket_id": session_id,
                    "format": self.format,
                    "sample_rate": self.input_rate,
                    "output_sample_rate": self.output_rate,
                    "frame_ms": AUDIO_FRAME_MS,
                }
            )
        return session_id

    async def refuse(self, kind: str, message: str, meta: dict[str, Any]) -> None:
        # FastRTC's clients read this shape on every transport.
        await self.send_json({"status": "failed", "meta": {"error": kind, **meta}})
        await self.close(CLOSE_CODES[kind], kind)

    async def handle(self, session: Session, data: str | bytes) -> bool:
        if isinstance(data, bytes):
            if self.format != "pcm16":
                raise WireError("unsupported_data", 'binary audio needs start with "format": "pcm16"')
            await self.deliver(session, self._audio(data))
            return True
        message = decode_json(data)
        event = message["event"]
        if event == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            await self.deliver(session, self._audio(decode_base64(payload)))
        elif event == "ping":
            await self.send_text('{"event":"pong"}')
        elif event == "stop":
            return False
        elif event == "start":
            raise WireError("already_started", "start was already received")
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                raise WireError("bad_message", "mark needs mark.name")
            await self.deliver_event(session, PlaybackMark(name=name, media_time_s=self.input_time_s))
        else:
            await self.send_json(error_message("unknown_event", f"unknown event {event!r} ignored"))
        return True

    def _audio(self, data: bytes) -> AudioChunk:
        if len(data) > self.limits.max_payload_bytes:
            raise WireError("payload_too_large", f"audio payloads are limited to {self.limits.max_payload_bytes} bytes")
        if self.format == "pcm16":
            if len(data) % 2:
                raise WireError("bad_payload", f"PCM16 payload of {len(data)} bytes is not whole samples")
            return AudioChunk.from_pcm(data, self.input_rate, pts=self.input_pts)
        return AudioChunk.from_mulaw(data, self.input_rate, pts=self.input_pts)

    async def send_frame(self, frame: AudioChunk) -> None:
        samples = frame.to_int16().samples[0]
        if self.format == "pcm16":
            await self.send({"type": "websocket.send", "bytes": samples.astype("<i2", copy=False).tobytes()})
        else:
            payload = binascii.b2a_base64(pcm16_to_mulaw(samples).tobytes(), newline=False).decode()
            await self.send_text('{"event":"media","media":{"payload":"' + payload + '"}}')

    async def send_clear(self) -> None:
        await self.send_text('{"event":"clear"}')

    async def send_event(self, item: Any) -> None:
        message = to_wire(item)
        if message is not None:
            await self.send_json(message)


def _rate(message: dict[str, Any], key: str, default: int) -> int:
    value = message.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not MIN_RATE <= value <= MAX_RATE:
        raise WireError("bad_message", f"{key} must be an integer from {MIN_RATE} to {MAX_RATE} Hz")
    return value


async def serve_websocket(stream: Stream, socket: Any) -> None:
    """Serve FastRTC's WebSocket protocol for ``stream`` on ``socket``, until it closes.

    ``socket`` is a Litestar or a Starlette/FastAPI ``WebSocket``, not yet accepted;
    :meth:`~flowrtc.stream.Stream.websocket_offer` calls this from a route of your own.
    """
    await FastRTCSocket(socket, stream, stream_limits(stream)).serve(connection_slots(stream))


def websocket_route_handlers(stream: Stream) -> list[Any]:
    """Litestar handlers for ``WS /websocket/offer`` and the telephone routes of ``stream``.

    The routes share the stream's :func:`connection_slots` (``Limits.max_connections``).
    """
    from flowrtc.adapters.twilio import telephone_route_handlers

    @websocket("/websocket/offer")
    async def websocket_offer(socket: WebSocket) -> None:
        await serve_websocket(stream, socket)

    return [websocket_offer, *telephone_route_handlers(stream)]
