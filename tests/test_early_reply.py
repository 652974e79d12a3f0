"""Starting a reply early (``early_pause_ms``): ``fn`` runs during the pause, its answer is held
until the turn ends, and a pause that turns out to be inside the turn leaves no trace.

All turn timing is media time; the early start is checked by the order of events, never by a clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from anyio import wait_all_tasks_blocked
import numpy as np
import pytest

from flowrtc.errors import ConfigurationError
from flowrtc.events import (
    AdditionalOutputs,
    PendingUtterance,
    ReplyStarted,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    Utterance,
)
from flowrtc.graph import Graph
from flowrtc.handlers.options import AlgoOptions
from flowrtc.handlers.reply_on_pause import ReplyOnPause
from flowrtc.media import AudioChunk
from flowrtc.operators.pause_gate import turn_taking
from flowrtc.operators.interrupt import interrupt
from flowrtc.operators.reply import Reply, reply
from flowrtc.operators.vad import SpeechDetector
from flowrtc.session import Session
from flowrtc.testing import arun, load_audio

MEDIA = Path(__file__).parent / "media"
HELLO = MEDIA / "asterisk_hello-world_8k.wav"
#: prompts with inner pauses of 0.29-0.34 s (from energy; see test_other_voices.py)
VOICES = ["asterisk_fr-june_pbx-invalid_8k.wav", "asterisk_it-carlo_vm-mismatch_8k.wav", "asterisk_ru-maxim_agent-incorrect_8k.wav"]
W = 0.032
RATE = 8000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def names(events: list[Any]) -> list[tuple[str, float]]:
    return [(type(e).__name__, round(e.media_time_s, 3)) for e in events]


# -- the detector ------------------------------------------------------------------------


def test_a_pause_is_announced_then_withdrawn_when_speech_comes_back() -> None:
    d = SpeechDetector(window_s=W, min_speech_ms=64, min_silence_ms=320, early_pause_ms=160, rise_db=None)
    assert names(d.feed([0.9] * 10)) == [("SpeechStarted", 0.064)]
    # 5 windows of pause announce it; the 7th window is speech again: withdrawn, no stop
    assert names(d.feed([0.1] * 6)) == [("SpeechPaused", 0.48)]
    (resumed,) = d.feed([0.9])
    assert isinstance(resumed, SpeechResumed) and resumed.media_time_s == pytest.approx(0.544)
    assert d.speaking
    # a pause that ends the turn: announced, then stopped, with the same speech end
    events = d.feed([0.1] * 10)
    assert [type(e) for e in events] == [SpeechPaused, SpeechStopped]
    paused, stopped = events
    assert paused.speech_end_s == stopped.speech_end_s == pytest.approx(0.544)
    assert paused.media_time_s == pytest.approx(0.544 + 5 * W)
    assert stopped.media_time_s == pytest.approx(0.544 + 10 * W)


def test_a_probability_between_the_thresholds_neither_announces_nor_withdraws() -> None:
    # Silero's hysteresis: 0.4 is above neg_threshold (0.35) but below threshold (0.5)
    d = SpeechDetector(window_s=W, min_speech_ms=32, min_silence_ms=320, early_pause_ms=96, rise_db=None)
    d.feed([0.9] * 3)
    assert d.feed([0.4] * 5) == []  # no pause began
    assert [type(e) for e in d.feed([0.1] * 3)] == [SpeechPaused]
    assert d.feed([0.4] * 2) == []  # a pause once begun goes on through 0.4: not speech again
    assert [type(e) for e in d.feed([0.1] * 5)] == [SpeechStopped]


def test_without_early_pause_nothing_new_is_emitted() -> None:
    d = SpeechDetector(window_s=W, min_speech_ms=32, min_silence_ms=320, rise_db=None)
    events = d.feed([0.9] * 3 + [0.1] * 6 + [0.9] + [0.1] * 10)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


@pytest.mark.parametrize("early", [0, -5, 320, 500])
def test_an_early_pause_must_be_shorter_than_the_turns_pause(early: float) -> None:
    with pytest.raises(ConfigurationError, match="early_pause_ms"):
        SpeechDetector(window_s=W, min_silence_ms=320, early_pause_ms=early)
    with pytest.raises(ConfigurationError, match="early_pause_ms"):
        turn_taking(AlgoOptions(audio_chunk_duration=0.42), early_pause_ms=early)
    with pytest.raises(ConfigurationError, match="early_pause_ms"):
        ReplyOnPause(lambda audio: None, algo_options=AlgoOptions(audio_chunk_duration=0.42), early_pause_ms=early)


def test_a_fastrtc_chunk_model_cannot_start_replies_early() -> None:
    class Chunky:
        def vad(self, audio: Any, options: Any) -> Any:
            return 0.0, []

        def warmup(self) -> None:
            pass

    with pytest.raises(ConfigurationError, match="chunk model"):
        ReplyOnPause(lambda audio: None, model=Chunky(), early_pause_ms=200)


# -- reply ---------------------------------------------------------------------------------


def turn(start_s: float, end_s: float, at: float) -> Utterance:
    audio = AudioChunk(np.full((1, round((end_s - start_s + 0.4) * RATE)), 1000, np.int16), RATE, pts=round((start_s - 0.2) * RATE))
    return Utterance(audio=audio, start_s=start_s, end_s=end_s, media_time_s=at)


class Answers:
    """A reply function that says which turn it answers and notes when it is started and closed."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.closed: list[float] = []
        self.entered = anyio.Event()

    async def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        seconds = audio[1].shape[1] / audio[0]
        self.started.append(round(seconds, 3))
        self.entered.set()
        try:
            yield audio[0], np.full(audio[0] // 10, round(seconds * 1000), np.int16)  # 100 ms saying how long the turn was
            await anyio.sleep(0)
            yield audio[0], np.full(audio[0] // 10, 7, np.int16)
        finally:
            self.closed.append(round(seconds, 3))


async def drain(r: Reply) -> list[AudioChunk]:
    return [item async for item in r]


@pytest.mark.anyio
async def test_a_confirmed_turn_gets_the_answer_started_in_its_pause() -> None:
    fn = Answers()
    foreseen = turn(1.0, 3.0, at=3.2)

    async def source() -> Any:
        yield PendingUtterance(utterance=foreseen, media_time_s=3.2)
        with anyio.fail_after(30):
            await fn.entered.wait()  # fn runs before the turn is over
        assert fn.started == [2.4]
        yield Utterance(audio=foreseen.audio, start_s=1.0, end_s=3.0, media_time_s=3.448)

    out = [item async for item in reply(source(), fn)]
    replies = [item for item in out if isinstance(item, Reply)]
    assert len(replies) == 1 and replies[0].media_time_s == 3.448 and replies[0].utterance.media_time_s == 3.448
    chunks = await drain(replies[0])
    assert [int(c.samples[0, 0]) for c in chunks] == [2400, 7]
    assert fn.started == [2.4]  # called once, early


@pytest.mark.anyio
async def test_a_withdrawn_turn_closes_the_early_answer_and_the_whole_turn_is_answered() -> None:
    fn = Answers()

    async def source() -> Any:
        yield PendingUtterance(utterance=turn(1.0, 2.0, at=2.2), media_time_s=2.2)
        with anyio.fail_after(30):
            await fn.entered.wait()
        yield SpeechResumed(media_time_s=2.3)
        yield Utterance(audio=turn(1.0, 4.0, at=4.448).audio, start_s=1.0, end_s=4.0, media_time_s=4.448)

    out = [item async for item in reply(source(), fn)]
    assert fn.closed[0] == 1.4  # the early call on the first 1.4 s was closed
    (answer,) = [item for item in out if isinstance(item, Reply)]
    assert [int(c.samples[0, 0]) for c in await drain(answer)] == [3400, 7]  # the whole turn's answer
    assert fn.started == [1.4, 3.4]


@pytest.mark.anyio
@pytest.mark.parametrize("confirmed", [True, False])
async def test_an_early_call_goes_no_further_than_its_first_yield_until_its_turn_ends(confirmed: bool) -> None:
    steps: list[str] = []

    def fn(audio: tuple[int, np.ndarray]) -> Any:  # sync: its steps run in a worker thread
        steps.append("heard")
        yield audio[0], np.zeros(800, np.int16)
        steps.append("history saved")  # a side effect that must happen once per turn
        yield audio[0], np.ones(800, np.int16)

    foreseen = turn(1.0, 3.0, at=3.2)

    async def source() -> Any:
        yield PendingUtterance(utterance=foreseen, media_time_s=3.2)
        for _ in range(50):  # plenty of time to run on, were it let
            await anyio.sleep(0.002)
        assert steps == ["heard"]
        if confirmed:
            yield Utterance(audio=foreseen.audio, start_s=1.0, end_s=3.0, media_time_s=3.448)
        else:
            yield SpeechResumed(media_time_s=3.3)

    out = [item async for item in reply(source(), fn)]
    answers = [item for item in out if isinstance(item, Reply)]
    if confirmed:
        assert [int(c.samples[0, 0]) for c in await drain(answers[0])] == [0, 1]
        assert steps == ["heard", "history saved"]
    else:
        assert answers == [] and steps == ["heard"]


@pytest.mark.anyio
async def test_a_different_turn_than_foreseen_is_answered_afresh() -> None:
    fn = Answers()

    async def source() -> Any:
        yield PendingUtterance(utterance=turn(1.0, 2.0, at=2.2), media_time_s=2.2)
        with anyio.fail_after(30):
            await fn.entered.wait()
        yield Utterance(audio=turn(1.0, 2.1, at=2.5).audio, start_s=1.0, end_s=2.1, media_time_s=2.5)  # e.g. trigger_response

    out = [item async for item in reply(source(), fn)]
    (answer,) = [item for item in out if isinstance(item, Reply)]
    assert [int(c.samples[0, 0]) for c in await drain(answer)] == [1500, 7]
    assert fn.started == [1.4, 1.5] and 1.4 in fn.closed


@pytest.mark.anyio
async def test_an_early_answer_that_fails_fails_the_reply_it_becomes() -> None:
    async def broken(audio: tuple[int, np.ndarray]) -> Any:
        yield audio
        raise RuntimeError("model went away")

    foreseen = turn(1.0, 3.0, at=3.2)

    async def source() -> Any:
        yield PendingUtterance(utterance=foreseen, media_time_s=3.2)
        yield Utterance(audio=foreseen.audio, start_s=1.0, end_s=3.0, media_time_s=3.448)

    (answer,) = [item async for item in reply(source(), broken) if isinstance(item, Reply)]
    with pytest.raises(RuntimeError, match="model went away"):
        await drain(answer)


# -- ReplyOnPause on real speech -----------------------------------------------------------


def join(*parts: AudioChunk | float) -> AudioChunk:
    return AudioChunk.concat([p if isinstance(p, AudioChunk) else AudioChunk.silence(p, RATE) for p in parts], pts=0)


class Turns:
    """Answers each turn with a tone as long as the turn; notes every call and every close."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.closed = 0

    def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        rate, samples = audio
        self.calls.append(samples.shape[1] / rate)
        try:
            yield rate, samples
        finally:
            self.closed += 1


@pytest.mark.anyio
@pytest.mark.parametrize("name", VOICES)
async def test_pauses_inside_a_turn_change_nothing_the_user_hears(name: str) -> None:
    audio = join(0.5, load_audio(MEDIA / name), 1.5, load_audio(HELLO), 1.5)
    plain_fn, early_fn = Turns(), Turns()
    plain = await arun(ReplyOnPause(plain_fn), audio=audio)
    early = await arun(ReplyOnPause(early_fn, early_pause_ms=192), audio=audio)
    # the same turns, answered at the same media times with the same audio
    assert early.times(ReplyStarted) == plain.times(ReplyStarted) and len(plain.times(ReplyStarted)) == 2
    assert early.log() == plain.log()
    assert early.audio is not None and plain.audio is not None
    np.testing.assert_array_equal(early.audio.samples, plain.audio.samples)
    rest = iter(early_fn.calls)
    assert all(any(call == mine for mine in rest) for call in plain_fn.calls)  # the turns' calls, in order, among the early ones
    # each inner pause long enough started an early call, and each such call was closed unheard
    paused = early.of_type(SpeechPaused)
    resumed = early.of_type(SpeechResumed)
    assert len(paused) == len(resumed) + 2  # every pause announced: the inner ones withdrawn, the two turn ends not
    # (an early call withdrawn before its task ran never reaches fn: fed faster than real time, that varies)
    assert len(plain_fn.calls) <= len(early_fn.calls) <= len(plain_fn.calls) + len(early.of_type(PendingUtterance)) - 2
    assert early_fn.closed == len(early_fn.calls)


@pytest.mark.anyio
async def test_the_inner_pauses_of_these_voices_are_long_enough_to_start_an_early_call() -> None:
    """The test above exercises the withdrawal: at least one of its prompts has a pause past 192 ms + padding."""
    withdrawn = 0
    for name in VOICES:
        fn = Turns()
        recording = await arun(ReplyOnPause(fn, early_pause_ms=192), audio=join(0.5, load_audio(MEDIA / name), 1.5))
        withdrawn += len(recording.of_type(PendingUtterance)) - 1
        assert len(recording.times(ReplyStarted)) == 1
    assert withdrawn >= 1


@pytest.mark.anyio
@pytest.mark.parametrize("confirmed", [True, False])
async def test_on_the_phone_an_early_calls_outputs_become_the_next_inputs_only_once_its_turn_ends(confirmed: bool) -> None:
    entered = anyio.Event()

    async def fn(audio: tuple[int, np.ndarray]) -> Any:
        entered.set()
        yield AdditionalOutputs("order", 42)  # on the phone: the next call's inputs
        yield audio

    foreseen = turn(1.0, 3.0, at=3.2)
    async with Session(Graph(audio=reply(fn) | interrupt()), phone_mode=True) as phone:
        await phone.send(PendingUtterance(utterance=foreseen, media_time_s=3.2))
        with anyio.fail_after(30):
            await entered.wait()
        for _ in range(20):
            await anyio.sleep(0.002)
        assert phone.latest_args == []  # not yet: the turn may go on
        if confirmed:
            await phone.send(Utterance(audio=foreseen.audio, start_s=1.0, end_s=3.0, media_time_s=3.448))
            with anyio.fail_after(30):
                while not isinstance(await phone.receive(), AdditionalOutputs):
                    pass
            assert phone.latest_args == ["order", 42]
        else:
            await phone.send(SpeechResumed(media_time_s=3.3))
            await phone.end_input()
            with anyio.fail_after(30):
                out = [item async for item in phone]
            assert not [item for item in out if isinstance(item, (AdditionalOutputs, ReplyStarted))]
            assert phone.latest_args == []


@pytest.mark.anyio
async def test_a_withdrawn_early_call_leaves_the_clients_inputs_for_the_turn_that_follows() -> None:
    entered, closed = anyio.Event(), anyio.Event()
    seen: list[Any] = []

    async def fn(audio: tuple[int, np.ndarray], level: Any) -> Any:  # two parameters: wants the inputs
        seen.append(level)
        entered.set()
        try:
            yield audio
        finally:
            closed.set()

    async with Session(Graph(audio=reply(fn) | interrupt())) as session:
        session.set_input(0.3)
        await session.send(PendingUtterance(utterance=turn(1.0, 2.0, at=2.2), media_time_s=2.2))
        with anyio.fail_after(30):
            await entered.wait()
        await session.send(SpeechResumed(media_time_s=2.3))
        with anyio.fail_after(30):
            await closed.wait()  # the early call is over before the turn ends
        await wait_all_tasks_blocked()
        whole = turn(1.0, 4.0, at=4.448)
        await session.send(whole)
        with anyio.fail_after(30):
            while not isinstance(await session.receive(), AudioChunk):  # the answer plays
                pass
        # the turn was answered with the inputs, without asking again: the early call did not use them up
        assert seen == [0.3, 0.3]
        with anyio.fail_after(30):
            while session.args_set.is_set():  # answered: FastRTC asks afresh for the next turn
                await anyio.sleep(0.01)
