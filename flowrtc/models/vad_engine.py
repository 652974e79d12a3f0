"""A shared engine that batches the Silero VAD windows of many concurrent streams.

Each :class:`EngineStream` cuts its own audio into windows on the event loop;
the :class:`VADEngine` gathers one ready window from every stream that has one,
scores them as one batched call of :meth:`SileroVAD.infer` on the engine's
own worker thread, and hands every stream its probability and
new state. A stream with several windows ready has them scored in successive
batches, so its state flows in order. Rows are independent in the model, so
batching does not change any stream's probabilities.

Batches form naturally: a batch takes whatever is ready when the previous one
is handed over. When fewer than half of the idle streams have a window ready (audio
arriving in real time, each stream every 32 ms), the engine first waits up to
``max_wait_ms`` (or until a running batch ends) for more to arrive, so a busy
server runs a few large batches instead of many tiny ones (each model call costs
about 0.1 ms before its first row). Streams fed faster than real time are all ready at once and never wait.
Nothing polls: the wait ends on a timer or when enough streams are ready.
"""

from __future__ import annotations

import asyncio
import functools
import os
import queue
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, GraphError
from .silero import STATE_SHAPE, SUPPORTED_RATES, SileroVAD, VADStream, _check_rate, get_silero_vad

__all__ = ["EngineStream", "VADEngine", "get_vad_engine", "DEFAULT_MAX_WAIT_MS"]

#: Longest a window waits for other streams' windows to fill its batch, in ms.
#: Bounded by what a reply can afford: it adds at most this to the wall-clock
#: time from the end of a turn to the reply (media-time latency is unchanged).
DEFAULT_MAX_WAIT_MS = 10.0


#: Batches handed to the worker thread at once: while one is scored, the next is
#: gathered and queued behind it, so the thread never waits for the event loop
#: between batches (each stream is in at most one of them).
MAX_BATCHES_IN_FLIGHT = 2

#: Seconds the engine's inference thread waits for another batch before it exits.
WORKER_IDLE_S = 2.0


