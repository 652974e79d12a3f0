"""The operator algebra and the media operators, on real recordings and exact sample counts."""

from __future__ import annotations

import threading
import warnings
from typing import Any, AsyncIterator, Iterable

import aiostream
import anyio
import av
import numpy as np
import pytest
from aiostream import pipe, stream

from flowrtc.errors import ConfigurationError, MediaError
from flowrtc.events import AdditionalOutputs, CloseStream, Interrupt, Log, SpeechStarted, Utterance
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators import (
    Flow,
    Pipe,
    decode,
    encode,
    handler,
    identity,
    mulaw_decode,
    mulaw_encode,
    normalize_output,
    pace,
    rechunk,
    resample,
    scoped,
)
from flowrtc.operators.handler import to_user_input
from flowrtc.operators.rechunk import Rechunker
from flowrtc.operators.resample import Resampler
from flowrtc.testing import audio_frames

pytestmark = pytest.mark.anyio

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


async def source(items: Iterable[Any], closed: list[str] | None = None) -> AsyncIterator[Any]:
    """A plain async generator of ``items`` that records when it is closed."""
    try:
        for item in items:
            yield item
    finally:
        if closed is not None:
            closed.append("closed")


async def collect(flow: Any) -> list[Any]:
    return [item async for item in flow]


def joined(items: Iterable[Any]) -> np.ndarray:
    return np.concatenate([c.to_int16().samples for c in items if isinstance(c, AudioChunk)], axis=1)


def assert_contiguous(chunks: list[AudioChunk]) -> None:
    for before, after in zip(chunks, chunks[1:]):
        assert after.pts == before.end_pts, (before.pts, before.n_samples, after.pts)


class Marker:
    """An item no operator knows: it must come out unchanged and in order."""

    def __init__(self, name: str) -> None:
        self.name = name


def sine(frequency_hz: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * frequency_hz * t)


# -- the algebra ------------------------------------------------------------------------------------
async def test_pipeline_reads_left_to_right(hello: AudioChunk) -> None:
    frames = audio_frames(hello)
    out = await collect(source(frames) | resample(16000) | rechunk(duration_ms=40))
    assert all(c.sample_rate == 16000 for c in out)
    assert [c.n_samples for c in out[:-1]] == [640] * (len(out) - 1)
    assert sum(c.n_samples for c in out) == hello.n_samples * 2
    assert_contiguous(out)


async def test_pipes_compose_and_build_fresh_state_per_source(hello: AudioChunk) -> None:
    chain = resample(16000) | rechunk(duration_ms=20) | identity()
    assert isinstance(chain, Pipe) and chain.name == "resample | rechunk | identity"
    first = chain(source(audio_frames(hello)))
    second = source(audio_frames(hello)[:10]) | chain
    assert isinstance(first, Flow) and isinstance(second, Flow)
    a, b = await collect(first), await collect(second)
    assert sum(c.n_samples for c in a) == hello.n_samples * 2
    assert sum(c.n_samples for c in b) == 10 * 160 * 2  # the second run shares no buffers with the first
    assert a[0].pts == b[0].pts == 0


async def test_operator_called_on_a_source_runs_and_raw_is_the_generator(hello: AudioChunk) -> None:
    flow = resample(source(audio_frames(hello)[:5]), 16000)
    assert isinstance(flow, Flow)
    assert sum(c.n_samples for c in await collect(flow)) == 5 * 320
    raw = resample.raw(source(audio_frames(hello)[:5]), 16000)
    assert hasattr(raw, "asend")  # the bare async generator, no wrapper
    assert sum(c.n_samples for c in await collect(raw)) == 5 * 320


async def test_aiostream_source_into_flowrtc_operators(hello: AudioChunk) -> None:
    frames = audio_frames(hello)
    out = await collect(stream.iterate(frames) | resample(16000))  # warnings are errors here
    assert sum(c.n_samples for c in out) == hello.n_samples * 2
    assert_contiguous(out)


