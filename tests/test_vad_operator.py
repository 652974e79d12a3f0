"""The ``vad`` operator: streaming Silero hysteresis, in band, in media time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flowrtc.errors import ConfigurationError
from flowrtc.events import Log, SpeechStarted, SpeechStopped
from flowrtc.media import AudioChunk
from flowrtc.models.protocol import ChunkedPauseModel, PauseDetectionModel
from flowrtc.models.silero import VADStream
from flowrtc.operators.vad import QUIET_DBFS, SpeechDetector, _Decimator, _Levels, vad
from flowrtc.testing import audio_frames, load_audio

MEDIA = Path(__file__).parent / "media"
HELLO = MEDIA / "asterisk_hello-world_8k.wav"  # speech 0.19-1.40 s (Silero v6 ground truth)
THANKS = MEDIA / "asterisk_demo-thanks_8k.wav"  # 0.26-1.12, 1.25-5.37
MONKEYS = MEDIA / "asterisk_tt-monkeys_8k_nonspeech.wav"
W = 0.032  # Silero window


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def detector(**options: Any) -> SpeechDetector:
    return SpeechDetector(window_s=W, **options)


def kinds(events: list[Any]) -> list[tuple[str, float]]:
    return [(type(e).__name__, round(e.media_time_s, 3)) for e in events]


# -- the detector -------------------------------------------------------------------


def test_speech_starts_after_min_speech_of_continuous_speech() -> None:
    d = detector(min_speech_ms=160, min_silence_ms=448)
    assert d.feed([0.1, 0.2]) == []
    assert d.feed([0.9, 0.9, 0.9, 0.9]) == []
    # fifth speech window (the 7th overall) ends at 7 * 32 ms
    assert kinds(d.feed([0.9])) == [("SpeechStarted", 0.224)]
    assert d.speaking


def test_a_dip_below_neg_threshold_drops_a_candidate() -> None:
    d = detector(min_speech_ms=160)
    assert d.feed([0.9, 0.9, 0.9, 0.9, 0.2, 0.9, 0.9, 0.9, 0.9]) == []
    assert not d.speaking
    assert kinds(d.feed([0.9])) == [("SpeechStarted", 0.32)]


def test_hysteresis_keeps_speech_between_the_thresholds() -> None:
    d = detector(threshold=0.5, min_speech_ms=64, min_silence_ms=96)
    events = d.feed([0.9, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])  # 0.4 is above neg (0.35): still speech
    assert kinds(events) == [("SpeechStarted", 0.064)]
    assert d.speaking


def test_speech_stops_after_min_silence_and_resets_on_speech() -> None:
    d = detector(min_speech_ms=32, min_silence_ms=96)
    d.feed([0.9])
    # two silent windows, then speech again: the silence run restarts
    assert d.feed([0.1, 0.1, 0.9]) == []
    # a window between the thresholds extends a silence run that has started
    (stop,) = d.feed([0.1, 0.4, 0.1])
    assert kinds([stop]) == [("SpeechStopped", 0.224)]
    assert stop.speech_end_s == pytest.approx(0.128)  # the pause began after the fourth window
    assert not d.speaking


def test_event_times_are_media_time_from_the_start_offset() -> None:
    d = SpeechDetector(window_s=W, min_speech_ms=32, min_silence_ms=32, start_s=10.0)
    assert kinds(d.feed([0.9, 0.1])) == [("SpeechStarted", 10.032), ("SpeechStopped", 10.064)]


def test_durations_round_to_whole_windows() -> None:
    assert detector(min_speech_ms=160).speech_windows == 5
    assert detector(min_silence_ms=450).silence_windows == 14  # 448 ms
    assert detector(min_speech_ms=0).speech_windows == 1


def test_finish_stops_speech_at_the_end_of_input() -> None:
    d = detector(min_speech_ms=32)
    d.feed([0.9, 0.9])
    (stop,) = d.finish(1.0)
    assert kinds([stop]) == [("SpeechStopped", 1.0)] and stop.speech_end_s == 1.0
    assert d.finish(2.0) == []
    d.feed([0.9, 0.1])  # in a pause when the input ends: speech ended where the pause began
    (stop,) = d.finish(2.0)
    assert (stop.media_time_s, stop.speech_end_s) == (2.0, pytest.approx(0.096))  # after the 3rd window


def test_bad_thresholds_are_rejected() -> None:
    with pytest.raises(ConfigurationError):
        detector(threshold=0.3, neg_threshold=0.5)
    with pytest.raises(ConfigurationError):
        detector(rise_db=0.0)
    with pytest.raises(ConfigurationError):
        detector(rise_hold_ms=-1.0)
    with pytest.raises(ConfigurationError):
        detector(tail_db=-3.0)
    with pytest.raises(ConfigurationError):
        detector(tail_ms=-1.0)


# -- the resume hold: a pause that is getting louder again is not ended yet ------------------


def speaking_detector(**options: Any) -> SpeechDetector:
    d = detector(min_speech_ms=32, min_silence_ms=96, **options)  # a pause of 3 windows ends speech
    assert kinds(d.feed([0.9], [-20.0])) == [("SpeechStarted", 0.032)]
    return d


def test_a_pause_ending_on_a_louder_window_is_held_until_it_is_quiet_again() -> None:
    d = speaking_detector()
    # the third quiet window would end speech, but it is 10 dB over the pause's quietest
    assert d.feed([0.1, 0.1, 0.1], [-60.0, -61.0, -51.0]) == []
    assert d.speaking
    assert d.feed([0.1], [-52.0]) == []  # still louder: held again
    (stop,) = d.feed([0.1], [-60.5])  # back at the floor
    assert kinds([stop]) == [("SpeechStopped", 0.192)]
    assert stop.speech_end_s == pytest.approx(0.032)  # the speech ended where the pause began


def test_speech_that_resumes_during_the_hold_keeps_the_turn() -> None:
    d = speaking_detector()
    # the sound rose at the third window; Silero only says speech two windows later
    assert d.feed([0.1, 0.1, 0.2, 0.4, 0.9], [-60.0, -60.0, -45.0, -30.0, -20.0]) == []
    assert d.speaking
    assert kinds(d.feed([0.1, 0.1, 0.1], [-60.0, -60.0, -60.0])) == [("SpeechStopped", 0.288)]


def test_the_hold_lasts_at_most_rise_hold_ms() -> None:
    d = speaking_detector(rise_hold_ms=64.0)  # two windows
    events = d.feed([0.1] * 6, [-60.0, -60.0, -40.0, -40.0, -40.0, -40.0])
    # quiet windows 1-2, held at 3 and 4, ended at 5: 0.032 + 5 * 0.032
    assert kinds(events) == [("SpeechStopped", 0.192)]


def test_a_steady_noise_floor_does_not_hold_the_pause() -> None:
    levels = list(-50.0 + np.random.default_rng(3).normal(0, 0.5, 3))  # white noise: ~0.4 dB between windows
    d = speaking_detector()
    assert kinds(d.feed([0.1, 0.1, 0.1], levels)) == [("SpeechStopped", 0.128)]


def test_without_levels_or_with_rise_db_none_there_is_no_hold() -> None:
    assert kinds(speaking_detector().feed([0.1, 0.1, 0.1])) == [("SpeechStopped", 0.128)]
    d = speaking_detector(rise_db=None)
    assert kinds(d.feed([0.1, 0.1, 0.1], [-60.0, -60.0, -30.0])) == [("SpeechStopped", 0.128)]


# -- the tail: a pause is counted from where the sound died away -------------------------


def test_a_pause_is_counted_from_where_the_sound_died_away() -> None:
    # speech at -20 dBFS; the sound falls 45 dB under it, Silero lets go two windows later
    d = speaking_detector()
    (stop,) = d.feed([0.9, 0.9, 0.1], [-65.0, -65.0, -70.0])
    assert kinds([stop]) == [("SpeechStopped", 0.128)]  # 3 quiet windows: the 96 ms pause is complete
    assert stop.speech_end_s == pytest.approx(0.032)
    d = speaking_detector(tail_db=None)  # from Silero's release: two windows later
    assert d.feed([0.9, 0.9, 0.1], [-65.0, -65.0, -70.0]) == []
    (stop,) = d.feed([0.1, 0.1], [-70.0, -70.0])
    assert kinds([stop]) == [("SpeechStopped", 0.192)] and stop.speech_end_s == pytest.approx(0.096)


def test_the_pause_begins_at_most_tail_ms_before_silero_let_go() -> None:
    d = speaking_detector(tail_ms=32.0)  # one window
    assert d.feed([0.9, 0.9, 0.9, 0.1], [-65.0] * 4) == []
    (stop,) = d.feed([0.1], [-70.0])
    assert kinds([stop]) == [("SpeechStopped", 0.192)] and stop.speech_end_s == pytest.approx(0.096)


def test_a_floor_within_tail_db_of_the_speech_leaves_the_pause_to_silero() -> None:
    # noise 30 dB under the speech: the sound never falls tail_db (40 dB) under it
    levels = [-50.0, -50.0, -50.0, -50.0, -50.0]
    with_tail, without = speaking_detector(), speaking_detector(tail_db=None)
    probabilities = [0.9, 0.9, 0.1, 0.1, 0.1]
    assert kinds(with_tail.feed(probabilities, levels)) == kinds(without.feed(probabilities, levels)) == [("SpeechStopped", 0.192)]


def test_a_louder_window_restarts_the_quiet_run() -> None:
    d = speaking_detector()
    assert d.feed([0.9, 0.9, 0.1], [-65.0, -30.0, -65.0]) == []  # only the last window is quiet
    (stop,) = d.feed([0.1, 0.1], [-70.0, -70.0])
    assert kinds([stop]) == [("SpeechStopped", 0.192)] and stop.speech_end_s == pytest.approx(0.096)


def test_a_pause_the_tail_starts_late_is_announced_at_once_with_the_same_end() -> None:
    # min_silence 5 windows, early pause 2: the sound fell two windows before Silero let go,
    # so the pause is already 3 windows old when it is seen, past early_pause_ms
    d = SpeechDetector(window_s=W, min_speech_ms=32, min_silence_ms=160, early_pause_ms=64)
    d.feed([0.9], [-20.0])
    (paused,) = d.feed([0.9, 0.9, 0.1], [-65.0, -65.0, -70.0])
    assert kinds([paused]) == [("SpeechPaused", 0.128)] and paused.speech_end_s == pytest.approx(0.032)
    (stop,) = d.feed([0.1, 0.1], [-70.0, -70.0])
    assert kinds([stop]) == [("SpeechStopped", 0.192)] and stop.speech_end_s == paused.speech_end_s


# -- the operator on real speech ---------------------------------------------------------


async def collect(chunk: AudioChunk, **options: Any) -> list[Any]:
    async def source() -> Any:
        for frame in audio_frames(chunk):
            yield frame

    return [item async for item in vad(source(), **options)]


def events_of(items: list[Any]) -> list[Any]:
    return [item for item in items if not isinstance(item, AudioChunk)]


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_hello_world_gives_one_speech_segment_at_every_rate(rate: int) -> None:
    clip = load_audio(HELLO, sample_rate=rate)
    items = await collect(AudioChunk.concat([clip, AudioChunk.silence(1.0, rate)]))
    events = events_of(items)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = (e.media_time_s for e in events)
    # speech begins at 0.19 s: decided 160 ms of speech later (+ the model's onset lag)
    assert 0.19 + 0.16 <= started <= 0.19 + 0.16 + 0.1
    # speech ends at 1.40 s: decided about 448 ms of silence later
    assert 1.40 + 0.3 <= stopped <= 1.40 + 0.55


@pytest.mark.anyio
async def test_audio_passes_through_unchanged_and_events_follow_their_chunk() -> None:
    clip = load_audio(HELLO)
    frames = audio_frames(AudioChunk.concat([clip, AudioChunk.silence(1.0, 8000)]))

    async def source() -> Any:
        for frame in frames:
            yield frame
        yield Log(data="other items pass", media_time_s=9.0)

    items = [item async for item in vad(source())]
    assert [item for item in items if isinstance(item, AudioChunk)] == frames
    assert isinstance(items[-1], Log)
    for index, item in enumerate(items):
        if isinstance(item, (SpeechStarted, SpeechStopped)):
            before = [i for i in items[:index] if isinstance(i, AudioChunk)][-1]
            # decided inside (or at the end of) the chunk just before it
            assert before.media_time_s < item.media_time_s <= before.media_time_s + before.duration_s + 1e-9


def test_levels_are_of_the_windows_the_model_scored_whatever_the_chunking() -> None:
    samples = load_audio(HELLO).samples[0]
    whole = samples[: len(samples) // 256 * 256].astype(np.float64).reshape(-1, 256) / 32768
    expected = 10 * np.log10(np.maximum((whole**2).mean(axis=1), 10 ** (QUIET_DBFS / 10)))
    stream, at, levels = VADStream(8000), 0, []
    for size in [100, 256, 300, 7, 512] * 40:
        stream.push(samples[at : at + size])
        at += size
        got = _Levels(stream.last_windows, 256)
        levels += [got[i] for i in range(len(got))]
    assert len(levels) == len(expected)
    np.testing.assert_allclose(levels, expected, atol=1e-3)
    assert _Levels(np.zeros((1, 288), np.float32), 256)[0] == QUIET_DBFS  # digital silence


def goodbye_then_thanks(gap_s: float, rate: int) -> AudioChunk:
    """"Goodbye." and "Thank you for trying out ..." (demo-thanks) with ``gap_s`` of silence between."""
    clip = load_audio(THANKS, sample_rate=rate)
    first, second = clip.slice(0, round(1.12 * rate)), clip.slice(round(1.25 * rate), clip.n_samples)
    return AudioChunk.concat([first, AudioChunk.silence(gap_s, rate), second, AudioChunk.silence(1.0, rate)], pts=0)


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 48000])
async def test_the_resume_hold_keeps_a_pause_whose_second_sentence_silero_hears_late(rate: int) -> None:
    # The sound of "Goodbye." ends at ~1.02 s; cut at 1.12 s with 0.28 s of silence added, the
    # pause is ~0.42 s, under the 448 ms that ends a turn. Silero only says "speech" 40-100 ms
    # into "Thank you", so without the hold the turn ends first.
    pair = goodbye_then_thanks(0.28, rate)
    held = [name for name, _ in kinds(events_of(await collect(pair)))]
    assert held == ["SpeechStarted", "SpeechStopped"]
    unheld = [name for name, _ in kinds(events_of(await collect(pair, rise_db=None)))]
    assert unheld == ["SpeechStarted", "SpeechStopped"] * 2


def sound_end_s(clip: AudioChunk, depth_db: float = 40.0) -> float:
    """End of the last 32 ms window of ``clip`` (8 kHz) within ``depth_db`` of its loudest."""
    n = clip.n_samples // 256
    windows = clip.samples[0, : n * 256].astype(np.float64).reshape(n, 256)
    level = 10 * np.log10(np.maximum(np.mean(windows**2, axis=1), 1.0))
    return float((np.flatnonzero(level > level.max() - depth_db)[-1] + 1) * W)


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 48000])
async def test_a_turn_ends_the_pause_after_its_sound_does_not_after_silero_lets_go(rate: int) -> None:
    clip = load_audio(HELLO)
    end = sound_end_s(clip)  # 1.344 s: the end of "world"
    audio = AudioChunk.concat([load_audio(HELLO, sample_rate=rate), AudioChunk.silence(1.0, rate)])
    (stop,) = [e for e in events_of(await collect(audio)) if isinstance(e, SpeechStopped)]
    assert stop.speech_end_s == pytest.approx(end, abs=W)
    assert stop.media_time_s - stop.speech_end_s == pytest.approx(0.448)
    (late,) = [e for e in events_of(await collect(audio, tail_db=None)) if isinstance(e, SpeechStopped)]
    # Silero's probability lingers ~0.1 s after the "d": counted from there, the turn ends later
    assert late.speech_end_s >= end + 2 * W and late.media_time_s >= stop.media_time_s + 2 * W


@pytest.mark.anyio
async def test_over_a_noise_floor_near_the_speech_silero_alone_decides_the_pause() -> None:
    # a -40 dBFS floor is ~30 dB under "hello world": its sound never falls 40 dB
    clip = AudioChunk.concat([load_audio(HELLO), AudioChunk.silence(1.0, 8000)])
    noise = np.random.default_rng(5).normal(0, 330, clip.samples.shape)
    noisy = AudioChunk(np.clip(clip.samples + noise, -32768, 32767).astype(np.int16), 8000)
    assert kinds(events_of(await collect(noisy))) == kinds(events_of(await collect(noisy, tail_db=None)))


@pytest.mark.anyio
async def test_the_resume_hold_costs_nothing_at_the_end_of_a_turn() -> None:
    for clip in (load_audio(HELLO), load_audio(THANKS)):
        audio = AudioChunk.concat([clip, AudioChunk.silence(1.0, 8000)])
        assert kinds(events_of(await collect(audio))) == kinds(events_of(await collect(audio, rise_db=None)))


@pytest.mark.anyio
async def test_batched_and_inline_scoring_agree() -> None:
    clip = AudioChunk.concat([load_audio(THANKS), AudioChunk.silence(1.0, 8000)])
    batched = kinds(events_of(await collect(clip)))
    inline = kinds(events_of(await collect(clip, batched=False)))
    assert batched == inline
    assert [name for name, _ in batched] == ["SpeechStarted", "SpeechStopped"]


@pytest.mark.anyio
async def test_16k_scoring_is_available() -> None:
    clip = load_audio(HELLO, sample_rate=16000)
    events = events_of(await collect(AudioChunk.concat([clip, AudioChunk.silence(1.0, 16000)]), sample_rate=16000))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    with pytest.raises(ConfigurationError):
        await collect(clip, sample_rate=11025)


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 48000])
async def test_no_speech_in_monkeys_silence_or_noise(rate: int) -> None:
    monkeys = load_audio(MONKEYS, sample_rate=rate)
    noise = np.random.default_rng(7).normal(0, 3000, (1, rate * 5)).astype(np.int16)
    for clip in (monkeys, AudioChunk.silence(5.0, rate), AudioChunk(noise, rate)):
        assert events_of(await collect(clip)) == []


@pytest.mark.anyio
async def test_stereo_input_is_mixed_down_for_scoring() -> None:
    clip = load_audio(HELLO, sample_rate=16000)
    stereo = AudioChunk.concat([clip, AudioChunk.silence(1.0, 16000)]).to_layout("stereo")
    items = await collect(stereo)
    assert [type(e) for e in events_of(items)] == [SpeechStarted, SpeechStopped]
    assert all(chunk.channels == 2 for chunk in items if isinstance(chunk, AudioChunk))


@pytest.mark.anyio
async def test_a_rate_change_mid_stream_is_an_error() -> None:
    async def source() -> Any:
        yield AudioChunk.silence(0.02, 8000)
        yield AudioChunk.silence(0.02, 16000, pts=320)

    with pytest.raises(ConfigurationError):
        async for _ in vad(source()):
            pass


def test_the_decimator_is_chunking_invariant_and_low_passes() -> None:
    x = np.random.default_rng(1).standard_normal(9_999).astype(np.float32)
    whole = _Decimator(3).push(x)
    d = _Decimator(3)
    pieces = np.concatenate([d.push(x[i : i + 37]) for i in range(0, len(x), 37)])
    np.testing.assert_allclose(whole, pieces, atol=1e-5)
    tone = np.sin(2 * np.pi * 12_000 * np.arange(4800) / 48_000).astype(np.float32)
    assert np.abs(_Decimator(3).push(tone)[50:]).max() < 0.01  # 12 kHz is gone at 16 kHz
    low = np.sin(2 * np.pi * 1000 * np.arange(4800) / 48_000).astype(np.float32)
    assert np.abs(_Decimator(6).push(low)[50:]).max() == pytest.approx(1.0, abs=0.02)


# -- a FastRTC-style chunk model ------------------------------------------------------------


class LoudIsSpeech:
    """A PauseDetectionModel: seconds of samples louder than a level."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Any]] = []
        self.warmed = 0

    def vad(self, audio: tuple[int, np.ndarray], options: Any) -> tuple[float, list[dict[str, int]]]:
        rate, samples = audio
        self.calls.append((rate, samples.shape[0], options))
        assert samples.dtype == np.int16 and samples.ndim == 1
        return float((np.abs(samples) > 1000).sum()) / rate, []

    def warmup(self) -> None:
        self.warmed += 1


