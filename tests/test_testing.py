"""flowrtc.testing: recorded media in and out through PyAV, the run() harness and the pytest fixtures."""

from __future__ import annotations

import time
import wave
from fractions import Fraction
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import anyio
import av
import numpy as np
import pytest

from flowrtc import testing
from flowrtc.errors import MediaError
from flowrtc.events import AdditionalOutputs, ClientMessage, Error, Interrupt, Log
from flowrtc.graph import Graph
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators import decode, encode, handler, identity, operator, resample, scoped
from flowrtc.session import get_current_session
from flowrtc.testing import Recording, audio_frames, load_audio, load_video, run, save_audio

# Samples per channel of one codec frame at the rate the file is decoded at.
CODEC_FRAME = {"wav": 1, "flac": 1, "ogg": 960, "opus": 960, "webm": 960, "mp3": 1152}
LOSSLESS = ("wav", "flac")


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


# -- load_audio / save_audio ---------------------------------------------------------------------------
def test_load_audio_reads_the_wav_exactly(media_dir: Path) -> None:
    path = media_dir / "asterisk_demo-thanks_8k.wav"
    with wave.open(str(path)) as wav:
        expected = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    audio = load_audio(path)
    assert (audio.sample_rate, audio.channels, audio.pts, audio.samples.dtype) == (8000, 1, 0, np.int16)
    assert np.array_equal(audio.samples[0], expected)


def test_load_audio_converts_rate_and_layout(media_dir: Path, thanks: AudioChunk) -> None:
    audio = load_audio(media_dir / "asterisk_demo-thanks_8k.wav", sample_rate=16000, layout="stereo")
    assert (audio.sample_rate, audio.channels, audio.n_samples) == (16000, 2, thanks.n_samples * 2)
    assert np.array_equal(audio.samples[0], audio.samples[1])
    back = load_audio(media_dir / "asterisk_demo-thanks_8k.wav", sample_rate=16000)
    assert correlation(back.samples[0, ::2], thanks.samples[0]) > 0.99


def test_load_audio_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no audio file at"):
        load_audio(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(MediaError, match="PyAV cannot read"):
        load_audio(junk)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "opus", "mp3", "webm"])
def test_save_and_load_round_trip(tmp_path: Path, thanks: AudioChunk, ext: str) -> None:
    path = save_audio(tmp_path / f"thanks.{ext}", thanks)
    assert path.stat().st_size > 1000
    decoded = load_audio(path)
    # Opus always decodes at 48 kHz; compare durations in seconds.
    frame_s = CODEC_FRAME[ext] / decoded.sample_rate
    assert abs(decoded.duration_s - thanks.duration_s) <= frame_s
    at_8k = load_audio(path, sample_rate=8000)
    n = min(at_8k.n_samples, thanks.n_samples)
    if ext in LOSSLESS:
        assert decoded.sample_rate == 8000 and np.array_equal(decoded.samples, thanks.samples)
    else:
        assert correlation(at_8k.samples[0, :n], thanks.samples[0, :n]) > 0.9


def test_save_stereo_flac_is_sample_exact(tmp_path: Path, thanks: AudioChunk) -> None:
    stereo = AudioChunk(np.stack([thanks.samples[0], thanks.samples[0, ::-1]]), 8000)
    pieces = audio_frames(stereo)  # an iterable of chunks is joined
    back = load_audio(save_audio(tmp_path / "stereo.flac", pieces))
    assert back.channels == 2 and np.array_equal(back.samples, stereo.samples)


def test_save_float_audio_as_wav(tmp_path: Path, hello: AudioChunk) -> None:
    back = load_audio(save_audio(tmp_path / "float.wav", hello.to_float32()))
    assert np.array_equal(back.samples, hello.samples)


def test_save_audio_errors(tmp_path: Path, hello: AudioChunk, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MediaError, match="cannot tell a codec from '.xyz'"):
        save_audio(tmp_path / "a.xyz", hello)
    with pytest.raises(MediaError, match="nothing to save"):
        save_audio(tmp_path / "a.wav", [])
    # A PyAV build without the encoder: a clear error, and no half-written file.
    monkeypatch.setitem(testing._CODECS, ".mp3", "no_such_mp3_encoder")
    with pytest.raises(MediaError, match="has no 'no_such_mp3_encoder' encoder, so it cannot write .mp3 files"):
        save_audio(tmp_path / "a.mp3", hello)
    assert not (tmp_path / "a.mp3").exists()


