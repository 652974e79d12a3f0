"""``stt`` and ``tts``: speech to text and text to speech as pipeline stages.

A voice pipeline reads left to right::

    decode() | resample(16000) | vad() | pause_gate() | stt() | my_llm_step | tts() | encode()

``stt`` replaces each :class:`~flowrtc.events.Utterance` with a
:class:`~flowrtc.events.Transcript`; ``my_llm_step`` answers transcripts with
plain ``str`` items; ``tts`` speaks those strings as AudioChunks placed in media
time. Inference never runs on the event loop (``astt`` and ``stream_tts`` use
worker threads), and both operators default to the process-wide models of
:func:`~flowrtc.models.stt.get_stt_model` / :func:`~flowrtc.models.tts.get_tts_model`,
so every session shares one loaded model.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import anyio.to_thread

from flowrtc.events import Event, Interrupt, PendingUtterance, SpeechResumed, SpeechStarted, Transcript, Utterance
from flowrtc.media import AudioChunk
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.reply import CatchUp

__all__ = ["stt", "tts", "transcribe", "load_stt_model", "load_tts_model"]

_END = object()


async def load_stt_model(model: Any = None) -> Any:
    """``model``, or the shared default STT model (loaded in a worker thread the first time).

    Raises :class:`~flowrtc.errors.MissingExtraError` naming the ``stt`` extra when
    faster-whisper or the bundled weights are not installed.
    """
    if model is not None:
        return model
    from flowrtc.models.stt import get_stt_model

    return await anyio.to_thread.run_sync(get_stt_model)


async def load_tts_model(model: Any = None) -> Any:
    """``model``, or the shared default TTS model (loaded in a worker thread the first time).

    Raises :class:`~flowrtc.errors.MissingExtraError` naming the ``tts`` extra when
    hibari-tts is not installed.
    """
    if model is not None:
        return model
    from flowrtc.models.tts import get_tts_model

    return await anyio.to_thread.run_sync(get_tts_model)


async def transcribe(model: Any, audio: AudioChunk) -> str:
    """The text of ``audio`` (stripped), off the event loop.

    The model gets FastRTC's input shape, ``(rate, int16 array (1, n))``. Models
    with an ``astt`` coroutine (flowrtc's) are awaited; a plain ``stt`` method
    runs in a worker thread.
    """
    if audio.n_samples == 0:
        return ""
    data = (audio.sample_rate, audio.to_int16().to_layout("mono").samples)
    astt = getattr(model, "astt", None)
    if astt is not None:
        text = await astt(data)
    else:
        text = await anyio.to_thread.run_sync(model.stt, data)
    return (text or "").strip()


@operator
async def stt(source: AsyncIterable[Any], *, model: Any = None, keep_utterance: bool = False) -> AsyncIterator[Any]:
    """Replace each ``Utterance`` with the ``Transcript`` of its audio.

    Options:
        model: any object with FastRTC's ``stt((rate, audio)) -> str`` (an
            ``astt`` coroutine is used when it has one). Default: the shared
            Whisper tiny.en of :func:`~flowrtc.models.stt.get_stt_model`.
        keep_utterance: also pass the ``Utterance`` on, just before its
            transcript (for a later stage that wants the audio too).

    The transcript's ``media_time_s`` is the utterance's: the media time at which
    the turn ended. An utterance with no words gives no transcript at all.
    Utterances are transcribed one at a time, in order; while one is being
    transcribed (about 0.5 s for Whisper) the stage reads nothing further, so
    events stay in media-time order. Every other item passes through.

    A ``PendingUtterance`` (``vad(early_pause_ms=...)``) is transcribed at once,
    while the stage reads on: if its ``Utterance`` follows, that transcript is
    the one used, ready sooner by the head start. A ``SpeechResumed`` (or
    another utterance) drops it unused.
    """
    model = await load_stt_model(model)
    early: tuple[PendingUtterance, asyncio.Task[str]] | None = None
    dropped: list[asyncio.Task[str]] = []

    def drop() -> None:
        # a transcription in a worker thread cannot be stopped: it ends unread
        nonlocal early
        if early is not None:
            early[1].cancel()
            dropped[:] = [task for task in dropped if not task.done()]
            dropped.append(early[1])
            early = None

    try:
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, PendingUtterance):
                    drop()
                    early = (item, asyncio.get_running_loop().create_task(transcribe(model, item.utterance.audio)))
                elif isinstance(item, SpeechResumed):
                    drop()
                if not isinstance(item, Utterance):
                    yield item
                    continue
                if keep_utterance:
                    yield item
                if early is not None and early[0].foresees(item):
                    text = await early[1]
                    early = None
                else:
                    drop()
                    text = await transcribe(model, item.audio)
                if text:
                    yield Transcript(text=text, final=True, media_time_s=item.media_time_s)
    finally:
        drop()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*dropped, return_exceptions=True)


async def _next(iterator: AsyncIterator[Any]) -> Any:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return _END


class _Speaking:
    """One text being synthesized: its sentence stream and where its audio goes."""

    __slots__ = ("chunks", "t0_s", "end_s", "step")

    def __init__(self, chunks: AsyncIterator[Any], t0_s: float) -> None:
        self.chunks = chunks
        self.t0_s = t0_s
        self.end_s = t0_s  # end of the audio placed so far
        self.step: asyncio.Task[Any] | None = None

    def place(self, value: Any) -> AudioChunk:
        chunk = value if isinstance(value, AudioChunk) else AudioChunk.from_tuple(value)
        rate = chunk.sample_rate
        placed = chunk.with_pts(round(self.end_s * rate))
        self.end_s = placed.end_pts / rate
        return placed


async def _close(step: asyncio.Task[Any] | None, chunks: AsyncIterator[Any]) -> None:
    """Let a cancelled synthesis step end, then close the sentence stream."""
    with anyio.CancelScope(shield=True):
        if step is not None:
            try:
                await step
            except BaseException:  # noqa: BLE001 - the synthesis was abandoned; its outcome is moot
                pass
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - same: an error while closing abandoned synthesis
                pass


@operator
async def tts(
    source: AsyncIterable[Any], *, model: Any = None, options: Any = None, can_interrupt: bool = True
) -> AsyncIterator[Any]:
    """Speak every ``str`` item: AudioChunks, sentence by sentence, placed in media time.

    Options:
        model: any object with FastRTC's ``stream_tts(text, options)`` async
            generator of ``(rate, samples)``. Default: the shared hibari voice of
            :func:`~flowrtc.models.tts.get_tts_model`.
        options: passed to every ``stream_tts`` call (``HibariTTSOptions``,
            ``KokoroTTSOptions``, ...).
        can_interrupt: a ``SpeechStarted`` at ``t`` while speech is being
            synthesized or would still be playing at ``t`` cuts it, as an
            ``Interrupt`` from upstream does, and emits ``Interrupt(t)``.
            Synthesis that has not reached ``t`` yet first gets
            :func:`~flowrtc.operators.reply.catch_up_s` of wall time to do so
            (0.1 s live, unlimited in an offline run), so speech that would
            have ended before ``t`` is not cut for being slow to make.

    Only ``str`` items are spoken (a ``Transcript`` is the user's words and
    passes through). The first sentence's audio comes as soon as it is
    synthesized (tens of ms for hibari); the rest follow while upstream keeps
    flowing. A text's audio starts at the media time of the latest event seen
    before it, and never before the previous text's audio ends (texts queue).

    An ``Interrupt`` (from upstream, or made here on barge-in) stops the
    synthesis in progress and forgets queued texts; it is passed on so that
    ``encode`` and the transport drop audio not yet played.
    """
    model = await load_tts_model(model)
    loop = asyncio.get_running_loop()
    waiting: deque[tuple[str, float]] = deque()
    current: _Speaking | None = None
    playing_until_s = 0.0  # end of the audio of texts already synthesized
    now_s = 0.0  # the latest input media time seen
    closing: list[asyncio.Task[Any]] = []
    pull: asyncio.Task[Any] | None = None
    upstream_done = False

    def speaking_at(t: float) -> bool:
        return current is not None or bool(waiting) or t < playing_until_s

    def cut(t: float) -> None:
        nonlocal current, playing_until_s
        if current is not None:
            step, current.step = current.step, None
            if step is not None:
                step.cancel()
            closing.append(loop.create_task(_close(step, current.chunks)))
            current = None
        waiting.clear()
        playing_until_s = min(playing_until_s, t)

    def start_next() -> None:
        nonlocal current
        if current is None and waiting:
            text, at_s = waiting.popleft()
            current = _Speaking(model.stream_tts(text, options), max(at_s, playing_until_s))
        if current is not None and current.step is None:
            current.step = loop.create_task(_next(current.chunks))

    def take_step() -> list[AudioChunk]:
        """The audio of the synthesis step that just finished (none at the end of a text)."""
        nonlocal current, playing_until_s
        assert current is not None and current.step is not None
        value = current.step.result()
        current.step = None
        if value is _END:
            playing_until_s = max(playing_until_s, current.end_s)
            current = None
            return []
        chunk = current.place(value)
        return [chunk] if chunk.n_samples else []

    async def catch_up(t: float) -> list[AudioChunk]:
        """Let synthesis produce up to ``t`` (for at most ``catch_up_s()``) before speech is judged there."""
        out: list[AudioChunk] = []
        budget = CatchUp()
        while True:
            if current is None and (not waiting or max(waiting[0][1], playing_until_s) >= t):
                return out  # nothing more to make before t (a text that would start later is not begun)
            start_next()
            assert current is not None and current.step is not None
            if current.end_s >= t:
                return out
            if not await budget.wait(current.step):
                return out
            out += take_step()

    async with scoped(source) as upstream:
        try:
            while True:
                start_next()
                if pull is None and not upstream_done:
                    pull = loop.create_task(_next(upstream))
                tasks = [task for task in (current.step if current else None, pull) if task is not None]
                if not tasks:
                    break
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)

                # Audio first: it was synthesized before we look at what came in.
                if current is not None and current.step is not None and current.step.done():
                    for chunk in take_step():
                        yield chunk

                if pull is not None and pull.done():
                    item = pull.result()
                    pull = None
                    if item is _END:
                        upstream_done = True
                    elif isinstance(item, str):
                        if item.strip():
                            waiting.append((item, now_s))
                    elif isinstance(item, Interrupt):
                        now_s = max(now_s, item.media_time_s)
                        cut(item.media_time_s)
                        yield item
                    elif isinstance(item, SpeechStarted):
                        now_s = max(now_s, item.media_time_s)
                        if can_interrupt:
                            for chunk in await catch_up(item.media_time_s):
                                yield chunk
                        yield item
                        if can_interrupt and speaking_at(item.media_time_s):
                            cut(item.media_time_s)
                            yield Interrupt(media_time_s=item.media_time_s)
                    else:
                        if isinstance(item, Event):
                            now_s = max(now_s, item.media_time_s)
                        elif isinstance(item, AudioChunk):
                            now_s = max(now_s, item.end_pts / item.sample_rate)
                        yield item
        finally:
            # Before the upstream is closed: it must not be left mid-step in a task.
            with anyio.CancelScope(shield=True):
                leftovers = [task for task in (pull, current.step if current else None) if task is not None]
                for task in leftovers:
                    task.cancel()
                for task in leftovers:
                    try:
                        await task
                    except BaseException:  # noqa: BLE001 - shutting down: outcomes are moot
                        pass
                if current is not None:
                    await _close(None, current.chunks)
                for task in closing:
                    await task
