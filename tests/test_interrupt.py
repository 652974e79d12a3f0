"""``reply`` + ``interrupt``: replies placed in media time, cut at once on barge-in."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, AsyncIterator

import anyio
import anyio.to_thread
import numpy as np
import pytest

from flowrtc.events import (
    AdditionalOutputs,
    CloseStream,
    Interrupt,
    Log,
    ReplyEnded,
    ReplyStarted,
    SpeechStarted,
    Utterance,
)
from flowrtc.media import AudioChunk
from flowrtc.operators.interrupt import interrupt
from flowrtc.operators.reply import Reply, offline_replies, reply, takes_extra_args

RATE = 16000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def tone(seconds: float, rate: int = RATE) -> AudioChunk:
    return AudioChunk(np.full((1, round(seconds * rate)), 1000, np.int16), rate)


def make_reply(t0: float, *values: Any, log: list[str] | None = None) -> Reply:
    async def items() -> AsyncIterator[Any]:
        try:
            for value in values:
                if isinstance(value, anyio.Event):
                    await value.wait()
                else:
                    yield value
        finally:
            if log is not None:
                log.append("closed")

    return Reply(items(), media_time_s=t0)


def summary(items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, AudioChunk):
            out.append(("audio", round(item.media_time_s, 3), round(item.duration_s, 3)))
        elif isinstance(item, Log):
            out.append((item.data, round(item.media_time_s, 3)))
        elif isinstance(item, ReplyEnded):
            out.append(("ReplyEnded", round(item.media_time_s, 3), item.interrupted))
        else:
            out.append((type(item).__name__, round(getattr(item, "media_time_s", 0.0), 3)))
    return out


async def run(upstream: AsyncIterator[Any], **options: Any) -> list[Any]:
    with anyio.fail_after(10):
        return [item async for item in interrupt(upstream, **options)]


@pytest.mark.anyio
async def test_reply_audio_is_placed_from_the_turn_time() -> None:
    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(1.0, tone(0.5), AdditionalOutputs("text"), tone(0.5))

    items = await run(upstream())
    assert summary(items) == [
        ("ReplyStarted", 1.0),
        ("response_starting", 1.0),
        ("audio", 1.0, 0.5),
        ("AdditionalOutputs", 1.5),  # stamped with where the reply has got to
        ("audio", 1.5, 0.5),
        ("ReplyEnded", 2.0, False),
    ]
    audio = [i for i in items if isinstance(i, AudioChunk)]
    assert [a.pts for a in audio] == [16000, 24000]  # round(t0 * rate) + samples so far


@pytest.mark.anyio
async def test_without_interruption_the_next_reply_follows_the_previous_audio() -> None:
    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(1.0, tone(1.0))
        yield SpeechStarted(media_time_s=1.2)
        yield make_reply(1.5, tone(0.5))

    items = await run(upstream(), can_interrupt=False)
    assert not any(isinstance(i, Interrupt) for i in items)
    audio = [(round(a.media_time_s, 3), round(a.duration_s, 3)) for a in items if isinstance(a, AudioChunk)]
    assert audio == [(1.0, 1.0), (2.0, 0.5)]
    assert [round(i.media_time_s, 3) for i in items if isinstance(i, ReplyStarted)] == [1.0, 2.0]


@pytest.mark.anyio
async def test_speech_while_the_reply_is_being_made_cuts_it_and_closes_it() -> None:
    log: list[str] = []
    more = anyio.Event()
    heard = anyio.Event()

    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(1.0, tone(0.5), more, tone(0.5), log=log)
        await heard.wait()
        yield SpeechStarted(media_time_s=1.3)
        more.set()

    items = []
    with anyio.fail_after(10):
        async for item in interrupt(upstream()):
            items.append(item)
            if isinstance(item, AudioChunk):
                heard.set()
    assert summary(items) == [
        ("ReplyStarted", 1.0),
        ("response_starting", 1.0),
        ("audio", 1.0, 0.5),
        ("SpeechStarted", 1.3),
        ("Interrupt", 1.3),
        ("ReplyEnded", 1.3, True),
    ]
    assert log == ["closed"]


@pytest.mark.anyio
async def test_speech_while_the_reply_still_plays_cuts_it_even_after_generation_ended() -> None:
    """FastRTC #381/#352: 'responding' must last until the audio has played, not until it was made."""
    log: list[str] = []

    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(1.0, tone(3.0), log=log)
        while not log:  # the reply has produced everything
            await anyio.sleep(0.001)
        yield SpeechStarted(media_time_s=2.5)
        yield SpeechStarted(media_time_s=4.5)  # after the audio's end: nothing to cut

    items = await run(upstream())
    assert summary(items) == [
        ("ReplyStarted", 1.0),
        ("response_starting", 1.0),
        ("audio", 1.0, 3.0),
        ("ReplyEnded", 4.0, False),
        ("SpeechStarted", 2.5),
        ("Interrupt", 2.5),
        ("ReplyEnded", 2.5, True),
        ("SpeechStarted", 4.5),
    ]


