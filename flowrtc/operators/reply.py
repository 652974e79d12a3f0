"""``reply``: answer each ``Utterance`` with the stream of what the user's function yields.

This is the "map" half of a switch-map: every turn becomes a :class:`Reply`, an
async iterable of output items that nobody has started yet. ``interrupt``
is the other half: it runs one reply at a time, places its audio in media
time and cuts it off when the user barges in.

The user's function is called FastRTC's way: ``fn((rate, int16 (1, n)), *args)``,
any kind (plain, async, generator, async generator; sync code runs in worker
threads), with the session's extra inputs as ``args``. What it yields may be
audio in any shape and rate, ``AdditionalOutputs``, ``CloseStream`` or events.

A ``PendingUtterance`` (``turn_taking(early_pause_ms=...)``) starts the function
early and runs it up to its first value, which is held until the ``Utterance``
it foresaw arrives; the reply then begins with it at once. If the user goes on
instead (``SpeechResumed``), the early call is closed and nothing it made is sent.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterator, Sequence

import anyio

from flowrtc.events import AdditionalOutputs, PendingUtterance, SpeechResumed, Utterance
from flowrtc.media import AudioChunk, Layout
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.handler import iterate_call, normalize_output
from flowrtc.operators.resample import Resampler

__all__ = ["reply", "Reply", "takes_extra_args", "catch_up_s", "offline_replies", "CatchUp", "CATCH_UP_S"]

#: Wall time (s) a reply running behind its input gets, in a live session, to
#: produce its audio up to the moment a barge-in judges it at.
CATCH_UP_S = 0.1
_catch_up_s: ContextVar[float] = ContextVar("flowrtc_catch_up_s", default=CATCH_UP_S)


def catch_up_s() -> float:
    """Wall time (s) a reply behind its input gets to catch up before it is judged.

    A barge-in at media time ``t`` cuts a reply whose audio would still be
    playing at ``t``. A reply still being made (a TTS voice, an LLM) may not
    have produced its audio up to ``t`` yet; ``interrupt`` and ``tts`` first
    let it produce for up to this long. In a live session that is
    :data:`CATCH_UP_S` (a stalled reply is cut at most that late); inside
    :func:`offline_replies` it is unlimited (``math.inf``).
    """
    return _catch_up_s.get()


class CatchUp:
    """One catch-up's wall-time budget of :func:`catch_up_s`, started now."""

    __slots__ = ("_loop", "_deadline")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + catch_up_s()

    async def wait(self, task: asyncio.Future[Any]) -> bool:
        """Wait for ``task`` within the budget; whether it is done."""
        left = None if math.isinf(self._deadline) else max(0.0, self._deadline - self._loop.time())
        done, _ = await asyncio.wait([task], timeout=left)
        return bool(done)


@contextmanager
def offline_replies() -> Iterator[None]:
    """Judge replies in media time alone, however long they take to make.

    For input fed faster than real time (``flowrtc.testing.run`` does this
    unless ``realtime=True``): a user's next turn then reaches a barge-in check
    sooner in wall time than it would live, and whether a slow reply had
    finished by then would depend on the machine's speed. Graphs started
    inside the block (the context is inherited by their tasks) wait for the
    reply instead, so the same input gives the same output on any machine.
    """
    token = _catch_up_s.set(math.inf)
    try:
        yield
    finally:
        _catch_up_s.reset(token)


class Reply:
    """One turn's answer: the items ``fn`` will yield, produced on demand.

    Attributes:
        media_time_s: input media time of the turn it answers (its audio is
            placed from here on, or after the previous reply).
        utterance: the turn, or ``None`` for the start-up reply.

    Iterate it once; ``aclose()`` stops the user's function and closes its generator.
    """

    __slots__ = ("media_time_s", "utterance", "_items")

    def __init__(self, items: AsyncIterator[Any], *, media_time_s: float, utterance: Utterance | None = None) -> None:
        self._items = items
        self.media_time_s = media_time_s
        self.utterance = utterance

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._items

    async def aclose(self) -> None:
        aclose = getattr(self._items, "aclose", None)
        if aclose is not None:
            await aclose()

    def __repr__(self) -> str:
        return f"Reply(media_time_s={self.media_time_s:.3f})"


def takes_extra_args(fn: Callable[..., Any]) -> bool:
    """FastRTC's rule: a reply function with more than one parameter wants the client's inputs."""
    try:
        return len(inspect.signature(fn).parameters) > 1
    except (TypeError, ValueError):
        return False


