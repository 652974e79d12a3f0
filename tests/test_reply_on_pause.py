"""``ReplyOnPause`` on real recordings: one reply per turn, barge-in, FastRTC's API."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from flowrtc.events import (
    AdditionalOutputs,
    CloseStream,
    Interrupt,
    Log,
    Message,
    PauseDetected,
    ReplyStarted,
    SpeechStarted,
)
from flowrtc.graph import Graph
from flowrtc.handlers.options import AlgoOptions, SileroVadOptions
from flowrtc.handlers.reply_on_pause import ReplyOnPause
from flowrtc.media import AudioChunk
from flowrtc.testing import Recording, arun, audio_frames, load_audio

MEDIA = Path(__file__).parent / "media"
HELLO = MEDIA / "asterisk_hello-world_8k.wav"  # speech 0.19-1.40 s
THANKS = MEDIA / "asterisk_demo-thanks_8k.wav"  # speech 0.26-5.37 s (a 0.13 s gap)
IVR = MEDIA / "asterisk_basic-pbx-ivr-main_8k.wav"  # speech 0.10-25.15 s, gaps 0.10-0.20 s
MONKEYS = MEDIA / "asterisk_tt-monkeys_8k_nonspeech.wav"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def join(*parts: AudioChunk | float, rate: int = 8000) -> AudioChunk:
    """Clips and seconds of silence, end to end."""
    return AudioChunk.concat([p if isinstance(p, AudioChunk) else AudioChunk.silence(p, rate) for p in parts])


def beep(seconds: float = 0.2, rate: int = 24000) -> tuple[int, np.ndarray]:
    t = np.arange(round(seconds * rate)) / rate
    return rate, (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)


class Calls:
    """A reply function that records what it was given and answers with a short beep."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.calls: list[tuple[int, np.ndarray]] = []
        self.seconds = seconds

    def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        self.calls.append(audio)
        yield beep(self.seconds)


def replies(recording: Recording) -> list[float]:
    return recording.times(ReplyStarted)


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_the_ivr_prompt_gets_exactly_one_reply_after_it(rate: int) -> None:
    calls = Calls()
    clip = load_audio(IVR, sample_rate=rate)
    recording = await arun(ReplyOnPause(calls), audio=clip, trailing_silence_s=1.0)
    assert len(calls.calls) == 1
    (reply_at,) = replies(recording)
    assert 25.15 < reply_at < 25.15 + 0.6
    sample_rate, audio = calls.calls[0]
    assert sample_rate == 48000 and audio.dtype == np.int16 and audio.shape[0] == 1  # FastRTC's shape
    assert 24.9 < audio.shape[1] / sample_rate < 25.9  # the whole prompt, with its padding
    assert recording.log() == ["started_talking", "pause_detected", "response_starting"]


@pytest.mark.anyio
async def test_no_reply_to_monkeys_silence_or_noise() -> None:
    noise = AudioChunk(np.random.default_rng(3).normal(0, 4000, (1, 8000 * 6)).astype(np.int16), 8000)
    for audio in (load_audio(MONKEYS), AudioChunk.silence(6.0, 8000), noise):
        calls = Calls()
        recording = await arun(ReplyOnPause(calls), audio=audio)
        assert calls.calls == [] and replies(recording) == [] and recording.audio is None


@pytest.mark.anyio
async def test_utterances_one_second_apart_get_one_reply_each_in_order() -> None:
    hello, thanks = load_audio(HELLO), load_audio(THANKS)
    calls = Calls(seconds=0.1)
    audio = join(hello, 1.0, thanks, 1.0, hello, 1.0)
    recording = await arun(ReplyOnPause(calls), audio=audio)
    lengths = [a.shape[1] / rate for rate, a in calls.calls]
    assert len(lengths) == 3
    # hello (speech from 0.19 s, where Silero hears it, to 1.34 s, where its sound ends),
    # thanks (0.26-5.18 s), hello again: in order, each with 0.2 s of padding on either side
    assert lengths[0] == pytest.approx(1.15 + 0.4, abs=0.1)
    assert lengths[1] == pytest.approx(4.92 + 0.4, abs=0.1)
    assert lengths[2] == pytest.approx(1.15 + 0.4, abs=0.1)
    ends = [1.40, 1.40 + 1.0 + 5.37, 2 * 1.40 + 2.0 + 5.52]
    for started, end in zip(replies(recording), ends):
        assert end < started < end + 0.6
    assert not recording.of_type(Interrupt)