async def test_flowrtc_flow_into_aiostream_pipes(hello: AudioChunk) -> None:
    frames = audio_frames(hello)
    sizes = await collect(source(frames) | resample(16000) | pipe.map(lambda c: c.n_samples) | pipe.filter(lambda n: n > 0))
    assert sum(sizes) == hello.n_samples * 2
    composed = resample(16000) | pipe.map(lambda c: c.sample_rate) | pipe.take(3)
    assert await collect(source(frames) | composed) == [16000, 16000, 16000]
    both = await collect(stream.merge(source(frames[:3]) | identity(), source(frames[3:5]) | identity()) | rechunk(duration_ms=20))
    assert sorted(c.pts for c in both) == [0, 160, 320, 480, 640]


async def test_stopping_early_closes_every_upstream(hello: AudioChunk) -> None:
    closed: list[str] = []
    flow = source(audio_frames(hello), closed) | resample(16000) | rechunk(duration_ms=20) | pipe.take(2)
    assert len(await collect(flow)) == 2
    assert closed == ["closed"]
    closed.clear()
    async with scoped(source(audio_frames(hello), closed) | identity() | identity()) as items:
        async for _ in items:
            break
    assert closed == ["closed"]


FAKE_TIME = [0.0]


async def fake_sleep(seconds: float) -> None:
    FAKE_TIME[0] += seconds


PASS_THROUGH = {
    "identity": identity(),
    "decode": decode(sample_rate=8000),
    "resample": resample(16000),
    "rechunk": rechunk(duration_ms=30),
    "encode": encode(sample_rate=24000, to="pcm"),
    "mulaw_encode": mulaw_encode(),
    "mulaw_decode": mulaw_decode(),
    "pace": pace(clock=lambda: FAKE_TIME[0], sleep=fake_sleep),
    "handler": handler(lambda audio: audio),
}


@pytest.mark.parametrize("name", list(PASS_THROUGH))
async def test_operators_pass_through_items_they_do_not_handle(name: str, hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:6]
    markers = [Marker("a"), SpeechStarted(media_time_s=0.04), Marker("b"), Log(data="x", media_time_s=0.1)]
    items = [frames[0], frames[1], markers[0], markers[1], frames[2], frames[3], markers[2], frames[4], frames[5], markers[3]]
    out = await collect(source(items) | PASS_THROUGH[name])
    assert [o for o in out if o in markers] == markers  # unchanged and in order
    # Nothing that came in after a marker comes out before it.
    before_b = out[: out.index(markers[2])]
    media_before_b = [o for o in before_b if not isinstance(o, (Marker, SpeechStarted, Log))]
    assert len(media_before_b) <= 4 * (2 if name == "rechunk" else 3)


# -- decode -----------------------------------------------------------------------------------------
async def test_decode_pcm_and_mulaw_bytes_with_running_pts(hello: AudioChunk) -> None:
    frames = audio_frames(hello)
    out = await collect(source([f.to_pcm() for f in frames]) | decode(sample_rate=8000))
    assert np.array_equal(joined(out), hello.samples)
    assert [c.pts for c in out] == [f.pts for f in frames]
    ulaw = await collect(source([f.to_mulaw() for f in frames]) | decode(bytes_format="mulaw", sample_rate=8000))
    assert [c.pts for c in ulaw] == [f.pts for f in frames]
    assert np.array_equal(joined(ulaw), AudioChunk.from_mulaw(hello.to_mulaw()).samples)
    stereo = await collect(source([AudioChunk(np.repeat(f.samples, 2, 0), 8000).to_pcm() for f in frames[:3]]) | decode(sample_rate=8000, channels=2))
    assert [c.channels for c in stereo] == [2, 2, 2]


async def test_decode_bytes_without_a_rate_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="sample_rate="):
        await collect(source([b"\x00\x00"]) | decode())


