"""``Session``: one running instance of a graph.

A session owns everything one connection needs: bounded input channels, the
graph's pipelines running in one anyio task group, a single ordered output
channel, the handler's inputs (``latest_args``) and its limits. Use it as an
``async with`` block; leaving the block (or the graph finishing, or a
``time_limit_s`` running out) ends every task it started.

Policies when a channel is full: audio and messages wait (backpressure to the
transport), video drops the oldest queued frame so a slow handler always sees
the newest one.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from typing import Any, AsyncIterator, Sequence

import anyio
from anyio.abc import TaskGroup

from flowrtc.channel import Channel
from flowrtc.errors import FlowRTCError, GraphError, SessionClosed, WebRTCError
from flowrtc.events import ClientMessage, CloseStream, Error, Event, Message
from flowrtc.graph import Graph, Ports
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.core import scoped

__all__ = ["Session", "current_session", "get_current_session"]

logger = logging.getLogger("flowrtc.session")

_current: contextvars.ContextVar[Session | None] = contextvars.ContextVar("flowrtc_session", default=None)

_INPUT_BUFFER = 16
_OUTPUT_BUFFER = 16
_VIDEO_BUFFER = 1


def current_session() -> Session | None:
    """The session whose graph is running in this task or worker thread, if any."""
    return _current.get()


def get_current_session() -> Session:
    """Like :func:`current_session`, but raises when called outside a session."""
    session = _current.get()
    if session is None:
        raise GraphError("no flowrtc session is running in this context")
    return session


async def _put_input(channel: Channel, item: Any) -> None:
    try:
        await channel.put(item)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        raise SessionClosed("the session has ended; it takes no more input") from None


class Session:
    """Run one graph instance.

    Args:
        graph: what to run.
        session_id: the connection's id (``webrtc_id``/``websocket_id``/``streamSid``).
        time_limit_s: end the session after this many seconds (``None``: no limit).
        phone_mode: the session is a phone call (handlers must not wait for inputs).
        input_buffer / output_buffer: channel sizes, in items.
        video_buffer: queued input video frames before the oldest is dropped.
        transport: the transport object (e.g. the WebSocket), for ``get_current_context``.

    Usage::

        async with Session(graph) as session:
            await session.send(chunk)
            await session.end_input()
            async for item in session:
                ...
    """

    def __init__(
        self,
        graph: Graph,
        *,
        session_id: str | None = None,
        time_limit_s: float | None = None,
        phone_mode: bool = False,
        input_buffer: int = _INPUT_BUFFER,
        output_buffer: int = _OUTPUT_BUFFER,
        video_buffer: int = _VIDEO_BUFFER,
        transport: Any = None,
        initial_args: Sequence[Any] | None = None,
    ) -> None:
        self.graph = graph
        self.id = session_id or uuid.uuid4().hex
        self.time_limit_s = time_limit_s
        self.phone_mode = phone_mode
        self.transport = transport
        self.latest_args: list[Any] = list(initial_args) if initial_args is not None else []
        self.args_set = anyio.Event()
        if initial_args is not None:
            self.args_set.set()
        self._asked: anyio.Event | None = None  # the args_set a send_input already went out for
        self.closed = anyio.Event()
        self.error: BaseException | None = None
        self._audio = Channel(input_buffer)
        self._video = Channel(video_buffer, drop_oldest=True)
        self._messages = Channel(input_buffer)
        self._output = Channel(output_buffer)
        self._task_group: TaskGroup | None = None
        # Covers the graph's pipelines only, not the code inside ``async with``:
        # ending the graph must leave the consumer free to read what is queued.
        self._graph_scope = anyio.CancelScope()
        self._running_pipes = 0
        self._context_token: contextvars.Token[Session | None] | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def __aenter__(self) -> Session:
        self._context_token = _current.set(self)
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        try:
            pipes = self.graph.open(Ports(self._audio, self._video, self._messages))
        except BaseException:
            self._task_group.cancel_scope.cancel()
            try:
                await self._task_group.__aexit__(None, None, None)
            finally:
                self._close_channels()
            raise
        self._running_pipes = len(pipes)
        self._task_group.start_soon(self._run_graph, pipes)
        if self.time_limit_s is not None:
            self._task_group.start_soon(self._enforce_time_limit, self.time_limit_s)
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        try:
            return await self._task_group.__aexit__(*exc_info)
        finally:
            self._close_channels()

    def _close_channels(self) -> None:
        for channel in (self._audio, self._video, self._messages, self._output):
            channel.close()
        self.closed.set()
        if self._context_token is not None:
            try:
                _current.reset(self._context_token)
            except ValueError:  # exited from another context; nothing to restore
                pass
            self._context_token = None

    def cancel(self) -> None:
        """End the session now, from anywhere on its event loop."""
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()

    async def _run_graph(self, pipes: list[Any]) -> None:
        try:
            with self._graph_scope:
                async with anyio.create_task_group() as pumps:
                    for pipe in pipes:
                        pumps.start_soon(self._pump, pipe)
        finally:
            self._end_graph_io()

    def _end_graph_io(self) -> None:
        """The graph is over: input now raises SessionClosed, and output ends after what is queued.

        Both happen at once, so a consumer that saw the output end cannot still send.
        """
        for channel in (self._audio, self._video, self._messages):
            channel.close_receive()
        self._output.close_send()

    async def _pump(self, pipe: Any) -> None:
        try:
            async with scoped(pipe) as items:
                async for item in items:
                    await self._output.put(item)
                    if isinstance(item, CloseStream):
                        break
        except anyio.get_cancelled_exc_class():
            raise
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        except Exception as exc:  # user code failed: tell the client, end this session only
            self.error = exc
            kind = "webrtc_error" if isinstance(exc, WebRTCError) else type(exc).__name__
            if not isinstance(exc, FlowRTCError):
                logger.exception("session %s: graph %r failed", self.id, self.graph.name)
            with anyio.move_on_after(1):
                await self._output.put(Error(message=str(exc) or type(exc).__name__, kind=kind))
            await self._finish_output(all_pipes=True)
            return
        await self._finish_output(all_pipes=False)

    async def _finish_output(self, *, all_pipes: bool) -> None:
        self._running_pipes -= 1
        if all_pipes or self._running_pipes <= 0:
            self._end_graph_io()
            if all_pipes:
                # Other pipelines of this session stop too; the output is already closed.
                self._graph_scope.cancel()

    async def _enforce_time_limit(self, seconds: float) -> None:
        await anyio.sleep(seconds)
        with anyio.move_on_after(1):
            await self._output.put(CloseStream("time limit reached"))
        self._end_graph_io()
        self._graph_scope.cancel()

    # -- input ---------------------------------------------------------------------
    async def send(self, item: Any) -> None:
        """Deliver one input item to the port its type belongs to, waiting while that port is full.

        Raises :class:`~flowrtc.errors.SessionClosed` once the session has ended.
        """
        try:  # the usual case: a free slot takes it without a trip through the loop
            self.send_nowait(item)
            return
        except anyio.WouldBlock:
            pass
        await _put_input(*self._port_for(item))

    def send_nowait(self, item: Any) -> None:
        """Deliver one input item if its port has room now, without waiting.

        For transports that deliver from a callback on the event loop. Raises
        ``anyio.WouldBlock`` when the port is full (where :meth:`send` would wait)
        and :class:`~flowrtc.errors.SessionClosed` once the session has ended.
        """
        channel, item = self._port_for(item)
        try:
            channel.put_nowait(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise SessionClosed("the session has ended; it takes no more input") from None

    async def send_message(self, message: Any) -> None:
        """Deliver a client message (wrapped as :class:`ClientMessage` unless already an event)."""
        await self.send(message if isinstance(message, Event) else ClientMessage(data=message))

    def _port_for(self, item: Any) -> tuple[Channel, Any]:
        if type(item) is AudioChunk:
            return self._audio, item
        if isinstance(item, VideoFrame):
            return self._video, item
        if isinstance(item, (Event, str, dict)):
            event = item if isinstance(item, Event) else ClientMessage(data=item)
            return {"audio": self._audio, "video": self._video, "messages": self._messages}[self.graph.message_port], event
        return self._audio, item

    async def end_input(self) -> None:
        """No more input will come: the graph drains what it has and then ends."""
        for channel in (self._audio, self._video, self._messages):
            channel.close_send()

    def set_input(self, *args: Any) -> None:
        """Replace the handler's extra arguments; the next handler call sees them."""
        self.latest_args = list(args)
        self.args_set.set()

    async def wait_for_args(self) -> list[Any]:
        """The client's inputs, once it has set them.

        If none are set yet, or they were cleared since (:meth:`clear_args`), the client is
        asked with one ``send_input`` message and this waits for its answer; callers waiting
        at the same time share that one request. Once set, inputs stay set, and this returns
        at once, until they are cleared (FastRTC's ``args_set``/``reset()``). In phone mode
        nobody can answer, so this returns the current ones at once.
        """
        if self.phone_mode:
            self.args_set.set()
            return self.latest_args
        waiting = self.args_set  # clear_args never replaces an event that is not set
        if not waiting.is_set():
            if self._asked is not waiting:
                self._asked = waiting
                await self.emit(Message(type="send_input", data=[]))
            await waiting.wait()
        return self.latest_args

    def clear_args(self) -> None:
        """Forget that inputs were set, so that the next :meth:`wait_for_args` asks the client again.

        The inputs themselves stay: a call that does not wait still gets them. In phone mode
        nothing changes.
        """
        if self.phone_mode or not self.args_set.is_set():
            return
        self.args_set = anyio.Event()

    # -- output --------------------------------------------------------------------
    async def emit(self, item: Any) -> None:
        """Put an item straight on the output (messages from handler code)."""
        await self._output.put(item)

    def emit_nowait(self, item: Any) -> bool:
        """Put an item on the output if there is room; ``False`` if it was dropped."""
        try:
            self._output.put_nowait(item)
            return True
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._output

    async def receive(self) -> Any:
        """The next output item; raises ``anyio.EndOfStream`` when the session has ended."""
        return await self._output.receive()

    def statistics(self) -> dict[str, Any]:
        """Queue depths of every channel (for monitoring and tests)."""
        return {
            name: channel.queued
            for name, channel in (("audio_in", self._audio), ("video_in", self._video), ("messages_in", self._messages), ("output", self._output))
        }