def long_reply(seconds: float) -> Any:
    def speak(audio: tuple[int, np.ndarray]) -> Any:
        for _ in range(round(seconds / 0.5)):
            yield beep(0.5)

    return speak


@pytest.mark.anyio
async def test_speech_during_a_reply_interrupts_it_at_once() -> None:
    hello = load_audio(HELLO)
    # the reply to "hello" starts about 1.8 s in and would play 4 s; the user speaks at 3.0 s
    audio = join(hello, 1.6 - 0.19 + 0.0, hello, 1.5)  # second "hello" speech begins at 1.40 + 1.41 + 0.19 = 3.0 s
    recording = await arun(ReplyOnPause(long_reply(4.0)), audio=audio)
    (interrupt_at,) = recording.times(Interrupt)
    assert 3.0 < interrupt_at < 3.0 + 0.3  # barge-in latency: speech start to Interrupt
    first, second = replies(recording)
    assert recording.times(SpeechStarted)[1] == interrupt_at
    # what the listener heard: the first reply up to the interrupt, then the second reply (4 s)
    assert recording.audio is not None
    heard = recording.audio.samples[0]
    rate = recording.audio.sample_rate
    assert np.abs(heard[round(first * rate) : round((interrupt_at - 0.01) * rate)]).max() > 0
    assert np.abs(heard[round((interrupt_at + 0.01) * rate) : round(second * rate)]).max() == 0
    assert recording.audio.duration_s == pytest.approx(second + 4.0, abs=0.03)


@pytest.mark.anyio
async def test_without_interruption_the_reply_plays_out_and_the_next_turn_waits() -> None:
    hello = load_audio(HELLO)
    audio = join(hello, 1.41, hello, 1.5)
    recording = await arun(ReplyOnPause(long_reply(4.0), can_interrupt=False), audio=audio)
    assert not recording.of_type(Interrupt)
    first, second = replies(recording)
    assert second == pytest.approx(first + 4.0, abs=0.001)  # after the first reply's audio, not over it
    assert recording.audio is not None and recording.audio.duration_s == pytest.approx(first + 8.0, abs=0.03)


@pytest.mark.anyio
async def test_startup_plays_first_then_turns_are_answered() -> None:
    def startup() -> Any:
        yield beep(0.5)

    calls = Calls()
    recording = await arun(ReplyOnPause(calls, startup_fn=startup), audio=join(load_audio(HELLO), 1.0))
    first_audio = recording.audio_chunks[0]
    assert first_audio.media_time_s == 0.0
    assert replies(recording)[0] == 0.0 and len(replies(recording)) == 2
    assert len(calls.calls) == 1


@pytest.mark.anyio
async def test_output_is_resampled_and_cut_in_20ms_frames() -> None:
    def echo(audio: tuple[int, np.ndarray]) -> Any:
        rate, samples = audio
        yield rate, samples.astype(np.float32) / 32768  # 48 kHz float, (1, n)

    recording = await arun(ReplyOnPause(echo, output_sample_rate=16000), audio=join(load_audio(HELLO), 1.0))
    chunks = recording.audio_chunks
    assert {c.sample_rate for c in chunks} == {16000}
    assert all(c.n_samples == 320 for c in chunks[:-1])
    assert recording.audio is not None


@pytest.mark.anyio
async def test_additional_outputs_and_close_stream_pass_through() -> None:
    def fn(audio: Any) -> Any:
        yield beep(0.1), AdditionalOutputs("transcript")
        yield CloseStream("done")

    recording = await arun(ReplyOnPause(fn), audio=join(load_audio(HELLO), 2.0))
    (outputs,) = recording.of_type(AdditionalOutputs)
    assert outputs.args == ("transcript",)
    assert recording.of_type(CloseStream)[0].msg == "done"