class _Worker:
    """The one thread that runs an engine's batches, started on demand.

    It exits after ``WORKER_IDLE_S`` with nothing to do, so an idle server holds
    no thread for its VAD. A batch costs one queue put, one thread wake-up and one
    ``call_soon_threadsafe``: less than a general-purpose executor or anyio's
    worker pool, whose capacity limiter goes through the event loop on every call.
    """

    __slots__ = ("_queue", "_thread", "_lock")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the worker thread; the future resolves on ``loop``."""
        future = loop.create_future()
        self._queue.put((loop, future, fn, args))
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="flowrtc-vad-engine", daemon=True)
                self._thread.start()
        return future

    def _serve(self) -> None:
        while True:
            try:
                loop, future, fn, args = self._queue.get(timeout=WORKER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            try:
                outcome: tuple[Any, Any] = (_resolve, fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                outcome = (_fail, exc)
            try:
                loop.call_soon_threadsafe(outcome[0], future, outcome[1])
            except RuntimeError:  # the loop has closed: nobody waits for this batch
                pass


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class _Job:
    """The windows of one ``push`` call and the probabilities found for them so far."""

    __slots__ = ("windows", "probs", "next", "future", "dropped")

    def __init__(self, windows: np.ndarray, future: asyncio.Future[list[float]]) -> None:
        self.windows = windows
        self.probs: list[float] = []
        self.next = 0
        self.future = future
        self.dropped = False


class EngineStream:
    """One audio stream served by a :class:`VADEngine`; made by :meth:`VADEngine.stream`.

    Not safe to share between event loops. Close it (``await stream.aclose()``,
    :meth:`close`, or ``async with``) to free its slot in the engine.
    """

    def __init__(self, engine: VADEngine, sample_rate: int, slot: int) -> None:
        """Attach a stream to ``engine`` at ``slot`` (use :meth:`VADEngine.stream`)."""
        self._engine = engine
        self._cutter = VADStream(sample_rate, engine.model)  # windowing only; state is in the engine
        #: Sample rate in Hz (8000 or 16000).
        self.sample_rate: int = self._cutter.sample_rate
        self._slot = slot
        self._jobs: deque[_Job] = deque()
        self._queued = False
        self._closed = False
        self._finalizer = weakref.finalize(self, engine._free_slot, slot)

    @property
    def closed(self) -> bool:
        """Whether the stream was closed."""
        return self._closed

    async def push(self, samples: Any) -> list[float]:
        """Append ``samples`` (1-D, float in [-1, 1] or int16) and score the ready windows.

        Returns one speech probability per complete window now available, in
        stream order (empty if none). If the awaiting task is cancelled, the
        windows are still scored (the stream's state must move past them) and
        their probabilities are dropped.
        """
        if self._closed:
            raise GraphError("this VAD engine stream is closed")
        windows = self._cutter.prepare(samples)
        if len(windows) == 0:
            return []
        loop = self._engine._bind_loop()
        job = _Job(windows, loop.create_future())
        self._jobs.append(job)
        self._engine._enqueue(self)
        return await job.future

    #: Alias of :meth:`push`.
    probabilities = push

    @property
    def last_windows(self) -> np.ndarray:
        """The windows (float32 rows, context first) the last :meth:`push` scored."""
        return self._cutter.last_windows

    def _drop_jobs(self, exc: BaseException | None = None) -> None:
        """Abandon every pending window, failing (or cancelling) the waiting callers."""
        for job in self._jobs:
            job.dropped = True
            if not job.future.done():
                if exc is None:
                    job.future.cancel()
                else:
                    job.future.set_exception(exc)
        self._jobs.clear()
        if self._queued:
            self._queued = False
            try:
                self._engine._ready[self.sample_rate].remove(self)
            except ValueError:  # it is in the batch running now
                pass
            else:
                self._engine._ready_count -= 1

    def reset(self) -> None:
        """Forget all audio and state; pending ``push`` calls are cancelled."""
        self._drop_jobs()
        self._cutter.reset()
        if not self._closed:
            self._engine._states[:, self._slot, :] = 0.0

    def close(self) -> None:
        """Free the stream's slot in the engine; pending ``push`` calls are cancelled."""
        if self._closed:
            return
        self._drop_jobs()
        self._closed = True
        self._finalizer()

    async def aclose(self) -> None:
        """Close the stream (see :meth:`close`)."""
        self.close()

    async def __aenter__(self) -> EngineStream:
        """Return the stream itself."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the stream."""
        self.close()

    def __repr__(self) -> str:
        """Show rate, slot and state."""
        state = "closed" if self._closed else f"slot={self._slot}, pending={len(self._jobs)}"
        return f"EngineStream(sample_rate={self.sample_rate}, {state})"


class VADEngine:
    """Batches the VAD windows of many concurrent streams of one event loop into few model calls.

    ``max_wait_ms`` (default 10) is the longest a window waits for others to
    join its batch, and only when fewer than half of the open streams have one
    ready; 0 runs every batch as soon as the previous one ends. ``max_batch_size``
    caps the rows of one call (streams beyond it wait their turn, round robin).
    Inference runs on the engine's own thread, one batch at a time; the thread
    exits when the engine has been idle for ``WORKER_IDLE_S`` (2 s).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
        max_batch_size: int = 256,
    ) -> None:
        """Make an engine on the shared model for ``model_path`` (default: the packaged one)."""
        if max_wait_ms < 0:
            raise ConfigurationError(f"max_wait_ms must be >= 0, not {max_wait_ms!r}")
        if max_batch_size < 1:
            raise ConfigurationError(f"max_batch_size must be >= 1, not {max_batch_size!r}")
        #: The shared model all batches run on.
        self.model: SileroVAD = get_silero_vad(model_path)
        self.max_wait_ms = float(max_wait_ms)
        self.max_batch_size = int(max_batch_size)
        self._states = np.zeros((STATE_SHAPE[0], 16, STATE_SHAPE[2]), dtype=np.float32)
        self._free: list[int] = list(range(15, -1, -1))
        self._ready: dict[int, deque[EngineStream]] = {rate: deque() for rate in SUPPORTED_RATES}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready_count = 0
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._finished = 0
        self._in_flight_streams = 0
        self._batch_done: asyncio.Future[None] | None = None
        self._worker = _Worker()
        self._enough: asyncio.Future[None] | None = None
        #: Model calls made so far.
        self.batches = 0
        #: Windows scored so far (sum of the batch sizes).
        self.windows = 0

    @property
    def active_streams(self) -> int:
        """Streams currently holding a slot."""
        return self._states.shape[1] - len(self._free)

    def stream(self, sample_rate: int) -> EngineStream:
        """Open a stream at ``sample_rate`` Hz (8000 or 16000) on this engine."""
        rate = _check_rate(sample_rate)
        if not self._free:
            size = self._states.shape[1]
            grown = np.zeros((STATE_SHAPE[0], size * 2, STATE_SHAPE[2]), dtype=np.float32)
            grown[:, :size, :] = self._states
            self._states = grown
            self._free.extend(range(size * 2 - 1, size - 1, -1))
        slot = self._free.pop()
        self._states[:, slot, :] = 0.0
        return EngineStream(self, rate, slot)

    def _free_slot(self, slot: int) -> None:
        self._free.append(slot)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None and not self._loop.is_closed() and self._task is not None:
                raise GraphError("a VADEngine serves one event loop at a time")
            self._loop = loop
            self._task = None
        return loop

    def _enqueue(self, stream: EngineStream) -> None:
        if not stream._queued:
            stream._queued = True
            self._ready[stream.sample_rate].append(stream)
            self._ready_count += 1
            enough = self._enough
            if enough is not None and not enough.done() and self._enough_ready():
                enough.set_result(None)
        if self._task is None:
            assert self._loop is not None
            self._task = self._loop.create_task(self._run(), name="flowrtc-vad-engine")

    async def _run(self) -> None:
        """Start batches until no stream has a window waiting and none is being scored, then end."""
        try:
            first = True
            while True:
                if not first:
                    # Let the tasks woken by the last batch push again before the next one.
                    await asyncio.sleep(0)
                first = False
                if len(self._in_flight) >= MAX_BATCHES_IN_FLIGHT:
                    await self._wait_for_batch()
                    continue
                if self.max_wait_ms > 0 and not self._enough_ready():
                    finished = self._finished
                    await self._gather(self.max_wait_ms / 1000.0)
                    if self._finished != finished:
                        continue  # a batch ended: let its streams push, then look again
                started = False
                for rate, ready in self._ready.items():
                    if ready and len(self._in_flight) < MAX_BATCHES_IN_FLIGHT:
                        self._start_batch(rate, ready)
                        started = True
                if not started:
                    if not self._in_flight:
                        return
                    await self._wait_for_batch()
        finally:
            # If cancelled with work left, the next push starts a new task for it.
            self._task = None

    def _enough_ready(self) -> bool:
        """Whether enough streams have a window ready to make a batch worth a model call.

        Half of the streams not being scored now; with a batch running, also at
        least an eighth of all streams, so that streams fed faster than real time
        wait for the running batch and join the next one whole instead of
        trickling into small ones.
        """
        idle = self.active_streams - self._in_flight_streams
        need = idle / 2 if not self._in_flight else max(idle / 2, self.active_streams / 8)
        return self._ready_count >= need

    async def _gather(self, timeout_s: float) -> None:
        """Wait until half of the open streams have a window ready, a batch ends, or ``timeout_s`` passed."""
        assert self._loop is not None
        enough = self._enough = self._loop.create_future()
        timer = self._loop.call_later(timeout_s, _set_done, enough)
        try:
            await enough
        finally:
            timer.cancel()
            self._enough = None

    async def _wait_for_batch(self) -> None:
        """Wait until a batch being scored has finished."""
        assert self._loop is not None
        done = self._batch_done = self._loop.create_future()
        try:
            await done
        finally:
            self._batch_done = None

    def _start_batch(self, rate: int, ready: deque[EngineStream]) -> None:
        """Hand one window of each of up to ``max_batch_size`` ready streams at ``rate`` to the worker."""
        n = min(len(ready), self.max_batch_size)
        streams = [ready.popleft() for _ in range(n)]
        self._ready_count -= n
        jobs = [s._jobs[0] for s in streams]
        windows = np.stack([job.windows[job.next] for job in jobs])
        slots = np.fromiter((s._slot for s in streams), dtype=np.intp, count=n)
        state = self._states[:, slots, :]
        assert self._loop is not None
        # A stream is in at most one batch (it is queued again only when its batch
        # ends), and one thread runs the batches in order, so states flow in order.
        future = self._worker.submit(self._loop, self.model.infer, windows, state, rate)
        self._in_flight.add(future)
        self._in_flight_streams += n
        future.add_done_callback(functools.partial(self._finish_batch, ready, streams, jobs, slots))

    def _finish_batch(
        self, ready: deque[EngineStream], streams: list[EngineStream], jobs: list[_Job], slots: np.ndarray, future: asyncio.Future[Any]
    ) -> None:
        """Store the batch's states and hand every stream its probability (a done callback)."""
        self._in_flight.discard(future)
        self._in_flight_streams -= len(streams)
        self._finished += 1
        for waiter in (self._batch_done, self._enough):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        exc = future.exception() if not future.cancelled() else GraphError("a VAD batch was cancelled")
        if exc is not None:
            for s, job in zip(streams, jobs):
                if not job.dropped:
                    s._queued = False
                    s._drop_jobs(exc)
                    s._cutter.reset()
                    self._states[:, s._slot, :] = 0.0
            return
        probs, new_state = future.result()
        n = len(streams)
        self.batches += 1
        self.windows += n
        keep = [i for i, job in enumerate(jobs) if not job.dropped]
        if len(keep) == n:
            self._states[:, slots, :] = new_state
        elif keep:
            self._states[:, slots[keep], :] = new_state[:, keep, :]
        values = probs.tolist()
        for i in keep:
            s, job = streams[i], jobs[i]
            job.probs.append(values[i])
            job.next += 1
            if job.next == len(job.windows):
                s._jobs.popleft()
                if not job.future.done():
                    job.future.set_result(job.probs)
            if s._jobs:
                ready.append(s)
                self._ready_count += 1
            else:
                s._queued = False
        if self._task is None and self._ready_count:
            assert self._loop is not None
            self._task = self._loop.create_task(self._run(), name="flowrtc-vad-engine")

    def __repr__(self) -> str:
        """Show the model, the streams and the batch counts."""
        return (
            f"VADEngine({str(self.model.model_path)!r}, streams={self.active_streams}, "
            f"batches={self.batches}, windows={self.windows})"
        )


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_engines: weakref.WeakKeyDictionary[Any, dict[Path, VADEngine]] = weakref.WeakKeyDictionary()
_unbound: dict[Path, VADEngine] = {}


def get_vad_engine(model_path: str | os.PathLike[str] | None = None) -> VADEngine:
    """Return the shared :class:`VADEngine` of the running event loop for ``model_path``.

    Called outside an event loop it returns one process-wide engine, which binds
    to the loop it is first used in. ``None`` means the packaged model.
    """
    key = get_silero_vad(model_path).model_path
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        engines = _unbound
    else:
        engines = _engines.setdefault(loop, {})
    engine = engines.get(key)
    if engine is None:
        engine = engines[key] = VADEngine(key)
    return engine
