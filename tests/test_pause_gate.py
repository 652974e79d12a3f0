"""``pause_gate``: one Utterance per user turn, and FastRTC's options mapped onto it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowrtc.events import Log, PauseDetected, PendingUtterance, SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, Utterance
from flowrtc.handlers.options import AlgoOptions, SileroVadOptions
from flowrtc.media import AudioChunk
from flowrtc.operators.pause_gate import TurnSettings, pause_gate, turn_settings, turn_taking
from flowrtc.operators.vad import DEFAULT_MIN_SILENCE_MS, DEFAULT_MIN_SPEECH_MS
from flowrtc.testing import audio_frames, load_audio

MEDIA = Path(__file__).parent / "media"
RATE = 8000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ramp(seconds: float) -> AudioChunk:
    """Audio whose sample values are their own index, so slices can be checked exactly."""
    n = round(seconds * RATE)
    return AudioChunk((np.arange(n) % 30000).astype(np.int16)[None, :], RATE)


async def gate(script: list[tuple[float, Any]], audio: AudioChunk, **options: Any) -> list[Any]:
    """Feed 20 ms frames of ``audio``, inserting each scripted event after the frame ending at its time."""

    async def source() -> Any:
        pending = sorted(script, key=lambda entry: entry[0])
        for frame in audio_frames(audio):
            yield frame
            end = frame.media_time_s + frame.duration_s
            while pending and pending[0][0] <= end + 1e-9:
                yield pending.pop(0)[1]
        for _, event in pending:
            yield event

    return [item async for item in pause_gate(source(), **options)]


def started(t: float) -> tuple[float, SpeechStarted]:
    return t, SpeechStarted(media_time_s=t)


def stopped(t: float) -> tuple[float, SpeechStopped]:
    return t, SpeechStopped(media_time_s=t)


@pytest.mark.anyio
async def test_a_speech_stopped_that_says_when_speech_ended_is_taken_at_its_word() -> None:
    # the VAD held the pause's end 96 ms (a rise in level): it decided at 3.546 s, the speech
    # had ended at 3.0 s
    audio = ramp(5.0)
    items = await gate(
        [started(1.16), (3.546, SpeechStopped(media_time_s=3.546, speech_end_s=3.0))],
        audio,
        speech_pad_ms=200,
        min_speech_ms=160,
        min_silence_ms=450,
    )
    utterance = items[-1]
    assert utterance.media_time_s == 3.546
    assert utterance.end_s == pytest.approx(3.0)
    assert utterance.audio.pts == round(0.8 * RATE)
    assert utterance.audio.n_samples == round(2.4 * RATE)  # still to 200 ms after the speech


@pytest.mark.anyio
async def test_one_turn_becomes_one_utterance_with_padding() -> None:
    audio = ramp(5.0)
    items = await gate(
        [started(1.16), stopped(3.45)], audio, speech_pad_ms=200, min_speech_ms=160, min_silence_ms=450
    )
    assert not any(isinstance(item, AudioChunk) for item in items)  # the user's audio stops here
    assert [type(i).__name__ if not isinstance(i, Log) else i.data for i in items] == [
        "SpeechStarted",
        "started_talking",
        "SpeechStopped",
        "PauseDetected",
        "pause_detected",
        "Utterance",
    ]
    utterance = items[-1]
    assert utterance.media_time_s == 3.45
    assert utterance.start_s == pytest.approx(1.0)  # speech began min_speech_ms before the decision
    assert utterance.end_s == pytest.approx(3.0)  # and ended min_silence_ms before its decision
    # audio from 200 ms before the speech to 200 ms after it, sample exact
    assert utterance.audio.pts == round(0.8 * RATE)
    assert utterance.audio.n_samples == round(2.4 * RATE)
    np.testing.assert_array_equal(utterance.audio.samples, audio.slice(round(0.8 * RATE), round(3.2 * RATE)).samples)
    logs = [i for i in items if isinstance(i, Log)]
    assert [(log.data, log.media_time_s) for log in logs] == [("started_talking", 1.16), ("pause_detected", 3.45)]


@pytest.mark.anyio
async def test_preroll_is_limited_by_the_audio_available() -> None:
    items = await gate([started(0.1), stopped(1.0)], ramp(2.0), speech_pad_ms=200, min_speech_ms=160, min_silence_ms=450)
    utterance = items[-1]
    assert utterance.audio.pts == 0
    assert utterance.audio.n_samples == round(0.75 * RATE)  # up to 1.0 - 0.45 + 0.2


@pytest.mark.anyio
async def test_several_turns_in_order() -> None:
    script = [started(1.0), stopped(2.0), started(3.0), stopped(4.0), started(5.0), stopped(6.0)]
    items = await gate(script, ramp(7.0), speech_pad_ms=0, min_speech_ms=100, min_silence_ms=300)
    utterances = [i for i in items if isinstance(i, Utterance)]
    assert [(u.start_s, u.end_s) for u in utterances] == [
        pytest.approx((0.9, 1.7)),
        pytest.approx((2.9, 3.7)),
        pytest.approx((4.9, 5.7)),
    ]
    assert [u.audio.duration_s for u in utterances] == pytest.approx([0.8, 0.8, 0.8])


@pytest.mark.anyio
async def test_the_tail_of_a_turn_is_preroll_for_the_next() -> None:
    # the next speech starts right after the previous pause was decided
    script = [started(1.0), stopped(1.5), started(1.6), stopped(3.0)]
    items = await gate(script, ramp(4.0), speech_pad_ms=200, min_speech_ms=100, min_silence_ms=300)
    second = [i for i in items if isinstance(i, Utterance)][1]
    assert second.audio.pts == round(1.3 * RATE)  # 1.6 - 0.1 - 0.2, taken from the first turn's tail


@pytest.mark.anyio
async def test_max_turn_cuts_a_long_turn_and_the_next_starts_at_once() -> None:
    items = await gate(
        [started(0.5), stopped(5.2)], ramp(6.0), speech_pad_ms=0, min_speech_ms=100, min_silence_ms=200, max_turn_s=2.0
    )
    utterances = [i for i in items if isinstance(i, Utterance)]
    assert [u.media_time_s for u in utterances] == pytest.approx([2.4, 4.4, 5.2])
    assert [u.audio.duration_s for u in utterances] == pytest.approx([2.0, 2.0, 0.6])
    assert [i.data for i in items if isinstance(i, Log)].count("started_talking") == 3


@pytest.mark.anyio
async def test_an_upstream_pause_answers_now_with_what_there_is() -> None:
    # trigger_response: while talking, and with nothing said at all
    script = [started(1.0), (2.0, PauseDetected(media_time_s=2.0)), stopped(2.5), (3.0, PauseDetected(media_time_s=0.0))]
    items = await gate(script, ramp(3.5), speech_pad_ms=0, min_speech_ms=100, min_silence_ms=300)
    utterances = [i for i in items if isinstance(i, Utterance)]
    assert [u.media_time_s for u in utterances] == pytest.approx([2.0, 2.5, 3.0])
    assert utterances[0].audio.duration_s == pytest.approx(1.1)
    assert utterances[1].audio.duration_s == pytest.approx(0.2)  # speech went on until 2.2
    assert utterances[2].audio.n_samples == 0 and utterances[2].audio.sample_rate == RATE


@pytest.mark.anyio
async def test_other_items_pass_and_stray_stops_are_harmless() -> None:
    marker = Log(data="x", media_time_s=0.5)
    items = await gate([(0.5, marker), stopped(1.0)], ramp(1.5))
    assert items == [marker, SpeechStopped(media_time_s=1.0)]


# -- FastRTC options ---------------------------------------------------------------------


def test_defaults_of_the_options_match_the_operators() -> None:
    assert turn_settings(AlgoOptions(), SileroVadOptions()) == turn_settings() == TurnSettings()
    assert TurnSettings().min_speech_ms == DEFAULT_MIN_SPEECH_MS
    assert TurnSettings().min_silence_ms == DEFAULT_MIN_SILENCE_MS


def test_fastrtc_options_map_onto_the_detector() -> None:
    s = turn_settings(
        AlgoOptions(audio_chunk_duration=0.6, started_talking_threshold=0.2, speech_threshold=0.1, max_continuous_speech_s=30),
        SileroVadOptions(threshold=0.6, min_speech_duration_ms=250, min_silence_duration_ms=100, speech_pad_ms=400),
    )
    assert s == TurnSettings(
        threshold=0.6,
        neg_threshold=pytest.approx(0.45),
        min_speech_ms=250,
        min_silence_ms=pytest.approx(500),  # 0.6 - 0.1 s of silence leaves < 0.1 s of speech in the chunk
        speech_pad_ms=400,
        max_turn_s=30,
    )
    # a longer min silence wins; so does a longer started_talking_threshold
    assert turn_settings(AlgoOptions(started_talking_threshold=0.3), SileroVadOptions(min_silence_duration_ms=900)) == TurnSettings(
        min_speech_ms=300, min_silence_ms=900
    )
    assert turn_settings(None, SileroVadOptions(max_speech_duration_s=12)).max_turn_s == 12
    assert turn_settings(AlgoOptions()).max_turn_s == math.inf


def test_options_validate() -> None:
    with pytest.raises(Exception):
        AlgoOptions(audio_chunk_duration=0)
    with pytest.raises(Exception):
        SileroVadOptions(threshold=1.5)
    with pytest.raises(Exception):
        AlgoOptions().audio_chunk_duration = 1.0  # type: ignore[misc]


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_the_ivr_prompt_is_one_turn(rate: int) -> None:
    """Sentence gaps of 0.10-0.25 s inside a 25 s prompt never end the turn."""
    clip = load_audio(MEDIA / "asterisk_basic-pbx-ivr-main_8k.wav", sample_rate=rate)

    async def source() -> Any:
        for frame in audio_frames(AudioChunk.concat([clip, AudioChunk.silence(1.0, rate)])):
            yield frame

    items = [item async for item in turn_taking()(source())]
    utterances = [i for i in items if isinstance(i, Utterance)]
    assert len(utterances) == 1
    (u,) = utterances
    assert u.audio.sample_rate == rate
    assert u.start_s < 0.10 + 0.1 and 25.15 - 0.1 < u.end_s < 25.15 + 0.1
    assert 25.15 + 0.3 < u.media_time_s < 25.15 + 0.6


@pytest.mark.anyio
async def test_a_speech_start_decided_behind_the_audio_still_gets_its_whole_preroll() -> None:
    """The VAD's events trail the audio (after a catching-up chunk, by up to 160 ms): no pre-roll is lost."""
    audio = ramp(3.0)

    async def source() -> Any:
        for frame in audio_frames(audio):
            yield frame
            if frame.media_time_s + frame.duration_s >= 1.3 - 1e-9 and frame.media_time_s < 1.3 - 1e-9:
                yield SpeechStarted(media_time_s=1.16)  # decided at 1.16, seen after the audio up to 1.3
        yield SpeechStopped(media_time_s=2.5)

    items = [item async for item in pause_gate(source(), speech_pad_ms=200, min_speech_ms=160, min_silence_ms=450)]
    utterance = items[-1]
    assert isinstance(utterance, Utterance)
    assert utterance.audio.pts == round(0.8 * RATE)  # 1.16 - 0.16 - 0.2, as if the event had come at once
    np.testing.assert_array_equal(utterance.audio.samples, audio.slice(round(0.8 * RATE), round(2.25 * RATE)).samples)


