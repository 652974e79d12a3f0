"""``interrupt``: play replies one at a time, in media time, and cut them on barge-in.

The "switch" half of a switch-map. Each :class:`~flowrtc.operators.reply.Reply`
coming from upstream is run while upstream keeps flowing, and its audio is
placed in media time: from the turn's time ``t0`` on (pts ``round(t0 * rate)``
plus the samples so far), and never before the previous reply's audio ends.

A reply is *running* while its function is still producing **or** while its
audio would still be playing: at media time ``t`` that is "not finished, or
``t`` < the end of its placed audio". So a reply that was generated quickly
but plays for ten seconds is still running for those ten seconds (FastRTC
reset at the end of generation instead: its issues #381 and #352).

With ``can_interrupt=True`` a ``SpeechStarted`` at ``t`` (or a newer reply
answering a turn at ``t``) while a reply is running cancels it at once —
closing the user's generator — and emits ``Interrupt(t)``: ``encode`` and the
transport then drop every queued sample not yet played. With
``can_interrupt=False`` replies are never cut: later turns are answered after.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import msgspec

from flowrtc.events import AdditionalOutputs, Event, Interrupt, Log, ReplyEnded, ReplyStarted, SpeechStarted
from flowrtc.media import AudioChunk
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.reply import CatchUp, Reply

__all__ = ["interrupt"]

_END = object()
_CANCELLED = object()


class _Step:
    """One pending ``__anext__`` of an iterator, run in its own task.

    Cancelled through an anyio cancel scope rather than ``Task.cancel()``, so
    shielded work inside it is respected: a sync generator stepping in a worker
    thread finishes that step and is then closed in its thread, instead of being
    abandoned mid-step (when it could not be closed at all).
    """

    __slots__ = ("scope", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop, iterator: AsyncIterator[Any]) -> None:
        self.scope = anyio.CancelScope()
        self.task = loop.create_task(self._run(iterator))

    async def _run(self, iterator: AsyncIterator[Any]) -> Any:
        with self.scope:
            try:
                return await iterator.__anext__()
            except StopAsyncIteration:
                return _END
        return _CANCELLED

    def done(self) -> bool:
        return self.task.done()

    def cancel(self) -> None:
        self.scope.cancel()

    async def wait(self) -> None:
        """Wait for the step to end, whatever its outcome."""
        try:
            await self.task
        except BaseException:  # noqa: BLE001 - callers only need it finished
            pass


class _Playing:
    """A reply being run: where its audio goes and how far it has got."""

    __slots__ = ("reply", "items", "t0_s", "end_s", "step", "rate", "base_pts", "samples", "heard")

    def __init__(self, reply: Reply, t0_s: float) -> None:
        self.reply = reply
        self.items = reply.__aiter__()
        self.t0_s = t0_s
        self.end_s = t0_s  # end of the audio placed so far
        self.step: _Step | None = None
        self.rate = 0
        self.base_pts = 0
        self.samples = 0
        self.heard = False

    def place(self, chunk: AudioChunk) -> AudioChunk:
        if chunk.sample_rate != self.rate:
            self.rate = chunk.sample_rate
            self.base_pts = round(self.end_s * self.rate)
            self.samples = 0
        placed = chunk.with_pts(self.base_pts + self.samples)
        self.samples += chunk.n_samples
        self.end_s = placed.end_pts / self.rate
        return placed

    def stamp(self, item: Any) -> Any:
        """Give an event without a time of its own the reply's current media time."""
        if isinstance(item, Event) and item.media_time_s == 0.0:
            return msgspec.structs.replace(item, media_time_s=self.end_s)
        if isinstance(item, AdditionalOutputs) and item.media_time_s == 0.0:
            return AdditionalOutputs(*item.args, media_time_s=self.end_s)
        return item


async def _close(step: _Step | None, reply: Reply) -> None:
    """Let a cancelled reply's current step end, then close its generator."""
    with anyio.CancelScope(shield=True):
        if step is not None:
            await step.wait()
        try:
            await reply.aclose()
        except Exception:  # noqa: BLE001 - same: an error while closing an abandoned reply
            pass


