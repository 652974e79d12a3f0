"""get_silero_model(): FastRTC's pause-detection model API over flowrtc's Silero v6."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowrtc import ReplyOnPause, SileroVadOptions, get_silero_model
from flowrtc.events import ReplyStarted
from flowrtc.testing import load_audio, run

MEDIA = Path(__file__).parent / "media"


def test_vad_measures_speech_in_a_chunk_like_fastrtc() -> None:
    model = get_silero_model()
    assert get_silero_model() is model  # one per process
    model.warmup()
    thanks = load_audio(MEDIA / "asterisk_demo-thanks_8k.wav")  # speech 0.26-1.12, 1.25-5.37 s
    speech_s, segments = model.vad(thanks.to_tuple(), SileroVadOptions())
    assert 4.8 < speech_s < 5.52 and segments
    assert segments[0]["start"] / 8000 < 0.3 and segments[-1]["end"] / 8000 > 5.3
    monkeys = load_audio(MEDIA / "asterisk_tt-monkeys_8k_nonspeech.wav", sample_rate=16000)
    assert model.vad(monkeys.to_tuple(), None) == (0.0, [])
    silence = (48000, np.zeros((1, 48000), np.int16))
    assert model.vad(silence, None) == (0.0, [])


def test_reply_on_pause_streams_the_model_it_is_given() -> None:
    def echo(audio):  # type: ignore[no-untyped-def]
        yield audio

    # With get_silero_model() the graph scores window by window (the IVR prompt's short
    # sentence gaps give one reply), not FastRTC's 0.6 s chunks.
    recording = run(ReplyOnPause(echo, model=get_silero_model()), audio=MEDIA / "asterisk_basic-pbx-ivr-main_8k.wav", trailing_silence_s=1.0)
    assert len(recording.of_type(ReplyStarted)) == 1
    assert 25.15 < recording.of_type(ReplyStarted)[0].media_time_s < 25.15 + 0.6