def slow_reply(t0: float, seconds_each: float, *chunks: AudioChunk) -> Reply:
    """A reply that takes ``seconds_each`` of wall time to make each chunk (a slow LLM + voice)."""

    async def items() -> AsyncIterator[Any]:
        for chunk in chunks:
            await anyio.sleep(seconds_each)
            yield chunk

    return Reply(items(), media_time_s=t0)


@pytest.mark.anyio
async def test_a_slow_reply_is_judged_where_its_audio_would_play_offline_and_cut_live_when_it_stalls() -> None:
    async def upstream(speech_at_s: float) -> AsyncIterator[Any]:
        yield slow_reply(1.0, 0.3, tone(0.1), tone(0.1), tone(0.1))  # plays 1.0-1.3 s
        yield SpeechStarted(media_time_s=speech_at_s)  # at once: before the reply has made any of it

    made = [("ReplyStarted", 1.0), ("response_starting", 1.0), ("audio", 1.0, 0.1), ("audio", 1.1, 0.1)]
    with offline_replies():  # flowrtc.testing.run: judged in media time, on any machine
        assert summary(await run(upstream(1.4))) == [*made, ("audio", 1.2, 0.1), ("ReplyEnded", 1.3, False), ("SpeechStarted", 1.4)]
        assert summary(await run(upstream(1.15))) == [*made, ("SpeechStarted", 1.15), ("Interrupt", 1.15), ("ReplyEnded", 1.15, True)]
    # live: a reply that has not reached 1.4 s within catch_up_s() (0.1 s) is cut there
    assert summary(await run(upstream(1.4))) == [("ReplyStarted", 1.0), ("SpeechStarted", 1.4), ("Interrupt", 1.4), ("ReplyEnded", 1.4, True)]


@pytest.mark.anyio
async def test_a_newer_reply_supersedes_the_running_one() -> None:
    log: list[str] = []
    never = anyio.Event()

    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(1.0, never, log=log)
        yield make_reply(2.0, tone(0.25))

    items = await run(upstream())
    assert summary(items) == [
        ("ReplyStarted", 1.0),
        ("Interrupt", 2.0),
        ("ReplyEnded", 2.0, True),
        ("ReplyStarted", 2.0),
        ("response_starting", 2.0),
        ("audio", 2.0, 0.25),
        ("ReplyEnded", 2.25, False),
    ]
    assert log == ["closed"]


@pytest.mark.anyio
async def test_a_reply_with_no_audio_still_says_response_starting() -> None:
    async def upstream() -> AsyncIterator[Any]:
        yield make_reply(3.0, AdditionalOutputs(1), CloseStream("bye"))

    items = await run(upstream())
    assert summary(items) == [
        ("ReplyStarted", 3.0),
        ("AdditionalOutputs", 3.0),
        ("CloseStream", 3.0),
        ("response_starting", 3.0),
        ("ReplyEnded", 3.0, False),
    ]
    assert items[2].msg == "bye"


@pytest.mark.anyio
async def test_a_failing_reply_raises_and_nothing_is_left_running() -> None:
    async def broken() -> AsyncIterator[Any]:
        yield tone(0.1)
        raise RuntimeError("the LLM is down")

    async def upstream() -> AsyncIterator[Any]:
        yield Reply(broken(), media_time_s=0.0)
        await anyio.sleep(10)

    with pytest.raises(RuntimeError, match="LLM is down"):
        await run(upstream())


@pytest.mark.anyio
async def test_closing_the_flow_mid_reply_closes_everything() -> None:
    log: list[str] = []
    never = anyio.Event()

    async def upstream() -> AsyncIterator[Any]:
        try:
            yield make_reply(0.0, tone(0.1), never, log=log)
            await anyio.sleep(10)
        finally:
            log.append("upstream closed")

    flow = interrupt(upstream())
    async for item in flow:
        if isinstance(item, AudioChunk):
            break
    await flow.aclose()
    assert sorted(log) == ["closed", "upstream closed"]


# -- reply: calling the user's function ------------------------------------------------------


def utterance(t: float, seconds: float = 0.5, rate: int = 8000) -> Utterance:
    return Utterance(audio=tone(seconds, rate), start_s=t - seconds, end_s=t, media_time_s=t)