def test_audio_frames_cut_like_a_transport(hello: AudioChunk) -> None:
    frames = audio_frames(hello, frame_ms=20)
    assert len(frames) == -(-hello.n_samples // 160)
    assert [f.pts for f in frames[:3]] == [0, 160, 320] and frames[-1].n_samples == hello.n_samples % 160
    assert np.array_equal(AudioChunk.concat(frames).samples, hello.samples)


def write_video(path: Path, count: int = 5) -> list[np.ndarray]:
    """A lossless (FFV1) 30 fps clip whose frames differ, and the images written."""
    images = []
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=30)
        stream.width, stream.height, stream.pix_fmt = 32, 16, "bgr0"
        for index in range(count):
            image = np.zeros((16, 32, 3), np.uint8)
            image[:, :, 0], image[:, :, 2] = index * 40, 255 - index
            images.append(image)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = index, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return images


def test_load_video_reads_every_frame(tmp_path: Path) -> None:
    images = write_video(tmp_path / "card.mkv")
    frames = load_video(tmp_path / "card.mkv")
    assert [np.array_equal(f.image, image) for f, image in zip(frames, images)] == [True] * 5
    assert [f.media_time_s for f in frames] == pytest.approx([0, 1 / 30, 2 / 30, 3 / 30, 4 / 30], abs=1e-3)


# -- run() and Recording ---------------------------------------------------------------------------
def echo(audio: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
    return audio


def test_run_plays_a_recording_through_a_graph_faster_than_real_time(media_dir: Path) -> None:
    path = media_dir / "asterisk_basic-pbx-ivr-main_8k.wav"
    graph = Graph(audio=decode() | resample(16000) | handler(echo) | encode(sample_rate=48000))
    started = time.perf_counter()
    recording = run(graph, audio=path)
    elapsed = time.perf_counter() - started
    source = load_audio(path)
    assert recording.input_duration_s == pytest.approx(25.391625)
    assert elapsed < recording.input_duration_s / 5
    assert recording.audio is not None and recording.audio.sample_rate == 48000
    assert abs(recording.audio.n_samples - source.n_samples * 6) < 960
    assert {c.n_samples for c in recording.audio_chunks[:-1]} == {960}
    back = load_audio(path, sample_rate=48000)
    n = min(back.n_samples, recording.audio.n_samples)
    assert correlation(back.samples[0, :n], recording.audio.samples[0, :n]) > 0.99
    assert recording.events == [] and recording.video == []


def test_run_accepts_chunks_tuples_and_objects_with_a_graph_method(hello: AudioChunk) -> None:
    class App:
        def graph(self) -> Graph:
            return Graph(audio=identity())

    by_chunk = run(App(), audio=hello)
    by_tuple = run(Graph(audio=identity()), audio=(8000, np.array(hello.samples[0])), frame_ms=40)
    assert np.array_equal(by_chunk.audio.samples, hello.samples)
    assert np.array_equal(by_tuple.audio.samples, hello.samples)
    assert {c.n_samples for c in by_tuple.audio_chunks[:-1]} == {320}


@operator
async def tag_times(source: Any) -> AsyncIterator[Any]:
    """For each input frame: a Log with its media time, plus a note when args or messages arrive."""
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                args = get_current_session().latest_args
                yield Log(data=f"{item.media_time_s:.2f} {args}", media_time_s=item.media_time_s)
            else:
                yield item


def test_run_delivers_messages_and_inputs_at_their_media_time(hello: AudioChunk) -> None:
    recording = run(
        Graph(audio=tag_times()),
        audio=hello.slice(0, 800),  # five 20 ms frames
        messages=[(0.04, {"type": "hi"})],
        inputs=[(0.06, ["blue"])],
        trailing_silence_s=0.04,
    )
    assert recording.input_duration_s == pytest.approx(0.14)
    assert recording.log() == [
        "0.00 []",
        "0.02 []",
        "0.04 []",
        "0.06 ['blue']",
        "0.08 ['blue']",
        "0.10 ['blue']",
        "0.12 ['blue']",
    ]
    messages = recording.of_type(ClientMessage)
    assert messages == [ClientMessage(data={"type": "hi"})]
    assert recording.items.index(messages[0]) == 2  # in band, before the frame at 0.04 s
    assert recording.times(Log)[:3] == pytest.approx([0.0, 0.02, 0.04])
    assert recording.timeline[0] == (0.0, recording.items[0])


@operator
async def reply_then_interrupt(source: Any) -> AsyncIterator[Any]:
    """A 1 s reply at 16 kHz starting at 0 s, cut by an Interrupt at 0.3 s; a second reply at 0.5 s."""
    tone = (np.sin(np.arange(16000) / 5) * 10000).astype(np.int16)[None, :]
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, AudioChunk):
                continue
            if item.pts == 0:
                yield AudioChunk(tone, 16000, 0)
            elif item.media_time_s == pytest.approx(0.3):
                yield Interrupt(media_time_s=0.3)
            elif item.media_time_s == pytest.approx(0.5):
                yield AudioChunk(tone[:, :3200], 16000, 8000)
                yield AdditionalOutputs("second reply")