@pytest.mark.anyio
async def test_extra_inputs_are_asked_for_each_turn() -> None:
    seen: list[Any] = []

    def fn(audio: Any, name: str, mood: str = "calm") -> Any:
        seen.append((name, mood))
        yield beep(0.1)

    hello = load_audio(HELLO)
    audio = join(hello, 1.0, hello, 1.0)
    # the client answers send_input after each pause (1.85 s and 4.25 s)
    recording = await arun(ReplyOnPause(fn), audio=audio, inputs=[(2.0, ("ann", "happy")), (4.6, ("bob", "sad"))])
    assert seen == [("ann", "happy"), ("bob", "sad")]
    assert [m.type for m in recording.of_type(Message)] == ["send_input", "send_input"]


@pytest.mark.anyio
async def test_inputs_are_not_asked_for_on_the_phone() -> None:
    seen: list[Any] = []

    def fn(audio: Any, history: Any = None) -> Any:
        seen.append(history)
        yield beep(0.1), AdditionalOutputs(["turn", len(seen)])

    hello = load_audio(HELLO)
    await arun(ReplyOnPause(fn), audio=join(hello, 1.0, hello, 1.0), phone_mode=True, initial_args=[None])
    assert seen == [None, ["turn", 1]]  # on the phone, what a reply shows is the next call's input


@pytest.mark.anyio
async def test_fastrtc_options_change_the_turn_taking() -> None:
    ivr = load_audio(IVR)
    calls = Calls()
    # pauses of 0.1 s end a turn: the IVR prompt (sentence gaps of 0.10-0.20 s) becomes several turns
    impatient = ReplyOnPause(calls, algo_options=AlgoOptions(audio_chunk_duration=0.2, speech_threshold=0.1))
    await arun(impatient, audio=ivr, trailing_silence_s=1.0)
    assert len(calls.calls) > 3
    calls = Calls()
    capped = ReplyOnPause(calls, model_options=SileroVadOptions(max_speech_duration_s=8.0), can_interrupt=False)
    await arun(capped, audio=ivr, trailing_silence_s=1.0)
    assert len(calls.calls) == 4  # 25 s cut every 8 s


class EnergyModel:
    """A FastRTC PauseDetectionModel: loud samples are speech."""

    def __init__(self) -> None:
        self.warmups = 0

    def vad(self, audio: tuple[int, np.ndarray], options: Any) -> tuple[float, list[dict[str, int]]]:
        rate, samples = audio
        return float((np.abs(samples) > 2000).sum()) / rate, []

    def warmup(self) -> None:
        self.warmups += 1


@pytest.mark.anyio
async def test_a_user_pause_detection_model_still_works() -> None:
    model = EnergyModel()
    calls = Calls()
    loud = AudioChunk(np.full((1, 8000 * 2), 6000, np.int16), 8000)
    handler = ReplyOnPause(calls, model=model)
    recording = await arun(handler.copy(), audio=join(1.2, loud, 1.8))
    assert model.warmups == 1
    # FastRTC's rule on 0.55 s chunks: the chunk [1.10, 1.65) has 0.45 s of speech and starts
    # the turn; [2.75, 3.30) still has 0.45 s; [3.30, 3.85) has none and ends it.
    (reply_at,) = replies(recording)
    assert reply_at == pytest.approx(3.85)
    # the utterance: from the chunk that started the turn to the pause, as FastRTC gave it
    assert calls.calls[0][1].shape[1] == round(48000 * 2.75)


def test_constructor_matches_fastrtc() -> None:
    def fn(audio: Any) -> Any:
        yield audio

    handler = ReplyOnPause(fn)
    assert (handler.input_sample_rate, handler.output_sample_rate, handler.output_frame_size) == (48000, 24000, 480)
    assert handler.expected_layout == "mono" and handler.can_interrupt and not handler.needs_args
    assert handler.algo_options == AlgoOptions() and handler.model_options == SileroVadOptions()
    assert handler.latest_args == ["__webrtc_value__"] and handler.phone_mode is False
    assert isinstance(handler.graph(), Graph)
    clone = handler.copy()
    assert clone is not handler and clone.fn is fn and clone.algo_options is handler.algo_options
    with pytest.warns(DeprecationWarning):
        ReplyOnPause(fn, output_frame_size=960)
    assert math.isinf(handler.algo_options.max_continuous_speech_s)