@pytest.mark.anyio
async def test_reply_calls_any_kind_of_function_fastrtc_style() -> None:
    seen: list[Any] = []

    def plain(audio: tuple[int, np.ndarray]) -> Any:
        seen.append(audio)
        return audio

    async def coroutine(audio: tuple[int, np.ndarray]) -> Any:
        return (audio[0], audio[1].astype(np.float32) / 32768)

    def generator(audio: tuple[int, np.ndarray]) -> Any:
        yield audio[0], audio[1][0]  # 1-D

    async def agen(audio: tuple[int, np.ndarray]) -> Any:
        yield audio[0], audio[1].T  # (n, 1)

    for fn in (plain, coroutine, generator, agen):

        async def upstream() -> AsyncIterator[Any]:
            yield utterance(1.0)

        items = await run(reply(upstream(), fn, sample_rate=16000, output_sample_rate=24000))
        audio = [i for i in items if isinstance(i, AudioChunk)]
        assert sum(a.n_samples for a in audio) == pytest.approx(12000, abs=2), fn.__name__
        assert {a.sample_rate for a in audio} == {24000}
        assert audio[0].pts == 24000  # placed at the turn's time, at the output rate
    rate, array = seen[0]
    assert rate == 16000 and array.dtype == np.int16 and array.shape == (1, 8000)


@pytest.mark.anyio
async def test_a_sync_generator_is_closed_in_its_thread_when_cut() -> None:
    steps: list[str] = []
    yielded = threading.Event()

    woke: list[float] = []

    def slow(audio: tuple[int, np.ndarray]) -> Any:
        try:
            yield tone(0.2)
            yielded.set()
            time.sleep(1.0)
            woke.append(time.perf_counter())
            yield tone(0.2)
            steps.append("not reached")
        finally:
            steps.append("finally")

    async def upstream() -> AsyncIterator[Any]:
        yield utterance(1.0)
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(yielded.wait, abandon_on_cancel=True)
        yield SpeechStarted(media_time_s=1.1)

    interrupted_at = None
    items = []
    with anyio.fail_after(10):
        async for item in interrupt(reply(upstream(), slow)):
            items.append(item)
            if isinstance(item, Interrupt):
                interrupted_at = time.perf_counter()
    assert [round(i.media_time_s, 3) for i in items if isinstance(i, Interrupt)] == [1.1]
    assert len([i for i in items if isinstance(i, AudioChunk)]) == 1
    assert steps == ["finally"]
    assert interrupted_at is not None and interrupted_at < woke[0]  # at once, not after the step in the thread


@pytest.mark.anyio
async def test_startup_reply_plays_first_and_passes_other_items() -> None:
    def startup() -> Any:
        yield tone(0.3)

    def fn(audio: Any) -> Any:
        yield tone(0.1)

    marker = Log(data="x", media_time_s=0.5)

    async def upstream() -> AsyncIterator[Any]:
        yield marker
        yield utterance(1.0)

    items = await run(reply(upstream(), fn, startup_fn=startup))
    audio = [(round(a.media_time_s, 3), round(a.duration_s, 3)) for a in items if isinstance(a, AudioChunk)]
    assert audio == [(0.0, 0.3), (1.0, 0.1)]
    assert marker in items


def test_takes_extra_args_follows_fastrtc() -> None:
    assert not takes_extra_args(lambda audio: None)
    assert takes_extra_args(lambda audio, history=None: None)


@pytest.mark.anyio
async def test_with_nothing_playing_upstream_is_read_in_place_without_a_task_per_item(monkeypatch: pytest.MonkeyPatch) -> None:
    """A task and a wait per item cost two trips round a busy event loop between the VAD's decision and the reply."""
    interrupt_module = sys.modules["flowrtc.operators.interrupt"]
    steps: list[Any] = []
    step = interrupt_module._Step

    class CountingStep(step):  # type: ignore[misc, valid-type]
        def __init__(self, loop: Any, iterator: Any) -> None:
            steps.append(iterator)
            super().__init__(loop, iterator)

    monkeypatch.setattr(interrupt_module, "_Step", CountingStep)

    async def upstream() -> AsyncIterator[Any]:
        yield Log(data="pause_detected", media_time_s=0.5)
        yield SpeechStarted(media_time_s=0.6)
        yield make_reply(1.0, tone(0.5))

    items = await run(upstream())
    assert summary(items) == [
        ("pause_detected", 0.5),
        ("SpeechStarted", 0.6),
        ("ReplyStarted", 1.0),
        ("response_starting", 1.0),
        ("audio", 1.0, 0.5),
        ("ReplyEnded", 1.5, False),
    ]
    # Steps only while the reply runs: its two (audio, end), and one read of upstream raced against them.
    assert len(steps) == 3
