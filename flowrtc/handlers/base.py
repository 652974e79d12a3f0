"""FastRTC's stream handler classes, run as event-driven graphs.

Subclass :class:`StreamHandler` (sync methods, run in worker threads) or
:class:`AsyncStreamHandler` (coroutines) and implement ``receive``, ``emit``
and ``copy``; :class:`AudioVideoStreamHandler` and
:class:`AsyncAudioVideoStreamHandler` add ``video_receive`` and ``video_emit``.

How a handler is driven (see :mod:`flowrtc.handlers.driver`): ``receive`` is
called once per 20 ms input frame, in order; ``emit`` is called right after
each ``receive`` (and after ``start_up``) until it returns ``None``. While
nothing happens, a sync ``emit`` is polled at most every 20 ms, backing off to
every 200 ms, so an idle connection costs next to no CPU. A handler that makes
output on its own (a background task filling a queue) can call
:meth:`StreamHandlerBase.notify_emit` to have ``emit`` called at once.

The attributes FastRTC code uses are all here: ``latest_args`` (index 0 is the
placeholder ``"__webrtc_value__"``, the extra inputs follow), ``args_set``,
``wait_for_args`` / ``wait_for_args_sync``, ``phone_mode``, ``send_message`` /
``send_message_sync``, ``clear_queue``, ``reset``, ``loop``,
``input_sample_rate``, ``output_sample_rate`` and ``expected_layout``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import warnings
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Sequence

import anyio
import anyio.from_thread
import numpy as np

from flowrtc.errors import ConfigurationError, GraphError
from flowrtc.events import Error, Event, Interrupt, Log, Message, Warning
from flowrtc.graph import Graph
from flowrtc.media import AudioChunk
from flowrtc.session import Session, current_session

if TYPE_CHECKING:
    from flowrtc.handlers.driver import _Driver

__all__ = [
    "StreamHandlerBase",
    "StreamHandler",
    "AsyncStreamHandler",
    "AudioVideoStreamHandler",
    "AsyncAudioVideoStreamHandler",
    "ClientChannel",
    "ARGS_PLACEHOLDER",
    "resolve_args",
    "as_message",
]

#: What FastRTC keeps at ``latest_args[0]`` (Gradio's own component value); the extra inputs follow it.
ARGS_PLACEHOLDER = "__webrtc_value__"


def resolve_args(session: Session | None, defaults: Sequence[Any] = ()) -> list[Any]:
    """The extra arguments a handler call gets: the client's latest inputs, else the inputs' defaults."""
    if session is not None and (session.args_set.is_set() or session.latest_args):
        return list(session.latest_args)
    return list(defaults)


def as_message(message: Any) -> Event:
    """The event for something handler code sends to its client.

    Events pass as they are; ``{"type": ..., "data": ...}`` dicts (or their JSON
    text) become the matching event (``log``, ``error``, ``warning`` or a raw
    :class:`~flowrtc.events.Message`); any other text is a ``log`` message.
    """
    if isinstance(message, Event):
        return message
    if isinstance(message, (str, bytes)):
        try:
            decoded = json.loads(message)
        except ValueError:
            decoded = None
        if not isinstance(decoded, dict) or "type" not in decoded:
            return Log(data=message.decode() if isinstance(message, bytes) else message)
        message = decoded
    if isinstance(message, dict) and "type" in message:
        kind, data = message["type"], message.get("data", message.get("message", ""))
        if kind == "log":
            return Log(data=str(data))
        if kind == "error":
            return Error(message=str(data))
        if kind == "warning":
            return Warning(message=str(data))
        return Message(type=str(kind), data=data)
    raise GraphError(f"send_message takes text, a {{'type', 'data'}} dict or an event, not {type(message).__name__}")


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class StreamHandlerBase:
    """What every stream handler has: audio formats, inputs, and its way to the client.

    Args:
        expected_layout: ``"mono"`` (``receive`` gets ``(rate, int16 (1, n))``) or
            ``"stereo"`` (``(rate, int16 (2, n))``, planar).
        output_sample_rate: rate in Hz of the audio sent to the client; whatever
            ``emit`` returns is converted to it.
        output_frame_size: deprecated and ignored (frames are 20 ms).
        input_sample_rate: rate in Hz of the audio ``receive`` gets, whatever the
            transport delivers.
        fps: frames per second of video for audio-video handlers.
    """

    # Class-level defaults, so a subclass that forgets ``super().__init__()`` still works.
    expected_layout: Literal["mono", "stereo"] = "mono"
    output_sample_rate: int = 24000
    output_frame_size: int = 480
    input_sample_rate: int = 48000
    fps: float = 30
    _driver: _Driver | None = None
    _bound_session: Session | None = None
    _bound_loop: asyncio.AbstractEventLoop | None = None
    _own_args: list[Any] | None = None
    _args_source: list[Any] | None = None
    _phone_mode_override: bool | None = None
    _input_defaults: Sequence[Any] = ()
    _channel_set: asyncio.Event | None = None

    def __init__(
        self,
        expected_layout: Literal["mono", "stereo"] = "mono",
        output_sample_rate: int = 24000,
        output_frame_size: int | None = None,
        input_sample_rate: int = 48000,
        fps: float = 30,
    ) -> None:
        if expected_layout not in ("mono", "stereo"):
            raise ConfigurationError(f"expected_layout must be 'mono' or 'stereo', got {expected_layout!r}")
        for name, rate in (("output_sample_rate", output_sample_rate), ("input_sample_rate", input_sample_rate)):
            if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
                raise ConfigurationError(f"{name} must be a positive integer in Hz, got {rate!r}")
        if not fps > 0:
            raise ConfigurationError(f"fps must be positive, got {fps!r}")
        if output_frame_size is not None:
            warnings.warn("output_frame_size is deprecated and ignored: output frames are 20 ms", DeprecationWarning, stacklevel=2)
        self.expected_layout = expected_layout
        self.output_sample_rate = int(output_sample_rate)
        self.output_frame_size = self.output_sample_rate // 50
        self.input_sample_rate = int(input_sample_rate)
        self.fps = fps

    # -- the graph -------------------------------------------------------------------
    def graph(self) -> Graph:
        """The per-session graph that drives this handler (``receive`` per frame, event-driven ``emit``)."""
        from flowrtc.handlers.driver import stream_handler_graph

        return stream_handler_graph(self)

    def copy(self) -> StreamHandlerBase:
        """A fresh handler for one connection; called once per session."""
        raise NotImplementedError(f"{type(self).__name__} must implement copy() to return a fresh handler per connection")

    # -- the session -------------------------------------------------------------------
    def _session(self) -> Session | None:
        return self._bound_session or current_session()

    def _bind(self, driver: _Driver, session: Session | None, loop: asyncio.AbstractEventLoop) -> None:
        self._driver = driver
        self._bound_session = session
        self._bound_loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the session runs on (``None`` before it starts)."""
        return self._bound_loop

    @property
    def phone_mode(self) -> bool:
        """Whether this session is a phone call (nobody can answer ``send_input`` there)."""
        if self._phone_mode_override is not None:
            return self._phone_mode_override
        session = self._session()
        return bool(session is not None and session.phone_mode)

    @phone_mode.setter
    def phone_mode(self, value: bool) -> None:
        self._phone_mode_override = bool(value)

    # -- inputs ------------------------------------------------------------------------
    @property
    def latest_args(self) -> list[Any]:
        """FastRTC's view of the extra inputs: ``["__webrtc_value__", *inputs]``.

        The inputs are the newest ones set with ``Stream.set_input`` (or the
        additional inputs' defaults before that). Assigning a list replaces them.
        """
        session = self._session()
        if session is None:
            return self._own_args if self._own_args is not None else [ARGS_PLACEHOLDER, *self._input_defaults]
        if self._own_args is None or self._args_source is not session.latest_args:
            self._own_args = [ARGS_PLACEHOLDER, *resolve_args(session, self._input_defaults)]
            self._args_source = session.latest_args
        return self._own_args

    @latest_args.setter
    def latest_args(self, value: Sequence[Any]) -> None:
        self._own_args = list(value)
        session = self._session()
        if session is not None:
            session.latest_args = list(value)[1:]
            self._args_source = session.latest_args

    @property
    def args_set(self) -> Any:
        """Set once inputs have arrived (an event with ``is_set()``/``wait()``; cleared by :meth:`reset`)."""
        session = self._session()
        if session is None:
            raise GraphError("args_set exists once the handler runs in a session")
        return session.args_set

    def set_args(self, args: Sequence[Any]) -> None:
        """Set the extra inputs (FastRTC's ``set_args``: ``args`` without the placeholder)."""
        args = list(args)
        if args and args[0] == ARGS_PLACEHOLDER:
            args = args[1:]
        session = self._session()
        if session is None:
            self._own_args = [ARGS_PLACEHOLDER, *args]
            return
        self._in_loop_soon(lambda: session.set_input(*args))

    async def wait_for_args(self) -> None:
        """Wait until the client has set its inputs; ask it (one ``send_input`` message) if it has not.

        Once set, they stay set, and this returns at once, until :meth:`reset`. So it can
        be awaited in every ``emit``. In phone mode nobody can answer, so this returns at once.
        """
        session = self._require_session("wait_for_args")
        await session.wait_for_args()

    def wait_for_args_sync(self) -> None:
        """:meth:`wait_for_args` for sync handler code (it runs in a worker thread)."""
        session = self._require_session("wait_for_args_sync")
        self._block_on(session.wait_for_args, "wait_for_args_sync")

    def reset(self) -> None:
        """Forget that inputs were set, so the next :meth:`wait_for_args` asks again."""
        session = self._session()
        if session is not None:
            self._in_loop_soon(session.clear_args)

    # -- the client -----------------------------------------------------------------------
    @property
    def channel(self) -> ClientChannel | None:
        """FastRTC's ``channel``: the way to this session's client (``None`` outside a session).

        ``self.channel.send(msg)`` sends a message as :meth:`send_message` does, on every
        transport (FastRTC's was the WebRTC data channel). It does not wait; from a worker
        thread the message goes out as soon as the event loop can send it.
        """
        return ClientChannel(self) if self._session() is not None else None

    @property
    def channel_set(self) -> asyncio.Event:
        """FastRTC's ``channel_set``: an event set once :attr:`channel` can be used (the handler runs in a session)."""
        if self._channel_set is None:
            self._channel_set = asyncio.Event()
        if self._session() is not None:
            self._channel_set.set()
        return self._channel_set

    async def send_message(self, msg: Any) -> None:
        """Send a message to this session's client (text, ``{"type", "data"}`` or an event)."""
        event = as_message(msg)
        session = self._require_session("send_message")
        await session.emit(event)

    def send_message_sync(self, msg: Any) -> None:
        """:meth:`send_message` for sync handler code (it runs in a worker thread)."""
        event = as_message(msg)
        session = self._require_session("send_message_sync")
        self._block_on(lambda: session.emit(event), "send_message_sync")

    def clear_queue(self) -> None:
        """Drop the audio queued for the client but not played yet (an ``Interrupt`` goes out in band)."""
        driver = self._driver
        if driver is not None:
            self._in_loop_soon(driver.clear_queue)
            return
        session = self._session()
        if session is not None:
            self._in_loop_soon(lambda: session.emit_nowait(Interrupt()))

    def notify_emit(self) -> None:
        """Have ``emit`` (and ``video_emit``) called now: output is ready. Safe from any thread.

        Without it, output a handler makes on its own is picked up at the next poll (at most 200 ms later).
        """
        driver = self._driver
        if driver is not None:
            self._in_loop_soon(driver.wake_emitters)

    # -- lifecycle (override) ---------------------------------------------------------------
    def shutdown(self) -> Any:
        """Called once when the session ends, on every transport. Release per-connection resources here."""

    # -- plumbing -------------------------------------------------------------------------
    def _require_session(self, what: str) -> Session:
        session = self._session()
        if session is None:
            raise GraphError(f"{what}() works while the handler runs in a session")
        return session

    def _in_loop_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` on the session's event loop: now if we are on it, else as soon as it can."""
        if _on_event_loop():
            fn()
        elif self._bound_loop is not None:
            self._bound_loop.call_soon_threadsafe(fn)
        else:
            anyio.from_thread.run_sync(fn)

    def _block_on(self, make: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run a coroutine on the session's loop from a worker thread and wait for it."""
        if _on_event_loop():
            raise GraphError(f"{what}() blocks: call it from sync handler code, or await the async version")
        if self._bound_loop is None:
            async def run() -> Any:
                return await make()

            return anyio.from_thread.run(run)
        future = asyncio.run_coroutine_threadsafe(_awaited(make), self._bound_loop)
        driver = self._driver
        if driver is not None:
            driver.track(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise GraphError(f"{what}() was abandoned: the session ended") from None


async def _awaited(make: Callable[[], Awaitable[Any]]) -> Any:
    return await make()


class StreamHandler(StreamHandlerBase):
    """A handler with sync methods; each runs in a worker thread, never on the event loop.

    Implement:
        receive(frame): one input frame, ``(input_sample_rate, int16 array (1, n))`` every 20 ms.
        emit(): the next output or ``None`` when nothing is ready. It may return
            ``(rate, array)`` audio (int16 or float, any FastRTC shape, any rate),
            ``AdditionalOutputs``, ``((rate, array), AdditionalOutputs)`` or ``CloseStream``.
            It should not block; to wait a little, use a queue with a timeout.
        copy(): a fresh handler for a new connection.

    Optionally: ``start_up()`` (runs when the session starts, beside receive/emit)
    and ``shutdown()`` (runs once when it ends).
    """

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        """Handle one input frame ``(input_sample_rate, int16 array (1, n))``."""
        raise NotImplementedError(f"{type(self).__name__} must implement receive(frame)")

    def emit(self) -> Any:
        """Return the next output, or ``None`` if nothing is ready."""
        raise NotImplementedError(f"{type(self).__name__} must implement emit()")

    def start_up(self) -> None:
        """Called when the session starts (it runs beside ``receive``/``emit``, e.g. to connect to an API)."""


class AsyncStreamHandler(StreamHandlerBase):
    """A handler whose methods are coroutines, run on the event loop.

    Same contract as :class:`StreamHandler`, with ``async def receive``,
    ``emit``, ``start_up`` and ``shutdown``. ``emit`` may await (e.g.
    ``await wait_for_item(self.queue)``); it is awaited in its own task, so it
    never holds up ``receive``. Never block the loop in these methods.
    """

    async def receive(self, frame: tuple[int, np.ndarray]) -> None:
        """Handle one input frame ``(input_sample_rate, int16 array (1, n))``."""
        raise NotImplementedError(f"{type(self).__name__} must implement receive(frame)")

    async def emit(self) -> Any:
        """Return the next output, or ``None`` if nothing is ready."""
        raise NotImplementedError(f"{type(self).__name__} must implement emit()")

    async def start_up(self) -> None:
        """Called when the session starts (it runs beside ``receive``/``emit``)."""

    async def shutdown(self) -> None:
        """Called once when the session ends."""


class AudioVideoStreamHandler(StreamHandler):
    """A sync handler for audio and video (``modality="audio-video"``).

    Besides the audio methods, implement ``video_receive(frame)`` (a BGR
    ``(h, w, 3)`` uint8 array per input frame) and ``video_emit()`` (the next
    frame to send as such an array, ``(frame, AdditionalOutputs)``, or ``None``).
    """

    def video_receive(self, frame: np.ndarray) -> None:
        """Handle one input video frame (a BGR ``(h, w, 3)`` uint8 array)."""
        raise NotImplementedError(f"{type(self).__name__} must implement video_receive(frame)")

    def video_emit(self) -> Any:
        """Return the next video frame to send, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement video_emit()")


class AsyncAudioVideoStreamHandler(AsyncStreamHandler):
    """:class:`AudioVideoStreamHandler` with coroutine methods."""

    async def video_receive(self, frame: np.ndarray) -> None:
        """Handle one input video frame (a BGR ``(h, w, 3)`` uint8 array)."""
        raise NotImplementedError(f"{type(self).__name__} must implement video_receive(frame)")

    async def video_emit(self) -> Any:
        """Return the next video frame to send, or ``None``."""
        raise NotImplementedError(f"{type(self).__name__} must implement video_emit()")


def handler_audio(chunk: AudioChunk) -> tuple[int, np.ndarray]:
    """What ``receive`` gets for a frame: ``(rate, int16 (channels, n))``, a writable copy like FastRTC's."""
    return chunk.sample_rate, np.array(chunk.to_int16().samples)


def missing_methods(handler: StreamHandlerBase) -> list[str]:
    """The methods a handler must implement but does not (for a clear error at Stream construction)."""
    required: list[tuple[str, type]] = [("receive", StreamHandler), ("emit", StreamHandler)]
    if isinstance(handler, AsyncStreamHandler):
        required = [("receive", AsyncStreamHandler), ("emit", AsyncStreamHandler)]
    if isinstance(handler, AudioVideoStreamHandler):
        required += [("video_receive", AudioVideoStreamHandler), ("video_emit", AudioVideoStreamHandler)]
    elif isinstance(handler, AsyncAudioVideoStreamHandler):
        required += [("video_receive", AsyncAudioVideoStreamHandler), ("video_emit", AsyncAudioVideoStreamHandler)]
    required.append(("copy", StreamHandlerBase))
    missing = []
    for name, base in required:
        if getattr(type(handler), name, None) is getattr(base, name, None):
            missing.append(name)
    return missing


class ClientChannel:
    """What ``handler.channel`` gives: FastRTC's data-channel ``send`` on any transport."""

    __slots__ = ("_handler",)

    def __init__(self, handler: StreamHandlerBase) -> None:
        self._handler = handler

    def send(self, msg: Any) -> None:
        """Queue ``msg`` for the client (text, ``{"type", "data"}`` or an event) without waiting."""
        event = as_message(msg)
        session = self._handler._require_session("channel.send")
        self._handler._in_loop_soon(lambda: session.emit_nowait(event))