def emit_next(handler: ReplyOnPause, within_s: float = 10.0) -> Any:
    """Call the sync ``emit`` (which returns None after 0.1 s without output) until something comes."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        out = handler.emit()
        if out is not None:
            return out
    raise AssertionError("no output")


def test_driving_it_by_hand_with_receive_and_emit() -> None:
    calls = Calls()
    handler = ReplyOnPause(calls, input_sample_rate=16000, output_sample_rate=16000)
    try:
        handler.start_up()
        for frame in audio_frames(join(load_audio(HELLO, sample_rate=16000), 1.2, rate=16000)):
            handler.receive((16000, np.array(frame.samples)))
        outputs = [emit_next(handler)]
        # A None only means "nothing within 0.1 s"; on a loaded machine the beep may still be coming.
        while sum(array.shape[1] for _, array in outputs) < 3200:
            outputs.append(emit_next(handler))
        assert handler.emit() is None  # and nothing more after the beep
        assert len(calls.calls) == 1
        assert all(rate == 16000 and array.shape[0] == 1 for rate, array in outputs)
        assert sum(array.shape[1] for _, array in outputs) == 3200  # the 0.2 s beep, in 20 ms frames
        # trigger_response answers now, even with nothing said
        handler.trigger_response()
        assert emit_next(handler) is not None and len(calls.calls) == 2
        assert calls.calls[1][1].shape == (1, 0)
        while handler.emit() is not None:  # the rest of the second beep
            pass
        started = time.monotonic()
        assert handler.emit() is None
        assert time.monotonic() - started >= 0.09  # an idle emit waits instead of spinning
    finally:
        handler.shutdown()


@pytest.mark.anyio
async def test_driving_it_by_hand_from_async_code() -> None:
    calls = Calls()
    handler = ReplyOnPause(calls, input_sample_rate=8000, output_sample_rate=8000)
    try:
        for frame in audio_frames(join(load_audio(HELLO), 1.2)):
            await handler.areceive((8000, np.array(frame.samples)))
        with anyio.fail_after(5):
            rate, array = await handler.aemit()  # awaits the next output, no polling
        assert rate == 8000 and len(calls.calls) == 1
    finally:
        await handler.ashutdown()


def test_log_events_are_fastrtc_messages() -> None:
    assert Log(data="started_talking").data == "started_talking"
    assert PauseDetected().media_time_s == 0.0


@pytest.mark.anyio
async def test_turn_audio_goes_to_a_worker_thread_only_for_a_long_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker-thread trip costs a busy server tens of ms: no-op and short conversions stay on the loop."""
    trips: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await run_sync(fn, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    heard: list[int] = []

    async def fn(audio: tuple[int, np.ndarray]) -> Any:
        heard.append(audio[0])
        yield audio[0], np.zeros((1, audio[0] * 3), np.int16)  # 3 s of reply at the turn's rate

    hello = load_audio(HELLO)  # 8 kHz: the turn needs no conversion, nor does the reply
    await arun(ReplyOnPause(fn, input_sample_rate=8000, output_sample_rate=8000), audio=join(hello, 1.0))
    assert heard == [8000] and trips == []
    # 48 kHz out: a 3 s reply is resampled off the loop; the ~2 s turn converted to 16 kHz too
    await arun(ReplyOnPause(fn, input_sample_rate=16000, output_sample_rate=48000), audio=join(hello, 1.0))
    assert heard == [8000, 16000] and sorted(trips) == ["_to_user_audio", "push"]


def test_a_subclass_overriding_fastrtcs_per_frame_internals_is_refused_when_defined() -> None:
    """A Stream never calls FastRTC's determine_pause/process_audio/receive/emit on a ReplyOnPause:
    an override would be silently dead, so defining one fails with what to do instead."""
    from flowrtc.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="overrides determine_pause: .*algo_options") as refused:

        class LouderPause(ReplyOnPause):
            def determine_pause(self, audio: Any, sampling_rate: int, state: Any) -> bool:
                return True

    assert "docs/turn-taking.md" in str(refused.value)

    class Named(ReplyOnPause):  # other overrides are fine
        def __repr__(self) -> str:
            return "Named()"

    assert repr(Named(lambda audio: audio)) == "Named()"