# -- a turn sent ahead (vad(early_pause_ms=...)) --------------------------------------
EARLY = {"speech_pad_ms": 200, "min_speech_ms": 160, "min_silence_ms": 448}


@pytest.mark.anyio
async def test_the_pending_turn_is_the_turn_that_follows_sample_for_sample() -> None:
    audio = ramp(5.0)
    items = await gate(
        [
            (1.16, SpeechStarted(media_time_s=1.16)),
            (3.192, SpeechPaused(media_time_s=3.192, speech_end_s=3.0)),
            (3.448, SpeechStopped(media_time_s=3.448, speech_end_s=3.0)),
        ],
        audio,
        **EARLY,
    )
    (pending,) = [i for i in items if isinstance(i, PendingUtterance)]
    (final,) = [i for i in items if isinstance(i, Utterance)]
    # 192 ms into the pause the 200 ms of padding after the speech has not all come: it waits for it
    assert pending.media_time_s == pytest.approx(3.2)  # decided when the padding was in, to the sample
    assert (pending.utterance.start_s, pending.utterance.end_s) == (final.start_s, final.end_s)
    assert pending.utterance.audio.pts == final.audio.pts == round(0.8 * RATE)
    np.testing.assert_array_equal(pending.utterance.audio.samples, final.audio.samples)
    assert items.index(pending) < next(i for i, item in enumerate(items) if isinstance(item, SpeechStopped))


@pytest.mark.anyio
async def test_a_pause_withdrawn_before_its_padding_came_sends_nothing_ahead() -> None:
    items = await gate(
        [
            (1.16, SpeechStarted(media_time_s=1.16)),
            (3.1, SpeechPaused(media_time_s=3.1, speech_end_s=3.0)),
            (3.14, SpeechResumed(media_time_s=3.14)),
            (4.448, SpeechStopped(media_time_s=4.448, speech_end_s=4.0)),
        ],
        ramp(5.0),
        **EARLY,
    )
    assert not [i for i in items if isinstance(i, PendingUtterance)]
    (final,) = [i for i in items if isinstance(i, Utterance)]
    assert final.end_s == pytest.approx(4.0)