@operator
async def interrupt(source: AsyncIterable[Any], *, can_interrupt: bool = True) -> AsyncIterator[Any]:
    """Flatten replies in media time; cut the running one on barge-in.

    Options:
        can_interrupt: a ``SpeechStarted`` (or a newer reply) while a reply is
            running cuts it and emits ``Interrupt``; ``False`` plays every reply
            to its end and answers later turns after it.

    Emits, per reply: ``ReplyStarted`` (at ``t0``), ``Log("response_starting")``
    just before its first audio (or at its end if it had none), its items, and
    ``ReplyEnded`` when it has produced everything (``media_time_s``: where its
    audio ends) or was cut (``interrupted=True``).

    Before cutting at ``t`` a reply whose audio does not reach ``t`` yet gets
    :func:`~flowrtc.operators.reply.catch_up_s` of wall time to produce more
    (0.1 s live; unlimited in an offline run): a reply is then cut at the same
    place on every run, and a stalled one (nothing audible to cut) live at
    most that much later.
    """
    loop = asyncio.get_running_loop()
    waiting: deque[Reply] = deque()
    current: _Playing | None = None
    playing_until_s = 0.0  # end of the audio of replies that finished producing
    closing: list[asyncio.Task[Any]] = []
    pull: _Step | None = None
    upstream_done = False

    def running_at(t: float) -> bool:
        return current is not None or t < playing_until_s

    def cut(t: float) -> list[Any]:
        nonlocal current, playing_until_s
        if current is not None:
            step, current.step = current.step, None
            if step is not None:
                step.cancel()
            closing.append(loop.create_task(_close(step, current.reply)))
            current = None
        playing_until_s = min(playing_until_s, t)
        return [Interrupt(media_time_s=t), ReplyEnded(interrupted=True, media_time_s=t)]

    def take_step() -> list[Any]:
        """What the current reply's finished step produced."""
        nonlocal current, playing_until_s
        assert current is not None and current.step is not None
        value = current.step.task.result()
        current.step = None
        if value is _END:
            out: list[Any] = [] if current.heard else [Log(data="response_starting", media_time_s=current.end_s)]
            playing_until_s = current.end_s
            current = None
            return [*out, ReplyEnded(media_time_s=playing_until_s)]
        if isinstance(value, AudioChunk):
            placed = current.place(value)
            if current.heard:
                return [placed]
            current.heard = True
            return [Log(data="response_starting", media_time_s=placed.media_time_s), placed]
        return [current.stamp(value)]

    async def catch_up(t: float) -> list[Any]:
        """Let the running reply produce up to ``t`` (for at most ``catch_up_s()``) before it is judged there."""
        out: list[Any] = []
        budget = CatchUp()
        while current is not None and current.end_s < t:
            if current.step is None:
                current.step = _Step(loop, current.items)
            if not await budget.wait(current.step.task):
                break
            out.extend(take_step())
        return out

    async with scoped(source) as upstream:
        try:
            while True:
                if current is None and waiting:
                    reply = waiting.popleft()
                    current = _Playing(reply, max(reply.media_time_s, playing_until_s))
                    yield ReplyStarted(media_time_s=current.t0_s)
                if current is None and pull is None:
                    if upstream_done:
                        break
                    # Nothing to race upstream against: read it in this task. A step
                    # task and a wait per item cost two trips round a busy event loop.
                    try:
                        item = await upstream.__anext__()
                    except StopAsyncIteration:
                        upstream_done = True
                        continue
                else:
                    if pull is None and not upstream_done:
                        pull = _Step(loop, upstream)
                    if current is not None and current.step is None:
                        current.step = _Step(loop, current.items)
                    tasks = [step.task for step in (current.step if current else None, pull) if step is not None]
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

                    # The reply's output first: what it produced was produced before we look.
                    if current is not None and current.step is not None and current.step.done():
                        for out in take_step():
                            yield out
                    if pull is None or not pull.done():
                        continue
                    item = pull.task.result()
                    pull = None
                    if item is _END:
                        upstream_done = True
                        continue
                interrupting = isinstance(item, (Reply, SpeechStarted)) and can_interrupt
                if interrupting and current is not None:
                    for out in await catch_up(item.media_time_s):
                        yield out
                if isinstance(item, SpeechStarted):
                    yield item
                if interrupting and running_at(item.media_time_s):
                    for out in cut(item.media_time_s):
                        yield out
                if isinstance(item, Reply):
                    if can_interrupt:
                        for stale in waiting:
                            closing.append(loop.create_task(_close(None, stale)))
                        waiting.clear()
                    waiting.append(item)
                elif not isinstance(item, SpeechStarted):
                    yield item
        finally:
            # Before the upstream is closed: it must not be left mid-step in a task.
            with anyio.CancelScope(shield=True):
                leftovers = [step for step in (pull, current.step if current else None) if step is not None]
                for step in leftovers:
                    step.cancel()
                for step in leftovers:
                    await step.wait()
                if current is not None:
                    await _close(None, current.reply)
                for reply in waiting:
                    await _close(None, reply)
                for task in closing:
                    await task