def _takes_args(fn: Callable[..., Any]) -> bool:
    try:
        return bool(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False


async def _answer(
    fn: Callable[..., Any],
    utterance: Utterance | None,
    *,
    sample_rate: int | None,
    args: Sequence[Any] | Callable[[], Sequence[Any]] | None,
    needs_args: bool,
    output_sample_rate: int | None,
    limiter: anyio.CapacityLimiter | None,
    layout: Layout | None = None,
    hold: anyio.Event | None = None,
) -> AsyncIterator[Any]:
    # ``hold`` (an early reply): after fn's first value, go no further until it is set;
    # never set, the call was withdrawn and did not answer a turn.
    from flowrtc.session import current_session  # the session layer imports operators

    session = current_session()
    if args is None:
        if needs_args and session is not None:
            if not session.phone_mode and not session.args_set.is_set():
                await session.wait_for_args()
            extra: Sequence[Any] = session.latest_args
        else:
            extra = ()
    else:
        extra = args() if callable(args) else args
    if utterance is None:
        call_args: tuple[Any, ...] = tuple(extra)
    else:
        turn = utterance.audio
        converts = (sample_rate is not None and sample_rate != turn.sample_rate) or (layout is not None and layout != turn.layout)
        audio = await _off_loop(_to_user_audio, turn, sample_rate, layout, seconds=turn.duration_s if converts else 0.0)
        call_args = (audio, *extra)
    resampler: Resampler | None = None
    try:
        async with scoped(iterate_call(fn, *call_args, limiter=limiter)) as values:
            async for value in values:
                for out in normalize_output(value):
                    if isinstance(out, AudioChunk):
                        if resampler is None:
                            resampler = Resampler(output_sample_rate or out.sample_rate)
                        for chunk in await _off_loop(resampler.push, out, seconds=out.duration_s if resampler.sample_rate != out.sample_rate else 0.0):
                            yield chunk
                        continue
                    if isinstance(out, AdditionalOutputs) and session is not None and session.phone_mode:
                        # FastRTC on the phone: what a reply shows becomes the next call's inputs
                        # (an early reply's, only once its turn has ended).
                        if hold is not None:
                            await hold.wait()
                        session.latest_args = list(out.args)
                    yield out
                if hold is not None:
                    await hold.wait()
        if resampler is not None:
            for chunk in resampler.flush():
                yield chunk
    finally:
        if needs_args and args is None and session is not None and (hold is None or hold.is_set()):
            session.clear_args()  # as FastRTC: the next turn asks again (not on the phone)


#: Items an early reply's task keeps ready for ``interrupt`` (then it waits).
_AHEAD_ITEMS = 8
_DONE = object()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Ahead:
    """An early reply: ``fn``'s answer to a pending turn, run in its own task up to ``fn``'s first value.

    :meth:`confirm` (the turn ended as foreseen) lets it go on; it is then the
    ``Reply``'s items, what was made ahead first. :meth:`aclose` without a
    confirmation (the user went on) withdraws it; nothing it made is used.
    """

    __slots__ = ("pending", "_confirmed", "_stream", "_queue", "_scope", "_task")

    def __init__(self, pending: PendingUtterance, make: Callable[[anyio.Event], AsyncIterator[Any]]) -> None:
        self.pending = pending
        self._confirmed = anyio.Event()
        self._stream = make(self._confirmed)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=_AHEAD_ITEMS)
        self._scope = anyio.CancelScope()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        with self._scope:
            try:
                async for item in self._stream:
                    await self._queue.put(item)
            except Exception as error:  # noqa: BLE001 - handed to whoever plays the reply
                await self._queue.put(_Failed(error))
                return
            await self._queue.put(_DONE)

    def confirm(self) -> _Ahead:
        """The turn ended as foreseen: ``fn`` may go on past its first value."""
        self._confirmed.set()
        return self

    def __aiter__(self) -> _Ahead:
        return self

    async def __anext__(self) -> Any:
        item = await self._queue.get()
        if item is _DONE:
            self._queue.put_nowait(_DONE)  # stays ended
            raise StopAsyncIteration
        if isinstance(item, _Failed):
            self._queue.put_nowait(_DONE)
            raise item.error
        return item

    async def aclose(self) -> None:
        """Stop the function (a step in a worker thread finishes first) and close its generator."""
        self._scope.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self._task
            except BaseException:  # noqa: BLE001 - a closed reply has no one to tell
                pass
            try:
                await self._stream.aclose()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - same
                pass


#: Conversions of more than this much audio run in a worker thread, not on the event
#: loop (resampling costs about 0.5 ms per second of audio). Audio that needs no
#: conversion never makes the trip: under load a worker thread must wait for the GIL.
_OFF_LOOP_S = 1.0


async def _off_loop(convert: Callable[..., Any], *args: Any, seconds: float) -> Any:
    # A long turn converted on the event loop would stall every other session.
    if seconds > _OFF_LOOP_S:
        return await anyio.to_thread.run_sync(convert, *args)
    return convert(*args)