def loud(seconds: float, rate: int = 16000) -> AudioChunk:
    return AudioChunk(np.full((1, round(seconds * rate)), 8000, np.int16), rate)


@pytest.mark.anyio
async def test_a_chunk_model_is_scored_one_chunk_at_a_time() -> None:
    model = LoudIsSpeech()
    assert isinstance(model, PauseDetectionModel)
    clip = AudioChunk.concat([AudioChunk.silence(0.6, 16000), loud(1.2), AudioChunk.silence(1.2, 16000)])
    events = events_of(
        await collect(clip, model=ChunkedPauseModel(model, "opts", chunk_s=0.6), min_speech_ms=0, min_silence_ms=0)
    )
    assert kinds(events) == [("SpeechStarted", 1.2), ("SpeechStopped", 2.4)]
    assert model.calls == [(16000, 9600, "opts")] * 5
    assert model.warmed == 0  # warmup is the handler's job, once


def test_chunked_pause_model_reads_speech_fraction() -> None:
    adapter = ChunkedPauseModel(LoudIsSpeech(), chunk_s=0.5)
    chunks = adapter.cut(np.full(12_000, 5000, np.int16), 16000)
    assert [c.shape[0] for c in chunks] == [8000]
    assert adapter.probability(chunks[0], 16000) == 1.0
    assert adapter.cut(np.zeros(4000, np.int16), 16000)[0][4000:].max() == 0
    with pytest.raises(ConfigurationError):
        ChunkedPauseModel(object())
