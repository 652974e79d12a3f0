"""Media items and events: immutability, validation, and lossless conversions on real speech."""

from __future__ import annotations

import dataclasses
import wave
from fractions import Fraction

import av
import msgspec
import numpy as np
import pytest

from flowrtc import events
from flowrtc.errors import FlowRTCError, MediaError
from flowrtc.events import AdditionalOutputs, CloseStream, Event, Utterance
from flowrtc.g711 import mulaw_to_pcm16, pcm16_to_mulaw
from flowrtc.media import AudioChunk, VideoFrame, as_audio_chunk


@pytest.fixture(scope="module")
def speech(hello: AudioChunk) -> np.ndarray:
    """The first 0.5 s of "Hello world." as a 1-D int16 array (4000 samples)."""
    return np.array(hello.samples[0, :4000])


@pytest.fixture(scope="module")
def stereo(speech: np.ndarray) -> np.ndarray:
    """Planar (2, n): the speech on the left, the same speech reversed and halved on the right."""
    return np.stack([speech, (speech[::-1] // 2).astype(np.int16)])


def image(height: int = 48, width: int = 64) -> np.ndarray:
    """A deterministic colour test card (every channel differs, so BGR/RGB mix-ups show)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4) % 256, (y * 5) % 256, (x + y) % 256], axis=-1).astype(np.uint8)


# -- immutability --------------------------------------------------------------------------------
def test_audio_chunk_fields_and_samples_are_immutable(hello: AudioChunk) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        hello.pts = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        hello.samples[0, 0] = 1
    moved = hello.with_pts(800)
    assert (moved.pts, hello.pts) == (800, 0)
    assert moved.samples is hello.samples  # sharing is safe: nobody can write


def test_audio_chunk_does_not_alias_a_writable_array_it_was_given(speech: np.ndarray) -> None:
    buffer = speech[None, :].copy()
    chunk = AudioChunk(buffer, 8000)
    buffer[:] = 0  # the caller reuses its buffer
    assert np.array_equal(chunk.samples[0], speech)
    from_tuple = AudioChunk.from_tuple((8000, buffer[0]))
    buffer[:] = 7
    assert not from_tuple.samples.any()


def test_video_frame_is_immutable_and_does_not_alias() -> None:
    picture = image()
    frame = VideoFrame(picture, pts=3000)
    picture[:] = 0
    assert np.array_equal(frame.image, image())
    with pytest.raises(ValueError, match="read-only"):
        frame.image[0, 0, 0] = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.pts = 1  # type: ignore[misc]


def test_items_compare_by_value(speech: np.ndarray) -> None:
    chunk = AudioChunk(speech[None, :], 8000, 160)
    assert chunk == AudioChunk(speech[None, :].copy(), 8000, 160)
    assert chunk != chunk.with_pts(0) and chunk != chunk.to_float32() and chunk != AudioChunk(speech[None, :], 16000, 160)
    assert chunk != chunk.slice(0, 10) and chunk != "audio"
    assert Utterance(audio=chunk, start_s=0.0, end_s=0.5) == Utterance(audio=chunk.with_pts(160), start_s=0.0, end_s=0.5)
    frame = VideoFrame(image(), pts=3)
    assert frame == VideoFrame(image(), pts=3) and frame != frame.with_image(image()[::-1]) and frame != VideoFrame(image(), pts=4)


# -- validation: a MediaError that names what was wrong --------------------------------------
@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros((1, 4, 2), np.int16), 8000, r"shaped \(channels, n\), got shape \(1, 4, 2\)"),
        (np.zeros(4, np.int16), 8000, r"shaped \(channels, n\), got shape \(4,\)"),
        (np.zeros((1, 4), np.int32), 8000, "int16 or float32, got int32"),
        (np.zeros((1, 4), np.float64), 8000, "int16 or float32, got float64"),
        (np.zeros((9, 4), np.int16), 8000, "1 to 8 channels, got 9"),
        (np.zeros((0, 4), np.int16), 8000, "1 to 8 channels, got 0"),
        (np.zeros((1, 4), np.int16), 0, "sample_rate must be a positive integer in Hz, got 0"),
        (np.zeros((1, 4), np.int16), -8000, "got -8000"),
        (np.zeros((1, 4), np.int16), 8000.0, "got 8000.0"),
        ([[0, 0]], 8000, "numpy array, got list"),
    ],
)
def test_audio_chunk_rejects_bad_shape_dtype_and_rate(samples: object, rate: object, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        AudioChunk(samples, rate)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ((8000, np.zeros(4, np.int32)), "int16, float32 or float64, got int32"),
        ((8000, np.zeros(4, np.uint8)), "got uint8"),
        ((8000, np.zeros((2, 2, 2), np.int16)), r"1-D or 2-D, got shape \(2, 2, 2\)"),
        ((0, np.zeros(4, np.int16)), "sample rate must be a positive integer in Hz, got 0"),
        ((16000.0, np.zeros(4, np.int16)), "got 16000.0"),
        ((True, np.zeros(4, np.int16)), "got True"),
        (("16000", np.zeros(4, np.int16)), "got '16000'"),
        ((np.zeros(4, np.int16),), "a \\(sample_rate, ndarray\\) tuple"),
        ([8000, np.zeros(4, np.int16)], "tuple, got list"),
        ((8000, np.zeros((10, 12), np.int16)), r"cannot tell channels from samples in an audio array of shape \(10, 12\)"),
    ],
)
def test_from_tuple_rejects_what_it_cannot_read(value: object, message: str) -> None:
    with pytest.raises(MediaError, match=message) as caught:
        AudioChunk.from_tuple(value)  # type: ignore[arg-type]
    assert isinstance(caught.value, FlowRTCError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("picture", "message"),
    [
        (np.zeros((4, 4), np.uint8), r"\(height, width, 3\), got \(4, 4\)"),
        (np.zeros((4, 4, 4), np.uint8), r"got \(4, 4, 4\)"),
        (np.zeros((4, 4, 3), np.float32), "uint8, got float32"),
    ],
)
def test_video_frame_rejects_bad_images(picture: np.ndarray, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        VideoFrame(picture)


def test_video_frame_rejects_unknown_format() -> None:
    with pytest.raises(MediaError, match="'bgr24' or 'rgb24', got 'yuv420p'"):
        VideoFrame(image(), format="yuv420p")  # type: ignore[arg-type]


# -- FastRTC tuples in every shape ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_from_tuple_mono_shapes(speech: np.ndarray, dtype: type) -> None:
    values = speech.astype(dtype) if dtype == np.int16 else (speech / 32768).astype(dtype)
    expected_dtype = np.int16 if dtype == np.int16 else np.float32
    for shaped in (values, values[None, :], values[:, None]):
        chunk = AudioChunk.from_tuple((8000, shaped))
        assert chunk.channels == 1 and chunk.n_samples == speech.size
        assert chunk.samples.dtype == expected_dtype
        assert np.array_equal(chunk.to_int16().samples[0], speech)  # k/32768 is exact in float32


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_from_tuple_stereo_planar_and_interleaved(stereo: np.ndarray, dtype: type) -> None:
    values = stereo.astype(dtype) if dtype == np.int16 else (stereo / 32768).astype(dtype)
    planar = AudioChunk.from_tuple((48000, values))
    interleaved = AudioChunk.from_tuple((48000, values.T))  # (n, 2)
    for chunk in (planar, interleaved):
        assert (chunk.channels, chunk.n_samples, chunk.sample_rate) == (2, stereo.shape[1], 48000)
        assert np.array_equal(chunk.to_int16().samples, stereo)  # left stays left


def test_from_tuple_layout_settles_ambiguous_shapes() -> None:
    square = np.array([[1, 2], [3, 4]], np.int16)
    assert AudioChunk.from_tuple((8000, square)).samples.tolist() == [[1, 2], [3, 4]]
    # FastRTC's optional third element: a (2 samples, 2 channels) interleaved array.
    assert AudioChunk.from_tuple((8000, square, "stereo")).samples.tolist() == [[1, 2], [3, 4]]
    column = np.array([[5, 6, 7]], np.int16).T  # (3, 1): three mono samples
    assert AudioChunk.from_tuple((8000, column, "mono")).samples.tolist() == [[5, 6, 7]]


def test_from_tuple_accepts_numpy_integer_rates(speech: np.ndarray) -> None:
    chunk = AudioChunk.from_tuple((np.int64(16000), speech), pts=320)
    assert chunk.sample_rate == 16000 and type(chunk.sample_rate) is int and chunk.pts == 320


def test_to_tuple_round_trips(stereo: np.ndarray) -> None:
    chunk = AudioChunk(stereo, 24000, 480)
    rate, array = chunk.to_tuple()
    assert rate == 24000 and array.shape == (2, stereo.shape[1])
    again = AudioChunk.from_tuple((rate, array), pts=480)
    assert (again.sample_rate, again.pts, again.channels) == (24000, 480, 2)
    assert np.array_equal(again.samples, stereo)


# -- PCM and µ-law bytes ---------------------------------------------------------------------------
def test_pcm_bytes_equal_the_wav_file_data(media_dir, hello: AudioChunk) -> None:
    with wave.open(str(media_dir / "asterisk_hello-world_8k.wav")) as wav:
        data = wav.readframes(wav.getnframes())
    assert hello.to_pcm() == data
    assert np.array_equal(AudioChunk.from_pcm(data, 8000).samples, hello.samples)


def test_pcm_bytes_are_interleaved_little_endian(stereo: np.ndarray) -> None:
    chunk = AudioChunk(stereo, 16000)
    data = chunk.to_pcm()
    expected = np.empty(stereo.size, "<i2")
    expected[0::2], expected[1::2] = stereo[0], stereo[1]
    assert data == expected.tobytes()
    back = AudioChunk.from_pcm(data, 16000, channels=2, pts=160)
    assert np.array_equal(back.samples, stereo) and back.pts == 160


def test_pcm_bytes_reject_partial_frames() -> None:
    with pytest.raises(MediaError, match="5 bytes is not a whole number of 1-channel frames"):
        AudioChunk.from_pcm(b"\x00" * 5, 8000)
    with pytest.raises(MediaError, match="6 bytes is not a whole number of 2-channel frames"):
        AudioChunk.from_pcm(b"\x00" * 6, 8000, channels=2)


def test_float_chunk_to_pcm_rounds_and_clips() -> None:
    chunk = AudioChunk(np.array([[0.5, -1.0, 1.5, 1 / 65536]], np.float32), 8000)
    assert np.frombuffer(chunk.to_pcm(), "<i2").tolist() == [16384, -32768, 32767, 0]


def test_mulaw_bytes(speech: np.ndarray, stereo: np.ndarray) -> None:
    chunk = AudioChunk(speech[None, :], 8000)
    data = chunk.to_mulaw()
    assert len(data) == speech.size
    assert data == pcm16_to_mulaw(speech).tobytes()
    back = AudioChunk.from_mulaw(data, pts=80)
    assert (back.sample_rate, back.pts, back.n_samples) == (8000, 80, speech.size)
    assert np.array_equal(back.samples[0], mulaw_to_pcm16(np.frombuffer(data, np.uint8)))
    # Stereo is mixed down (mean of the channels) before encoding.
    mixed = AudioChunk(stereo, 8000).to_mulaw()
    assert mixed == AudioChunk(stereo, 8000).to_layout("mono").to_mulaw()


# -- PyAV frames --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["s16", "s16p", "flt", "fltp"])
@pytest.mark.parametrize("channels", [1, 2])
def test_av_audio_frames_round_trip_losslessly(speech: np.ndarray, stereo: np.ndarray, fmt: str, channels: int) -> None:
    samples = speech[None, :] if channels == 1 else stereo
    chunk = AudioChunk(samples, 16000, pts=3200)
    frame = chunk.to_av(fmt)
    assert (frame.format.name, frame.layout.nb_channels, frame.sample_rate, frame.samples) == (fmt, channels, 16000, samples.shape[1])
    assert frame.pts == 3200 and frame.time_base == Fraction(1, 16000)
    back = AudioChunk.from_av(frame)
    assert back.pts == 3200 and back.sample_rate == 16000
    assert back.samples.dtype == (np.int16 if fmt.startswith("s16") else np.float32)
    assert np.array_equal(back.to_int16().samples, samples)


def test_from_av_converts_pts_from_the_frame_time_base(speech: np.ndarray) -> None:
    frame = AudioChunk(speech[None, :], 16000).to_av("s16")
    frame.pts, frame.time_base = 90000, Fraction(1, 90000)  # 1 s on a 90 kHz clock
    assert AudioChunk.from_av(frame).pts == 16000


def test_av_audio_rejects_unsupported_formats_and_layouts(speech: np.ndarray) -> None:
    frame = av.AudioFrame.from_ndarray(speech[None, :].astype(np.int32), format="s32", layout="mono")
    with pytest.raises(MediaError, match="unsupported av audio format 's32'"):
        AudioChunk.from_av(frame)
    with pytest.raises(MediaError, match="unsupported av audio format 'dbl'"):
        AudioChunk(speech[None, :], 8000).to_av("dbl")
    with pytest.raises(MediaError, match="not 3 channels"):
        AudioChunk(np.zeros((3, 10), np.int16), 8000).to_av()


@pytest.mark.parametrize("fmt", ["bgr24", "rgb24"])
def test_av_video_frames_round_trip_losslessly(fmt: str) -> None:
    frame = VideoFrame(image(), pts=6000, time_base=Fraction(1, 90000), format=fmt)  # type: ignore[arg-type]
    converted = frame.to_av()
    assert (converted.width, converted.height, converted.pts, converted.time_base) == (64, 48, 6000, Fraction(1, 90000))
    back = VideoFrame.from_av(converted, format=fmt)  # type: ignore[arg-type]
    assert np.array_equal(back.image, image()) and back.pts == 6000 and back.format == fmt
    assert back.media_time_s == pytest.approx(6000 / 90000)
    other = VideoFrame.from_av(converted, format="rgb24" if fmt == "bgr24" else "bgr24")
    assert np.array_equal(other.image, image()[:, :, ::-1])  # channel order is honoured
    assert np.array_equal(frame.to_format("rgb24" if fmt == "bgr24" else "bgr24").image, other.image)


def test_video_frame_with_image_keeps_timing() -> None:
    frame = VideoFrame(image(), pts=42, time_base=Fraction(1, 30))
    flipped = frame.with_image(image()[::-1])
    assert (flipped.pts, flipped.time_base, flipped.format) == (42, Fraction(1, 30), "bgr24")
    assert flipped.media_time_s == pytest.approx(1.4)
    assert (frame.height, frame.width) == (48, 64)


# -- derived chunks -----------------------------------------------------------------------------
def test_int16_float32_conversion_is_lossless(hello: AudioChunk) -> None:
    as_float = hello.to_float32()
    assert as_float.samples.dtype == np.float32 and np.abs(as_float.samples).max() <= 1.0
    assert np.array_equal(as_float.to_int16().samples, hello.samples)
    assert hello.to_dtype(np.int16) is hello and as_float.to_dtype("float32") is as_float


def test_timing_properties(hello: AudioChunk) -> None:
    piece = hello.slice(800, 1120)
    assert (piece.pts, piece.n_samples, piece.end_pts) == (800, 320, 1120)
    assert piece.duration_s == pytest.approx(0.04) and piece.media_time_s == pytest.approx(0.1)
    assert hello.n_samples == 11234 and hello.duration_s == pytest.approx(1.40425)


def test_layout_conversion(stereo: np.ndarray, speech: np.ndarray) -> None:
    chunk = AudioChunk(stereo, 8000)
    mono = chunk.to_layout("mono")
    expected = np.rint((stereo[0].astype(np.float32) + stereo[1]) / 2).astype(np.int16)
    assert mono.channels == 1 and np.array_equal(mono.samples[0], expected)
    up = AudioChunk(speech[None, :], 8000).to_layout("stereo")
    assert up.channels == 2 and np.array_equal(up.samples[0], up.samples[1])
    assert chunk.layout == "stereo" and mono.layout == "mono"
    with pytest.raises(MediaError, match="cannot convert 2 channels to 3"):
        chunk.to_layout(3)


def test_concat_and_silence(hello: AudioChunk) -> None:
    parts = [hello.slice(0, 100), hello.slice(100, 250).to_float32(), hello.slice(250)]
    joined = AudioChunk.concat(parts)
    assert joined.samples.dtype == np.float32  # any float part makes the whole float
    assert np.array_equal(joined.to_int16().samples, hello.samples)
    silence = AudioChunk.silence(0.25, 16000, channels=2, pts=99)
    assert silence.samples.shape == (2, 4000) and not silence.samples.any() and silence.pts == 99
    with pytest.raises(MediaError, match="zero chunks"):
        AudioChunk.concat([])
    with pytest.raises(MediaError, match="share sample_rate and channels"):
        AudioChunk.concat([hello, silence])


def test_as_audio_chunk(hello: AudioChunk, speech: np.ndarray) -> None:
    assert as_audio_chunk(hello) is hello
    assert np.array_equal(as_audio_chunk(hello.to_av()).samples, hello.samples)
    assert as_audio_chunk((8000, speech), pts=160).pts == 160
    with pytest.raises(MediaError, match="got list"):
        as_audio_chunk([1, 2, 3])


# -- events ----------------------------------------------------------------------------------------
EVENT_TYPES = [getattr(events, name) for name in events.__all__ if name not in ("Event", "AdditionalOutputs")]


def test_every_event_is_a_frozen_struct_with_media_time() -> None:
    assert len(EVENT_TYPES) == 20
    for event_type in EVENT_TYPES:
        assert issubclass(event_type, Event) and issubclass(event_type, msgspec.Struct), event_type
        assert "media_time_s" in event_type.__struct_fields__, event_type
        assert event_type.__struct_config__.frozen, event_type


SAMPLE_EVENTS = [
    events.SpeechStarted(media_time_s=0.19),
    events.SpeechStopped(media_time_s=1.4),
    events.SpeechPaused(speech_end_s=1.4, media_time_s=1.592),
    events.SpeechResumed(media_time_s=1.7),
    events.PauseDetected(media_time_s=1.9),
    events.Interrupt(media_time_s=2.0),
    events.ReplyStarted(media_time_s=2.1),
    events.ReplyEnded(interrupted=True, media_time_s=3.0),
    CloseStream("bye", media_time_s=3.5),
    events.Log(data="started_talking", media_time_s=0.19),
    events.Error(message="boom", kind="RuntimeError", media_time_s=1.0),
    events.Warning(message="careful", media_time_s=1.0),
    events.Message(type="send_input", data=[1, "a"], media_time_s=0.0),
    events.ClientMessage(data={"type": "ping"}, media_time_s=0.5),
    events.Transcript(text="hello world", final=False, media_time_s=1.2),
    events.StopWord(word="computer", media_time_s=0.7),
    events.Dtmf(digit="5", media_time_s=4.0),
    events.PlaybackMark(name="reply-1", media_time_s=2.5),
]


@pytest.mark.parametrize("event", SAMPLE_EVENTS, ids=lambda e: type(e).__name__)
def test_events_encode_to_json_and_back(event: Event) -> None:
    encoded = msgspec.json.encode(event)
    assert msgspec.json.decode(encoded)["media_time_s"] == event.media_time_s
    assert msgspec.json.decode(encoded, type=type(event)) == event
    with pytest.raises(AttributeError):
        event.media_time_s = 9.0  # type: ignore[misc]


def test_event_signatures_fastrtc_users_rely_on(hello: AudioChunk) -> None:
    assert CloseStream("done").msg == "done" and CloseStream().msg == "Stream closed"
    extra = AdditionalOutputs("text", 3, media_time_s=1.5)
    assert extra.args == ("text", 3) and extra.media_time_s == 1.5
    assert extra == AdditionalOutputs("text", 3) and extra != AdditionalOutputs("text")
    utterance = Utterance(audio=hello, start_s=0.19, end_s=1.4, media_time_s=1.9)
    assert utterance.audio is hello and utterance.end_s - utterance.start_s == pytest.approx(1.21)
    with pytest.raises(TypeError):
        events.Interrupt(1.0)  # type: ignore[misc]  # media time is keyword-only


def test_an_empty_planar_array_is_an_empty_chunk_not_zero_channels() -> None:
    import numpy as np

    from flowrtc.media import AudioChunk

    chunk = AudioChunk.from_tuple((16000, np.zeros((1, 0), np.int16)))
    assert chunk.channels == 1 and chunk.n_samples == 0