async def test_decode_rebases_av_and_tuple_pts_to_samples_received(hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:4]
    sent = []
    for index, frame in enumerate(frames):
        packet = frame.to_av()
        packet.pts = 123456 + index * 9999  # the sender's clock: ignored
        sent.append(packet)
    sent.append((8000, np.array(frames[0].samples[0])))
    out = await collect(source(sent) | decode())
    assert [c.pts for c in out] == [0, 160, 320, 480, 640]
    assert np.array_equal(joined(out[:4]), joined(frames))


async def test_decode_video_frames() -> None:
    picture = np.zeros((16, 32, 3), np.uint8)
    picture[:, :, 2] = 255  # red, in bgr order
    frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
    frame.pts = 3000
    bgr, rgb = await collect(source([frame]) | decode()), await collect(source([frame]) | decode(video_format="rgb24"))
    assert isinstance(bgr[0], VideoFrame) and bgr[0].pts == 3000
    assert bgr[0].image[0, 0].tolist() == [0, 0, 255] and rgb[0].image[0, 0].tolist() == [255, 0, 0]


# -- resample ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 24000, 44100, 48000])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
async def test_resampling_frame_by_frame_equals_resampling_the_whole_recording(thanks: AudioChunk, rate: int, dtype: str) -> None:
    speech = thanks.to_dtype(dtype)
    streamed = await collect(source(audio_frames(speech)) | resample(rate))
    whole = Resampler(rate)
    at_once = AudioChunk.concat(whole.push(speech) + whole.flush())
    streamed_audio = AudioChunk.concat(streamed)
    assert streamed_audio.n_samples == at_once.n_samples == round(speech.n_samples * rate / 8000)
    assert streamed_audio.samples.dtype == np.dtype(dtype)
    assert np.array_equal(streamed_audio.samples, at_once.samples)  # bit-exact: the filter state carries over
    assert_contiguous(streamed)


@pytest.mark.parametrize(("src", "dst"), [(48000, 16000), (16000, 48000), (8000, 16000), (44100, 16000)])
async def test_a_sine_resampled_in_20_ms_frames_has_no_discontinuities(src: int, dst: int) -> None:
    tone = AudioChunk(sine(1000, src, 1.0).astype(np.float32)[None, :], src)
    out = AudioChunk.concat(await collect(source(audio_frames(tone)) | resample(dst))).samples[0].astype(np.float64)
    assert out.size == dst
    ideal = sine(1000, dst, 1.0)
    edge = dst // 100  # the filter's start-up and end
    assert np.abs(out - ideal)[edge:-edge].max() < 1e-4
    # A click at a frame edge would show as a spike in the second difference.
    bound = 0.5 * (2 * np.sin(np.pi * 1000 / dst)) ** 2
    assert np.abs(np.diff(out, 2))[edge:-edge].max() < bound * 1.01


async def test_resample_converts_layout_and_passes_matching_chunks_unchanged(hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:5]
    same = await collect(source(frames) | resample(8000))
    assert all(a is b for a, b in zip(same, frames))
    stereo = [f.to_layout("stereo") for f in frames]
    mono = await collect(source(stereo) | resample(layout="mono"))
    assert np.array_equal(joined(mono), joined(frames))
    both = await collect(source(stereo) | resample(16000, layout="mono"))
    assert {c.channels for c in both} == {1} and sum(c.n_samples for c in both) == 5 * 320


async def test_resample_follows_timeline_jumps_and_resets_on_interrupt(hello: AudioChunk) -> None:
    first = hello.slice(0, 1600)
    later = hello.slice(1600, 3200).with_pts(8000)  # a reply placed 1 s in
    out = await collect(source([first, Interrupt(media_time_s=0.2), later]) | resample(16000))
    chunks = [c for c in out if isinstance(c, AudioChunk)]
    index = next(i for i, item in enumerate(out) if isinstance(item, Interrupt))
    assert chunks[0].pts == 0
    after = [c for c in out[index:] if isinstance(c, AudioChunk)]
    assert after[0].pts == 16000 and sum(c.n_samples for c in after) == 3200
    assert_contiguous(after)


async def test_resampler_rejects_more_than_two_channels() -> None:
    with pytest.raises(MediaError, match="mono and stereo audio, not 3 channels"):
        Resampler(16000).push(AudioChunk(np.zeros((3, 160), np.int16), 8000))


