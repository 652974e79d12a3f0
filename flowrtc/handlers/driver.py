"""The graph of a StreamHandler: ``receive`` per frame, ``emit`` driven by events.

A StreamHandler's graph runs as a handful of pipelines in the session's task
group (no task group inside a generator): one feeds ``receive`` (then wakes the
emitter), one runs ``emit``, one runs ``start_up``, one reads client messages;
audio-video handlers add the same pair for video.

``emit`` is called until it returns ``None`` after each ``receive`` and after
``start_up``; while nothing happens it is polled with backoff (``MIN_POLL_S``
doubling to ``MAX_POLL_S``), or at once when the handler calls ``notify_emit()``.
An async ``emit`` that awaits is simply awaited. Sync methods run in one daemon
worker thread per method kind and connection, so ``receive`` calls stay in order
and a blocking ``emit`` is abandoned, not waited for, when the session ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import logging
import queue
import threading
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterator

import anyio
import msgspec
import numpy as np

from flowrtc.events import AdditionalOutputs, CloseStream, Event, Interrupt
from flowrtc.graph import Graph, Ports
from flowrtc.handlers.base import AsyncStreamHandler, StreamHandler, StreamHandlerBase, handler_audio
from flowrtc.handlers.build import has_video_methods
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators.codec import decode
from flowrtc.operators.core import scoped
from flowrtc.operators.handler import normalize_output
from flowrtc.operators.rechunk import rechunk
from flowrtc.operators.resample import Resampler, resample
from flowrtc.session import current_session

__all__ = ["stream_handler_graph", "MIN_POLL_S", "MAX_POLL_S", "END_GRACE_S", "ANSWER_WAIT_S", "SHUTDOWN_TIMEOUT_S"]

logger = logging.getLogger("flowrtc.handlers")

#: Shortest wait between two ``emit`` calls that returned ``None`` with nothing new in between (s).
MIN_POLL_S = 0.02
#: Longest wait: the poll backs off (doubling) to this while the session stays idle (s).
MAX_POLL_S = 0.2
#: After the input has ended, an ``emit`` that has not answered in this long ends the output (s).
END_GRACE_S = 0.5
#: After a receive, the next receive waits for a sync ``emit`` to answer it, unless that emit (or
#: handing its output on) has been busy this long: a slow or blocking emit never holds up input (s).
ANSWER_WAIT_S = 0.01
#: Longest wait for ``shutdown()`` when a session ends (s).
SHUTDOWN_TIMEOUT_S = 5.0
INPUT_FRAME_MS = 20.0

_STOP = object()


# ------------------------------------------------------------------------ worker thread
class _Worker:
    """One daemon thread running a handler's sync calls of one kind, in order.

    A daemon, so a user call that blocks forever (``emit`` doing ``queue.get()``)
    can be abandoned when its session ends without keeping the process alive.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((contextvars.copy_context(), fn, args, future, loop))
        return await future  # cancelling abandons the call; the thread finishes it and moves on

    def close(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            context, fn, args, future, loop = job
            try:
                outcome = (True, context.run(fn, *args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, outcome)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass
            del job, future, outcome


def _settle(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():
        return
    ok, value = outcome
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Wakeup:
    """A resettable wake-up for an emitter waiting between polls."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        if not self._event.is_set():
            with anyio.move_on_after(timeout_s):
                await self._event.wait()
        woke = self._event.is_set()
        if woke:
            self._event = anyio.Event()
        return woke


# ------------------------------------------------------------------------------ driver
class _Driver:
    """One session's run of a StreamHandler: its threads, wake-ups and lifecycle."""

    def __init__(self, handler: Any, *, video: bool, pipes: int) -> None:
        self.handler = handler
        self.session = current_session()
        self.loop = asyncio.get_running_loop()
        self.video = video
        self.audio_wakeup = _Wakeup()
        self.video_wakeup = _Wakeup()
        self.input_time_s = 0.0
        self.last_video: VideoFrame | None = None
        self.receivers_left = 2 if video else 1
        self.emitters_left = 2 if video else 1
        self.pipes_left = pipes
        self.input_done = False
        self.closing = False
        self.clears = 0
        self.interrupt_pending = False
        # Receive/emit lockstep for sync emits: receives so far, receives a drain has answered,
        # since when the emitter has been busy (None: idle or waiting to be woken).
        self.lockstep = not inspect.iscoroutinefunction(getattr(handler, "emit", None))
        self.received = 0
        self.answered = 0
        self.busy_since: float | None = None
        self._progress = anyio.Event()
        self._scopes: set[anyio.CancelScope] = set()
        self._call_scopes: set[anyio.CancelScope] = set()
        self._workers: dict[str, _Worker] = {}
        self._futures: set[concurrent.futures.Future[Any]] = set()
        if isinstance(handler, StreamHandlerBase):
            handler._bind(self, self.session, self.loop)

    # -- calling user code --------------------------------------------------------
    async def call(self, kind: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a handler method: awaited if it is a coroutine function, else in its worker thread."""
        if inspect.iscoroutinefunction(fn):
            return await fn(*args)
        worker = self._workers.get(kind)
        if worker is None:
            session_id = self.session.id if self.session is not None else "-"
            worker = self._workers[kind] = _Worker(f"flowrtc-{session_id[:8]}-{kind}")
        result = await worker.call(fn, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def track(self, future: concurrent.futures.Future[Any]) -> None:
        """A blocking call a worker thread waits on; cancelled if the session ends first."""
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    # -- stopping -------------------------------------------------------------------
    @contextlib.contextmanager
    def stoppable(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope that :meth:`close` cancels (never held across a ``yield``)."""
        scope = anyio.CancelScope()
        if self.closing:
            scope.cancel()
        self._scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._scopes.discard(scope)

    def close(self) -> None:
        """Stop every pipeline of this handler (its output has ended)."""
        self.closing = True
        for scope in list(self._scopes):
            scope.cancel()
        self.wake_emitters()

    def wake_emitters(self) -> None:
        self.audio_wakeup.set()
        self.video_wakeup.set()

    def receiver_done(self) -> None:
        self.receivers_left -= 1
        if self.receivers_left <= 0:
            self.input_done = True
            # An emit already waiting (e.g. on a queue only new input would fill) gets the grace period too.
            deadline = anyio.current_time() + END_GRACE_S
            for scope in self._call_scopes:
                scope.deadline = min(scope.deadline, deadline)
            self.wake_emitters()

    def emitter_done(self) -> None:
        self.emitters_left -= 1
        if self.emitters_left <= 0:
            self.close()

    async def pipe_done(self) -> None:
        self.pipes_left -= 1
        if self.pipes_left == 0:
            with anyio.CancelScope(shield=True):
                await self._shut_down()

    async def _shut_down(self) -> None:
        for future in list(self._futures):
            future.cancel()
        shutdown = getattr(self.handler, "shutdown", None)
        try:
            with anyio.move_on_after(SHUTDOWN_TIMEOUT_S) as scope:
                if callable(shutdown):
                    if inspect.iscoroutinefunction(shutdown):
                        await shutdown()
                    elif _overridden(self.handler, "shutdown"):
                        # Its own thread: the others may be stuck in user calls.
                        worker = _Worker("flowrtc-shutdown")
                        try:
                            result = await worker.call(shutdown)
                        finally:
                            worker.close()
                        if inspect.isawaitable(result):
                            await result
            if scope.cancelled_caught:
                logger.warning("%s.shutdown() took longer than %.0f s", type(self.handler).__name__, SHUTDOWN_TIMEOUT_S)
        except Exception:
            logger.exception("%s.shutdown() failed", type(self.handler).__name__)
        finally:
            for worker in self._workers.values():
                worker.close()

    # -- receive/emit lockstep ---------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        self.busy_since = anyio.current_time() if busy else None
        self._signal()

    def set_answered(self, received: int) -> None:
        if received > self.answered:
            self.answered = received
            self._signal()

    def _signal(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    async def await_answer(self) -> None:
        """After a receive: let a sync ``emit`` answer it (called until ``None``) before the next one.

        This keeps output in step with input when input comes faster than real
        time (tests on recordings), and it is bounded: the wait ends as soon as
        the emitter has been busy ``ANSWER_WAIT_S`` in one step (a slow or
        blocking emit, or output the transport is not taking yet).
        """
        self.received += 1
        self.audio_wakeup.set()
        if not self.lockstep:
            return  # an async emit awaits its own queue: nothing to keep in step
        while self.answered < self.received and not self.closing:
            since = self.busy_since
            start = anyio.current_time() if since is None else since
            progress = self._progress
            with anyio.move_on_after(max(0.0, start + ANSWER_WAIT_S - anyio.current_time())) as scope:
                await progress.wait()
            if scope.cancelled_caught:
                return

    # -- output ---------------------------------------------------------------------
    def clear_queue(self) -> None:
        """Drop queued output audio: an ``Interrupt`` goes out now (or with the next output)."""
        self.clears += 1
        event = Interrupt(media_time_s=self.input_time_s)
        if self.session is None or not self.session.emit_nowait(event):
            self.interrupt_pending = True

    async def next_output(self, kind: str, fn: Callable[..., Any], wakeup: _Wakeup) -> Any:
        """Call ``fn`` (an emit method) until it returns something; ``_STOP`` when the output is over.

        An emit returning ``None`` at once is called again when woken (after a
        receive, start_up or ``notify_emit``), or after a poll delay that starts at
        ``MIN_POLL_S`` and doubles up to ``MAX_POLL_S`` while nothing happens. An
        emit that took a while (it waited on a queue itself) is called again at once.
        """
        delay = MIN_POLL_S
        track = kind == "emit"
        while not self.closing:
            started = anyio.current_time()
            received = self.received
            value: Any = None
            if track:
                self.set_busy(True)
            with self.stoppable() as scope:
                if self.input_done:
                    scope.deadline = started + END_GRACE_S
                self._call_scopes.add(scope)
                try:
                    value = await self.call(kind, fn)
                finally:
                    self._call_scopes.discard(scope)
            if scope.cancelled_caught or self.closing:
                return _STOP
            if value is not None:
                return value  # still busy: handing the output on
            if track:
                self.set_busy(False)
                self.set_answered(received)
            if self.input_done:
                return _STOP
            if anyio.current_time() - started >= MIN_POLL_S:
                delay = MIN_POLL_S
                continue
            with self.stoppable() as scope:
                woke = await wakeup.wait(delay)
            if scope.cancelled_caught:
                return _STOP
            delay = MIN_POLL_S if woke else min(delay * 2, MAX_POLL_S)
        return _STOP


def _overridden(handler: Any, name: str) -> bool:
    """Whether ``handler`` has its own ``name`` method rather than a base class's no-op."""
    method = getattr(type(handler), name, None)
    return method is not None and all(method is not getattr(base, name, None) for base in _NO_OP_BASES)


_NO_OP_BASES = (StreamHandlerBase, StreamHandler, AsyncStreamHandler)


def _stamp(item: Any, media_time_s: float) -> Any:
    if isinstance(item, AdditionalOutputs):
        item.media_time_s = media_time_s
    elif isinstance(item, Event) and item.media_time_s == 0.0:
        item = msgspec.structs.replace(item, media_time_s=media_time_s)
    return item


class _AudioPlacer:
    """Places emitted audio on the output timeline and converts it to the output rate.

    Audio plays when it is emitted, or after the audio before it: each chunk
    starts at ``max(end of the previous one, input media time now)``.
    """

    def __init__(self, sample_rate: int | None) -> None:
        self.resampler = Resampler(sample_rate)
        self.rate = 0
        self.end_pts = 0

    def place(self, value: Any, now_s: float) -> list[Any]:
        out: list[Any] = []
        for item in normalize_output(value):
            if isinstance(item, AudioChunk):
                if item.sample_rate != self.rate:
                    self.end_pts = -(-self.end_pts * item.sample_rate // self.rate) if self.rate else 0
                    self.rate = item.sample_rate
                pts = max(self.end_pts, round(now_s * item.sample_rate))
                chunk = item.with_pts(pts)
                self.end_pts = chunk.end_pts
                out.extend(self.resampler.push(chunk))
            else:
                out.append(_stamp(item, now_s))
        return out

    @property
    def position_s(self) -> float:
        """Where the audio placed so far ends, in seconds."""
        return self.end_pts / self.rate if self.rate else 0.0

    def reset(self) -> None:
        self.resampler.reset()
        self.end_pts = 0

    def flush(self) -> list[Any]:
        return self.resampler.flush()


# --------------------------------------------------------------------------- pipelines
async def _quietly(run: Callable[..., Any], *args: Any) -> AsyncIterator[Any]:
    """A pipeline that produces nothing: it runs ``run(*args)`` and ends."""
    await run(*args)
    return
    yield  # pragma: no cover - makes this an async generator


async def _receive_audio(driver: _Driver, source: AsyncIterable[Any]) -> None:
    handler = driver.handler
    stream = rechunk.raw(
        resample.raw(decode.raw(source), handler.input_sample_rate, layout=handler.expected_layout),
        duration_ms=INPUT_FRAME_MS,
    )
    try:
        with driver.stoppable() as scope:
            async with scoped(stream) as items:
                async for item in items:
                    if isinstance(item, AudioChunk):
                        driver.input_time_s = item.media_time_s + item.duration_s
                        await driver.call("receive", handler.receive, handler_audio(item))
                        await driver.await_answer()
        if not scope.cancelled_caught:
            driver.receiver_done()
    finally:
        await driver.pipe_done()


async def _receive_video(driver: _Driver, source: AsyncIterable[Any]) -> None:
    handler = driver.handler
    try:
        with driver.stoppable() as scope:
            async with scoped(decode.raw(source)) as items:
                async for item in items:
                    if isinstance(item, VideoFrame):
                        driver.last_video = item
                        await driver.call("video_receive", handler.video_receive, np.array(item.image))
                        driver.video_wakeup.set()
        if not scope.cancelled_caught:
            driver.receiver_done()
    finally:
        await driver.pipe_done()


async def _start_up(driver: _Driver) -> None:
    start_up = getattr(driver.handler, "start_up", None)
    try:
        if callable(start_up) and _overridden(driver.handler, "start_up"):
            with driver.stoppable():
                await driver.call("start_up", start_up)
            driver.wake_emitters()
    finally:
        await driver.pipe_done()


async def _discard_messages(driver: _Driver, source: AsyncIterable[Any]) -> None:
    # StreamHandlers have no method for client messages; reading them keeps the channel flowing.
    try:
        with driver.stoppable():
            async with scoped(source) as items:
                async for _ in items:
                    pass
    finally:
        await driver.pipe_done()


async def _emit_audio(driver: _Driver) -> AsyncIterator[Any]:
    handler = driver.handler
    placer = _AudioPlacer(handler.output_sample_rate)
    clears = 0
    try:
        while True:
            value = await driver.next_output("emit", handler.emit, driver.audio_wakeup)
            if driver.clears != clears:
                clears = driver.clears
                placer.reset()
            if driver.interrupt_pending:
                driver.interrupt_pending = False
                yield Interrupt(media_time_s=driver.input_time_s)
            if value is _STOP:
                break
            driver.set_busy(True)  # handing the output on (the transport may not take it yet)
            for item in placer.place(value, driver.input_time_s):
                if isinstance(item, CloseStream):
                    driver.close()
                    yield item
                    return
                yield item
        for item in placer.flush():
            yield item
    finally:
        driver.emitter_done()
        await driver.pipe_done()


async def _emit_video(driver: _Driver) -> AsyncIterator[Any]:
    handler = driver.handler
    try:
        while True:
            value = await driver.next_output("video_emit", handler.video_emit, driver.video_wakeup)
            if value is _STOP:
                break
            for item in normalize_output(value, like=driver.last_video):
                if isinstance(item, CloseStream):
                    driver.close()
                    yield _stamp(item, driver.input_time_s)
                    return
                yield _stamp(item, driver.input_time_s)
    finally:
        driver.emitter_done()
        await driver.pipe_done()


def stream_handler_graph(handler: Any) -> Graph:
    """The graph that drives a StreamHandler (or an audio-video one) for one session.

    Input audio reaches ``receive`` as ``(input_sample_rate, int16 (1, n))`` in
    20 ms frames (resampled from whatever the transport delivers); what ``emit``
    returns goes out at ``output_sample_rate``. See the module docstring for how
    ``emit`` is driven.
    """
    video = has_video_methods(handler)

    def build(ports: Ports) -> list[AsyncIterable[Any]]:
        count = 6 if video else 4
        driver = _Driver(handler, video=video, pipes=count)
        pipes: list[AsyncIterable[Any]] = [
            _quietly(_start_up, driver),
            _quietly(_receive_audio, driver, ports.audio),
            _emit_audio(driver),
            _quietly(_discard_messages, driver, ports.messages),
        ]
        if video:
            pipes += [_quietly(_receive_video, driver, ports.video), _emit_video(driver)]
        return pipes

    return Graph(build=build, name=type(handler).__name__, modality="audio-video" if video else "audio")