def _to_user_audio(audio: AudioChunk, sample_rate: int | None, layout: Layout | None = None) -> tuple[int, Any]:
    """FastRTC's input shape, ``(rate, int16 (channels, n))``, at ``sample_rate`` and ``layout``."""
    if layout is not None:
        audio = audio.to_layout(layout)
    if sample_rate is not None and audio.sample_rate != sample_rate:
        if audio.n_samples:
            converter = Resampler(sample_rate)
            pieces = [*converter.push(audio.to_int16()), *converter.flush()]
            audio = AudioChunk.concat(pieces) if pieces else AudioChunk.silence(0.0, sample_rate)
        else:
            audio = AudioChunk.silence(0.0, sample_rate)
    return audio.sample_rate, audio.to_int16().samples


@operator
async def reply(
    source: AsyncIterable[Any],
    fn: Callable[..., Any],
    *,
    args: Sequence[Any] | Callable[[], Sequence[Any]] | None = None,
    needs_args: bool | None = None,
    sample_rate: int | None = None,
    output_sample_rate: int | None = None,
    startup_fn: Callable[..., Any] | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    layout: Layout | None = None,
) -> AsyncIterator[Any]:
    """Replace each ``Utterance`` with a :class:`Reply`; pass every other item on.

    Options:
        fn: called as ``fn((rate, int16 array (1, n)), *args)`` for each turn.
        args: extra arguments (or a callable returning them). Default: the
            session's ``latest_args`` when ``fn`` wants them (see ``needs_args``).
        needs_args: ``fn`` needs the client's inputs: before each turn, if none
            are set, ask (``send_input``) and wait, except on the phone. Default:
            ``fn`` has more than one parameter (FastRTC's rule).
        sample_rate: rate in Hz of the audio handed to ``fn`` (default: as received).
        layout: ``"mono"`` or ``"stereo"`` audio for ``fn`` (default: as received).
            Converting the turn here, once, costs less than converting every frame.
        output_sample_rate: rate in Hz the reply's audio is converted to (default:
            the rate of its first audio).
        startup_fn: called once, before any turn, with the extra arguments only
            (none if it takes no parameters); its reply plays first.
        limiter: bounds the worker threads used for sync code.

    A ``PendingUtterance`` calls ``fn`` at once, on the turn as it will be if the
    pause going on ends it, and runs it up to its first value (a generator's
    first yield, a plain function's return), which is held. When that
    ``Utterance`` comes, its ``Reply`` starts with what was made ahead and
    ``fn`` goes on; a ``SpeechResumed`` (or a different ``Utterance``) closes
    the early call unheard. So ``fn`` may be started, and closed at its first
    yield, for a pause that turns out to be inside the turn: work before the
    first yield (recognising the speech, asking a language model, the first
    sentence of speech) is what starting early saves; side effects that must
    happen once per turn (a chat history) belong after it.

    A ``Reply`` must be run by ``interrupt``, which places and cuts its audio.
    """
    if needs_args is None:
        needs_args = takes_extra_args(fn)
    options = {"args": args, "sample_rate": sample_rate, "output_sample_rate": output_sample_rate, "limiter": limiter, "layout": layout}
    if startup_fn is not None:
        # FastRTC calls startup_fn with the extra inputs only: so only if it takes any.
        yield Reply(_answer(startup_fn, None, needs_args=_takes_args(startup_fn), **options), media_time_s=0.0)  # type: ignore[arg-type]
    early: _Ahead | None = None
    closing: list[asyncio.Task[None]] = []

    def withdraw() -> None:
        # In a task: a step of a sync fn in a worker thread must not hold up the events behind it.
        nonlocal early
        if early is not None:
            closing[:] = [task for task in closing if not task.done()]
            closing.append(asyncio.get_running_loop().create_task(early.aclose()))
            early = None

    try:
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, Utterance):
                    if early is not None and early.pending.foresees(item):
                        answer: AsyncIterator[Any] = early.confirm()
                        early = None
                    else:
                        withdraw()
                        answer = _answer(fn, item, needs_args=needs_args, **options)  # type: ignore[arg-type]
                    yield Reply(answer, media_time_s=item.media_time_s, utterance=item)
                    continue
                if isinstance(item, PendingUtterance):
                    withdraw()
                    turn = item.utterance
                    early = _Ahead(item, lambda hold: _answer(fn, turn, needs_args=needs_args, hold=hold, **options))  # type: ignore[arg-type]
                elif isinstance(item, SpeechResumed):
                    withdraw()
                yield item
    finally:
        with anyio.CancelScope(shield=True):
            withdraw()
            for task in closing:
                await task