# -- rechunk --------------------------------------------------------------------------------------------
async def test_rechunk_cuts_a_recording_in_odd_pieces_into_exact_frames(thanks: AudioChunk) -> None:
    rng = np.random.default_rng(7)
    cuts = np.cumsum(rng.integers(1, 700, size=400))
    cuts = cuts[cuts < thanks.n_samples]
    pieces = [thanks.slice(a, b) for a, b in zip([0, *cuts], [*cuts, thanks.n_samples])]
    out = await collect(source(pieces) | rechunk(duration_ms=20))
    assert [c.n_samples for c in out[:-1]] == [160] * (len(out) - 1)
    assert out[-1].n_samples == thanks.n_samples % 160 or out[-1].n_samples == 160
    assert np.array_equal(joined(out), thanks.samples)
    assert out[0].pts == 0
    assert_contiguous(out)


async def test_rechunk_pads_the_final_frame_when_asked(hello: AudioChunk) -> None:
    out = await collect(source([hello]) | rechunk(duration_ms=30, pad_final=True))
    assert {c.n_samples for c in out} == {240}
    tail = out[-1].samples[0]
    real = hello.n_samples % 240
    assert np.array_equal(tail[:real], hello.samples[0, -real:]) and not tail[real:].any()


async def test_rechunk_drops_the_partial_frame_on_interrupt(hello: AudioChunk) -> None:
    items = [hello.slice(0, 100), hello.slice(100, 250), Interrupt(media_time_s=0.03), hello.slice(800, 960)]
    out = await collect(source(items) | rechunk(duration_ms=20))
    assert [(type(o).__name__, getattr(o, "pts", None), getattr(o, "n_samples", None)) for o in out] == [
        ("AudioChunk", 0, 160),
        ("Interrupt", None, None),
        ("AudioChunk", 800, 160),
    ]


async def test_rechunk_flushes_at_a_rate_change_and_a_timeline_jump(hello: AudioChunk) -> None:
    chunker = Rechunker(20)
    assert chunker.push(hello.slice(0, 100)) == []
    flushed = chunker.push(AudioChunk(np.zeros((1, 320), np.int16), 16000))
    assert [(c.sample_rate, c.n_samples) for c in flushed] == [(8000, 100), (16000, 320)]
    assert chunker.push(AudioChunk(np.zeros((1, 100), np.int16), 16000, pts=320)) == []
    jumped = chunker.push(AudioChunk(np.zeros((1, 320), np.int16), 16000, pts=5000))
    assert [(c.pts, c.n_samples) for c in jumped] == [(320, 100), (5000, 320)]
    with pytest.raises(ConfigurationError, match="positive"):
        Rechunker(0)


# -- encode ------------------------------------------------------------------------------------------------
async def test_encode_targets(hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:10]
    chunks = await collect(source(frames) | encode(sample_rate=16000, frame_ms=20))
    assert {c.n_samples for c in chunks} == {320} and sum(c.n_samples for c in chunks) == 3200
    pcm = await collect(source(frames) | encode(to="pcm"))
    assert b"".join(pcm) == AudioChunk.concat(frames).to_pcm()
    ulaw = await collect(source(frames) | encode(to="mulaw", frame_ms=40))
    assert [len(b) for b in ulaw] == [320] * 5 and b"".join(ulaw) == AudioChunk.concat(frames).to_mulaw()
    tuples = await collect(source(frames) | encode(to="tuple", dtype=np.float32))
    assert all(rate == 8000 and array.dtype == np.float32 and array.shape == (1, 160) for rate, array in tuples)
    frames_av = await collect(source(frames) | encode(sample_rate=48000, layout="stereo", to="av"))
    assert all(isinstance(f, av.AudioFrame) and f.samples == 960 and f.layout.name == "stereo" for f in frames_av)
    assert [f.pts for f in frames_av] == [960 * i for i in range(10)]
    whole = await collect(source(frames) | encode(frame_ms=None))
    assert [c.n_samples for c in whole] == [160] * 10
    with pytest.raises(ConfigurationError, match="to= must be"):
        await collect(source(frames) | encode(to="ogg"))


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_encode_drops_buffered_audio_on_interrupt(hello: AudioChunk, rate: int) -> None:
    # One and a half frames of a reply, then the user interrupts; the next reply starts at 0.1 s.
    items = [hello.slice(0, 80), hello.slice(80, 160), hello.slice(160, 240), Interrupt(media_time_s=0.03), hello.slice(800, 960)]
    out = await collect(source(items) | encode(sample_rate=rate, frame_ms=20))
    per_frame = rate // 50
    summary = [(type(o).__name__, getattr(o, "pts", None), getattr(o, "n_samples", None)) for o in out]
    assert summary == [
        ("AudioChunk", 0, per_frame),
        ("Interrupt", None, None),
        ("AudioChunk", 5 * per_frame, per_frame),  # the half frame before the Interrupt never plays
    ]