def test_recording_audio_is_what_a_listener_heard(hello: AudioChunk) -> None:
    recording = run(Graph(audio=reply_then_interrupt()), audio=hello.slice(0, 6400))
    heard = recording.audio
    assert heard is not None and heard.sample_rate == 16000
    assert heard.n_samples == 8000 + 3200  # the second reply ends at 0.7 s
    assert heard.samples[0, :4800].any() and not heard.samples[0, 4800:8000].any()  # cut at 0.3 s
    assert heard.samples[0, 8000:].any()
    assert recording.of_type(AdditionalOutputs) == [AdditionalOutputs("second reply")]
    assert recording.times(Interrupt) == [0.3]


def test_run_records_the_error_of_a_failing_graph(hello: AudioChunk) -> None:
    def broken(audio: Any) -> Any:
        raise ValueError("bad input")

    recording = run(Graph(audio=handler(broken)), audio=hello)
    assert recording.items == [Error(message="bad input", kind="ValueError")]
    assert recording.audio is None


def test_run_with_video(tmp_path: Path) -> None:
    images = write_video(tmp_path / "card.mkv", count=3)

    def invert(image: np.ndarray) -> np.ndarray:
        return 255 - image

    recording = run(Graph(video=handler(invert)), video=tmp_path / "card.mkv", video_buffer=8)
    assert [np.array_equal(f.image, 255 - image) for f, image in zip(recording.video, images)] == [True] * 3
    frames = [VideoFrame(image, pts=3000 * i) for i, image in enumerate(images)]
    again = run(Graph(video=identity()), video=frames, video_buffer=8)
    assert again.video == frames


def test_run_realtime_paces_the_input(hello: AudioChunk) -> None:
    started = time.perf_counter()
    recording = run(Graph(audio=identity()), audio=hello.slice(0, 800), realtime=True)  # 0.1 s
    assert time.perf_counter() - started >= 0.08
    assert recording.audio.n_samples == 800


# -- the pytest plugin ----------------------------------------------------------------------------
def test_record_sync_fixture(record_sync: Callable[..., Recording], media_dir: Path) -> None:
    assert record_sync is testing.run
    recording = record_sync(Graph(audio=resample(16000)), audio=media_dir / "asterisk_hello-world_8k.wav")
    assert recording.audio.n_samples == 11234 * 2


@pytest.mark.anyio
async def test_record_fixture(record: Callable[..., Any], hello: AudioChunk) -> None:
    assert record is testing.arun
    recording = await record(Graph(audio=handler(echo)), audio=hello)
    assert np.array_equal(recording.audio.samples, hello.samples)


def test_run_raises_a_plain_timeout_error_when_the_graph_never_finishes(hello: AudioChunk) -> None:
    async def stuck(source: Any) -> Any:
        async for item in source:
            yield item
        await anyio.sleep_forever()

    with pytest.raises(TimeoutError, match="had not finished"):
        testing.run(Graph(audio=stuck), audio=hello, timeout_s=0.5)


def test_run_judges_a_slow_reply_in_media_time_whatever_the_machine_speed(hello: AudioChunk) -> None:
    from flowrtc import ReplyOnPause

    def slow_answer(audio: tuple[int, np.ndarray]) -> Any:
        time.sleep(1.0)  # a slow model: the input, fed faster than real time, runs far ahead
        yield audio[0], np.full((1, audio[0]), 1000, np.int16)  # 1 s of reply

    # the reply to the first "hello" plays ~1.9-2.9 s; the second "hello" starts at ~4.9 s
    audio = AudioChunk.concat([hello, AudioChunk.silence(3.3, hello.sample_rate), hello, AudioChunk.silence(1.0, hello.sample_rate)])
    recording = run(ReplyOnPause(slow_answer), audio=audio)
    assert not recording.of_type(Interrupt)  # live, with real-time input, it would have finished long before
    assert len(recording.of_type(Log)) == 6 and recording.audio is not None
    assert recording.audio.duration_s > audio.duration_s - 1.0  # both replies played whole