# -- µ-law -----------------------------------------------------------------------------------------------------
def test_g711_matches_audioop_for_every_int16_value() -> None:
    from flowrtc.g711 import mulaw_to_pcm16, pcm16_to_mulaw

    values = np.arange(-32768, 32768, dtype=np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = np.frombuffer(audioop.lin2ulaw(values.tobytes(), 2), np.uint8)
        codes = np.arange(256, dtype=np.uint8)
        expected_pcm = np.frombuffer(audioop.ulaw2lin(codes.tobytes(), 2), np.int16)
    encoded = pcm16_to_mulaw(values)
    assert encoded.dtype == np.uint8 and np.array_equal(encoded, expected)
    assert np.array_equal(mulaw_to_pcm16(codes), expected_pcm)
    with pytest.raises(TypeError, match="int16"):
        pcm16_to_mulaw(values.astype(np.int32))
    with pytest.raises(TypeError, match="uint8"):
        mulaw_to_pcm16(codes.astype(np.int16))


async def test_mulaw_operators_on_a_recording_match_audioop(thanks: AudioChunk) -> None:
    frames = audio_frames(thanks)
    encoded = await collect(source(frames) | mulaw_encode())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = audioop.lin2ulaw(thanks.to_pcm(), 2)
        expected_pcm = audioop.ulaw2lin(expected, 2)
    assert all(isinstance(b, bytes) and len(b) == 160 for b in encoded[:-1])
    assert b"".join(encoded) == expected
    decoded = await collect(source(encoded) | mulaw_decode(sample_rate=8000))
    assert [c.pts for c in decoded] == [f.pts for f in frames]
    assert AudioChunk.concat(decoded).to_pcm() == expected_pcm


async def test_mulaw_encode_wants_mono(hello: AudioChunk) -> None:
    float_frames = [f.to_float32() for f in audio_frames(hello)[:3]]
    assert b"".join(await collect(source(float_frames) | mulaw_encode())) == hello.slice(0, 480).to_mulaw()
    with pytest.raises(MediaError, match="µ-law is mono; got 2 channels"):
        await collect(source([hello.to_layout("stereo")]) | mulaw_encode())


# -- pace ----------------------------------------------------------------------------------------------------------
class FakeClock:
    """Injected time: ``sleep`` jumps the clock instead of waiting."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def timed(flow: Any, clock: FakeClock) -> list[tuple[float, Any]]:
    return [(round(clock.now - 100.0, 9), item) async for item in flow]


async def test_pace_releases_audio_in_real_time_without_sleeping(hello: AudioChunk) -> None:
    clock = FakeClock()
    frames = audio_frames(hello)[:6]
    started = anyio.current_time()
    released = await timed(source(frames[:3] + [Log(data="x")] + frames[3:]) | pace(clock=clock, sleep=clock.sleep), clock)
    assert anyio.current_time() - started < 0.5  # nothing really slept
    assert [t for t, _ in released] == pytest.approx([0.0, 0.02, 0.04, 0.04, 0.06, 0.08, 0.10])
    assert isinstance(released[3][1], Log)  # events pass at once


async def test_pace_lead_lag_and_interrupt(hello: AudioChunk) -> None:
    clock = FakeClock()
    frames = audio_frames(hello)[:4]
    lead = await timed(source(frames) | pace(lead_s=0.04, clock=clock, sleep=clock.sleep), clock)
    assert [t for t, _ in lead] == pytest.approx([0.0, 0.0, 0.0, 0.02])

    async def stalls() -> AsyncIterator[Any]:
        yield frames[0]
        yield frames[1]
        clock.now += 1.0  # the source was idle for a second
        yield frames[2]
        yield frames[3]
        yield Interrupt(media_time_s=0.5)
        yield frames[0]

    clock = FakeClock()
    paced = await timed(stalls() | pace(max_lag_s=0.2, clock=clock, sleep=clock.sleep), clock)
    # After the stall the clock re-anchors (no burst to catch up). After the Interrupt the
    # next reply plays at once instead of waiting behind the audio that was dropped.
    assert [t for t, _ in paced] == pytest.approx([0.0, 0.02, 1.02, 1.04, 1.04, 1.04])


async def test_pace_video_by_pts_distance() -> None:
    clock = FakeClock()
    picture = np.zeros((4, 4, 3), np.uint8)
    frames = [VideoFrame(picture, pts=pts) for pts in (0, 3000, 6000, 15000)]  # 90 kHz clock
    paced = await timed(source(frames) | pace(clock=clock, sleep=clock.sleep), clock)
    assert [t for t, _ in paced] == pytest.approx([0.0, 1 / 30, 2 / 30, 5 / 30])


# -- handler ------------------------------------------------------------------------------------------------------------
def _plain(audio: tuple[int, np.ndarray]) -> Any:
    THREADS.append(threading.current_thread())
    return audio


async def _coroutine(audio: tuple[int, np.ndarray]) -> Any:
    THREADS.append(threading.current_thread())
    return audio


def _generator(audio: tuple[int, np.ndarray]) -> Any:
    THREADS.append(threading.current_thread())
    yield audio
    THREADS.append(threading.current_thread())
    yield AdditionalOutputs("done")


async def _async_generator(audio: tuple[int, np.ndarray]) -> Any:
    THREADS.append(threading.current_thread())
    yield audio
    yield AdditionalOutputs("done")


THREADS: list[threading.Thread] = []


@pytest.mark.parametrize(
    ("fn", "on_loop", "outputs_per_item"),
    [(_plain, False, 1), (_coroutine, True, 1), (_generator, False, 2), (_async_generator, True, 2)],
    ids=["plain", "async", "generator", "async-generator"],
)
async def test_handler_runs_every_kind_of_function_and_sync_code_off_the_loop(
    hello: AudioChunk, fn: Any, on_loop: bool, outputs_per_item: int
) -> None:
    THREADS.clear()
    loop_thread = threading.current_thread()
    frames = audio_frames(hello)[:3]
    out = await collect(source(frames) | handler(fn))
    assert len(out) == 3 * outputs_per_item
    audio = [o for o in out if isinstance(o, AudioChunk)]
    assert [c.pts for c in audio] == [0, 160, 320]  # placed at the input's media time
    assert np.array_equal(joined(audio), joined(frames))
    assert THREADS and all((t is loop_thread) == on_loop for t in THREADS)


async def test_handler_receives_fastrtc_shapes_and_normalises_what_it_returns(hello: AudioChunk) -> None:
    seen: list[Any] = []

    def reply(audio: tuple[int, np.ndarray], suffix: str) -> Any:
        seen.append(audio)
        rate, array = audio
        return (rate, array[0][::-1].astype(np.float64) / 32768), AdditionalOutputs(suffix)

    frames = audio_frames(hello)[:2]
    out = await collect(source(frames) | handler(reply, args=("x",)))
    rate, array = seen[0]
    assert rate == 8000 and array.shape == (1, 160) and array.dtype == np.int16
    assert [type(o).__name__ for o in out] == ["AudioChunk", "AdditionalOutputs"] * 2
    assert out[0].samples.dtype == np.float32 and out[2].pts == 160
    assert np.array_equal(out[0].to_int16().samples[0], frames[0].samples[0][::-1])
    assert out[1] == AdditionalOutputs("x")


async def test_handler_args_callable_is_read_at_each_call(hello: AudioChunk) -> None:
    current = ["first"]
    out = []

    async def tag(audio: Any, name: str) -> Any:
        return AdditionalOutputs(name)

    async def frames_then_change() -> AsyncIterator[Any]:
        for frame in audio_frames(hello)[:2]:
            yield frame
            current[0] = "second"

    out = await collect(frames_then_change() | handler(tag, args=lambda: current))
    assert [o.args for o in out] == [("first",), ("second",)]


async def test_handler_on_filters_item_types(hello: AudioChunk) -> None:
    utterance = Utterance(audio=hello, start_s=0.19, end_s=1.4, media_time_s=2.0)

    def reply(audio: tuple[int, np.ndarray]) -> Any:
        rate, array = audio
        assert array.shape == (1, hello.n_samples)
        return rate, array[:, :800]

    frame = audio_frames(hello)[0]
    out = await collect(source([frame, utterance]) | handler(reply, on=Utterance))
    assert out[0] is frame  # audio frames pass through untouched
    assert isinstance(out[1], AudioChunk) and out[1].pts == 16000 and out[1].n_samples == 800  # placed at 2.0 s


async def test_handler_video_and_close_stream() -> None:
    picture = np.full((8, 8, 3), 10, np.uint8)
    frame = VideoFrame(picture, pts=3000)

    def brighten(image: np.ndarray) -> Any:
        assert image.flags.writeable  # users get their own copy to scribble on
        image += 5
        return image

    out = await collect(source([frame]) | handler(brighten))
    assert isinstance(out[0], VideoFrame) and out[0].pts == 3000 and int(out[0].image[0, 0, 0]) == 15
    assert int(frame.image[0, 0, 0]) == 10
    bye = await collect(source([frame]) | handler(lambda image: CloseStream("bye")))
    assert bye == [CloseStream("bye")]
    none = await collect(source([frame]) | handler(lambda image: None))
    assert none == []


async def test_handler_closes_a_sync_generator_in_its_thread_when_stopped_early(hello: AudioChunk) -> None:
    finished: list[threading.Thread] = []

    def endless(audio: Any) -> Any:
        try:
            while True:
                yield audio
        finally:
            finished.append(threading.current_thread())

    out = await collect(source(audio_frames(hello)[:1]) | handler(endless) | pipe.take(3))
    assert len(out) == 3
    assert len(finished) == 1 and finished[0] is not threading.current_thread()


async def test_handler_limiter_bounds_worker_threads(hello: AudioChunk) -> None:
    limiter = anyio.CapacityLimiter(1)
    out = await collect(source(audio_frames(hello)[:3]) | handler(lambda audio: audio, limiter=limiter))
    assert len(out) == 3 and limiter.borrowed_tokens == 0


def test_normalize_output_rejects_what_is_not_media() -> None:
    with pytest.raises(MediaError, match=r"array of shape \(160,\)"):
        normalize_output(np.zeros(160, np.int16))
    with pytest.raises(MediaError, match="produced str"):
        normalize_output("hello")
    assert normalize_output(None) == []
    assert to_user_input(Log(data="x")) == Log(data="x")


async def test_handler_errors_propagate(hello: AudioChunk) -> None:
    def boom(audio: Any) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await collect(source(audio_frames(hello)[:1]) | handler(boom))


def test_aiostream_is_the_algebra_we_interoperate_with() -> None:
    assert aiostream.__version__.split(".")[0] == "0"


def test_handler_steps_an_iterator_a_plain_function_returns(hello: AudioChunk) -> None:
    # FastRTC called next() on whatever a handler returned; iter(...)/map(...) results are iterators, not generators.
    from flowrtc.graph import Graph
    from flowrtc.testing import run

    frames = hello.slice(0, 480)
    graph = Graph(audio=handler(lambda audio: iter([audio, audio])))
    recording = run(graph, audio=frames)
    assert sum(chunk.n_samples for chunk in recording.audio_chunks) == 2 * frames.n_samples


async def test_decode_catches_up_by_joining_audio_already_queued() -> None:
    """``catch_up_ms``: contiguous chunks waiting in the channel come out as one; nothing waits for more."""
    from flowrtc.channel import Channel

    frames = list(audio_frames(AudioChunk((np.arange(8000) % 3000).astype(np.int16)[None, :], 8000)))  # 50 x 20 ms
    channel = Channel(100)
    for frame in frames[:10]:
        channel.put_nowait(frame)
    channel.put_nowait(Marker("m"))
    channel.put_nowait(frames[10])
    channel.put_nowait(frames[12])  # a gap: not joined to the one before
    channel.close_send()
    out = await collect(decode(catch_up_ms=100)(channel))
    sizes = [item.n_samples if isinstance(item, AudioChunk) else "marker" for item in out]
    assert sizes == [800, 800, "marker", 160, 160]  # 100 ms at most; the marker and the gap end a join
    chunks = [item for item in out if isinstance(item, AudioChunk)]
    assert [c.pts for c in chunks] == [0, 800, 1600, 1920]
    np.testing.assert_array_equal(joined(chunks[:3]), joined(frames[:11]))
    # Off by default, and a plain iterator (nothing to look ahead in) passes frames as they are.
    channel = Channel(100)
    for frame in frames[:10]:
        channel.put_nowait(frame)
    channel.close_send()
    assert [c.n_samples for c in await collect(decode()(channel))] == [160] * 10
    assert [c.n_samples for c in await collect(decode(catch_up_ms=100)(source(frames[:10])))] == [160] * 10


async def test_encode_catches_up_on_queued_reply_audio_and_converts_it_the_same() -> None:
    """``encode(catch_up_ms=)``: audio queued in a channel is joined before conversion; the output does not change."""
    from flowrtc.channel import Channel

    reply = AudioChunk((np.sin(np.arange(24000) / 7) * 9000).astype(np.int16)[None, :], 24000)  # 1 s at 24 kHz
    frames = list(audio_frames(reply))  # 50 x 20 ms, as a graph's encode emits them

    def queued() -> Channel:
        channel = Channel(100)
        for frame in frames[:30]:
            channel.put_nowait(frame)
        channel.put_nowait(Interrupt(media_time_s=0.6))
        for frame in frames[35:]:  # after the cut: a gap, then contiguous again
            channel.put_nowait(frame)
        channel.close_send()
        return channel

    plain = await collect(encode(frame_ms=None, catch_up_ms=200)(queued()))
    assert [item.n_samples if isinstance(item, AudioChunk) else "interrupt" for item in plain] == [4800, 4800, 4800, "interrupt", 4800, 2400]
    caught_up = await collect(encode(sample_rate=8000, frame_ms=20, catch_up_ms=200)(queued()))
    frame_by_frame = await collect(encode(sample_rate=8000, frame_ms=20)(queued()))
    assert [type(item) for item in caught_up] == [type(item) for item in frame_by_frame]
    assert [(c.pts, c.n_samples) for c in caught_up if isinstance(c, AudioChunk)] == [
        (c.pts, c.n_samples) for c in frame_by_frame if isinstance(c, AudioChunk)
    ]
    np.testing.assert_allclose(
        joined([c for c in caught_up if isinstance(c, AudioChunk)]).astype(float),
        joined([c for c in frame_by_frame if isinstance(c, AudioChunk)]).astype(float),
        atol=2,
    )
    # Off by default, and never for a plain iterator.
    assert len(await collect(encode(frame_ms=None)(queued()))) == 46
    assert len(await collect(encode(frame_ms=None, catch_up_ms=200)(source(frames)))) == 50
