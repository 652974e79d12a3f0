"""FastRTC's utilities (wait_for_item, audio_to_bytes/file, byte aggregation), get_current_context,
and the framework-neutral additional input specs."""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

import anyio
import av
import numpy as np
import pytest

from flowrtc import (
    AudioChunk,
    Checkbox,
    Context,
    Dropdown,
    GraphError,
    MediaError,
    Number,
    Slider,
    Text,
    Textbox,
    aggregate_bytes_to_16bit,
    async_aggregate_bytes_to_16bit,
    audio_to_bytes,
    audio_to_file,
    get_current_context,
    wait_for_item,
)
from flowrtc.graph import Graph
from flowrtc.inputs import Value, as_input, input_values
from flowrtc.operators import handler
from flowrtc.testing import arun

pytestmark = pytest.mark.anyio


def decode(data: bytes) -> tuple[int, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        rate = container.streams.audio[0].rate
        frames = [
            frame.to_ndarray() if frame.format.is_planar else frame.to_ndarray().reshape(-1, frame.layout.nb_channels).T
            for frame in container.decode(audio=0)
        ]
    return rate, np.concatenate(frames, axis=1) if frames else np.zeros((1, 0), np.int16)


# ---------------------------------------------------------------------------- wait_for_item
async def test_wait_for_item_returns_the_item_or_none_after_the_timeout() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    assert await wait_for_item(queue) == 1
    started = anyio.current_time()
    assert await wait_for_item(queue, 0.05) is None
    assert 0.04 <= anyio.current_time() - started < 1.0
    queue.put_nowait(2)  # nothing was lost by the timed-out wait
    assert await wait_for_item(queue, 0.05) == 2


async def test_wait_for_item_gets_an_item_that_arrives_while_waiting() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def later() -> None:
        await anyio.sleep(0.02)
        await queue.put("late")

    async with anyio.create_task_group() as group:
        group.start_soon(later)
        assert await wait_for_item(queue, 2) == "late"


# ------------------------------------------------------------------------- audio to bytes
def test_audio_to_bytes_is_mp3_by_default_and_keeps_duration() -> None:
    tone = (np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 10000).astype(np.int16)
    data = audio_to_bytes((16000, tone))
    assert data[:3] == b"ID3" or data[0] == 0xFF  # an MP3 stream
    rate, decoded = decode(data)
    assert rate == 16000 and decoded.shape[1] == pytest.approx(16000, abs=1152)


def test_audio_to_bytes_wav_round_trips_exactly_in_every_shape() -> None:
    samples = np.random.default_rng(1).integers(-20000, 20000, 4800).astype(np.int16)
    for shaped in (samples, samples[None, :], samples[:, None]):
        rate, decoded = decode(audio_to_bytes((24000, shaped), format="wav"))
        assert rate == 24000 and np.array_equal(decoded[0], samples)
    stereo = np.stack([samples, -samples])
    rate, decoded = decode(audio_to_bytes(AudioChunk(stereo, 8000), format="wav"))
    assert decoded.shape == (2, 4800) and np.array_equal(decoded, stereo)


def test_audio_to_bytes_docs_example_and_odd_rates() -> None:
    audio_bytes = audio_to_bytes((44100, np.array([0.1, -0.2, 0.3])))  # the docs' float example
    assert isinstance(audio_bytes, bytes) and len(audio_bytes) > 0
    rate, _ = decode(audio_to_bytes((7000, np.zeros(700, np.int16))))
    assert rate == 8000  # MP3 has no 7 kHz: the next rate up
    with pytest.raises(MediaError, match="format"):
        audio_to_bytes((8000, np.zeros(80, np.int16)), format="aiff")
    rate, decoded = decode(audio_to_bytes((8000, np.zeros(0, np.int16)), format="wav"))
    assert rate == 8000 and decoded.shape[1] == 0  # empty audio is still a valid file


def test_audio_to_file_writes_a_new_file_each_call() -> None:
    audio = (8000, np.zeros((1, 8000), np.int16))
    first, second = audio_to_file(audio), audio_to_file(audio, format="flac")
    try:
        assert first != second and first.endswith(".mp3") and second.endswith(".flac")
        with open(second, "rb") as file:
            rate, decoded = decode(file.read())
        assert rate == 8000 and decoded.shape[1] == 8000
    finally:
        os.remove(first)
        os.remove(second)


# -------------------------------------------------------------------------- aggregate bytes
def test_aggregate_bytes_to_16bit_docs_example() -> None:
    chunks = list(aggregate_bytes_to_16bit([b"\x00\x01", b"\x02\x03", b"\x04\x05"]))
    assert [chunk.tolist() for chunk in chunks] == [[[256]], [[770]], [[1284]]]
    assert all(chunk.dtype == np.int16 and chunk.shape[0] == 1 for chunk in chunks)


def test_aggregate_bytes_to_16bit_joins_samples_split_across_chunks() -> None:
    samples = np.random.default_rng(2).integers(-32768, 32767, 1000).astype("<i2")
    data = samples.tobytes()
    cuts = [0, 1, 2, 7, 300, 301, 1001, 1999, 2000]
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])] + [b"\x07"]  # a stray last byte is dropped
    joined = np.concatenate([chunk[0] for chunk in aggregate_bytes_to_16bit(pieces)])
    assert np.array_equal(joined, samples)


async def test_async_aggregate_bytes_to_16bit() -> None:
    async def chunks() -> Any:
        for piece in (b"\x00", b"\x01\x02", b"\x03", b""):
            yield piece

    out = [chunk async for chunk in async_aggregate_bytes_to_16bit(chunks())]
    assert [chunk.tolist() for chunk in out] == [[[256]], [[770]]]
    # FastRTC's reference shows it with a list of byte strings.
    listed = [chunk async for chunk in async_aggregate_bytes_to_16bit([b"\x00", b"\x01\x02", b"\x03", b""])]
    assert [chunk.tolist() for chunk in listed] == [[[256]], [[770]]]


# ---------------------------------------------------------------------------------- context
async def test_get_current_context_inside_and_outside_a_session(hello: AudioChunk) -> None:
    with pytest.raises(GraphError, match="outside"):
        get_current_context()
    seen: list[Context] = []

    def look(audio: Any) -> None:
        seen.append(get_current_context())

    transport = object()
    await arun(Graph(audio=handler(look)), audio=hello.slice(0, 160), session_id="abc", transport=transport)
    assert seen == [Context(webrtc_id="abc", websocket=transport)]


# ----------------------------------------------------------------------------------- inputs
def test_input_specs_render_and_default_like_gradio() -> None:
    assert Slider(minimum=0, maximum=1, step=0.01, value=0.3).to_dict() == {
        "type": "slider", "minimum": 0, "maximum": 1, "value": 0.3, "step": 0.01, "label": None,
    }
    assert Slider(2, 9).value == 2 and Number().value == 0 and Textbox().value == "" and Checkbox().value is False
    assert Text is Textbox and Text(value="hi", label="Prompt").to_dict()["label"] == "Prompt"
    assert Dropdown(choices=[("Small", "s"), ("Large", "l")]).value == "s"
    assert Dropdown(choices=["a", "b"], value="b").to_dict() == {"type": "dropdown", "choices": ["a", "b"], "value": "b", "label": None}
    with pytest.raises(ValueError, match="maximum"):
        Slider(minimum=1, maximum=0)


def test_gradio_like_components_become_specs_by_class_name() -> None:
    def component(class_name: str, **attributes: Any) -> Any:
        return type(class_name, (), attributes)()

    assert as_input(component("Slider", value=0.5, minimum=0, maximum=1, step=0.1, label="Conf")) == Slider(0, 1, 0.5, 0.1, "Conf")
    assert as_input(component("Dropdown", value=None, choices=["x", "y"], label=None)) == Dropdown(["x", "y"], "x")
    assert as_input(component("Checkbox", value=None)) == Checkbox(False)
    assert as_input(component("Number", value=None)).value == 0
    assert as_input(component("Textbox", value=staticmethod(lambda: "called"))) == Textbox("called")
    assert as_input(component("State", value=[])) == Value([])
    assert input_values([Slider(value=1), component("State", value={"a": 1})]) == [1, {"a": 1}]
    spec = Slider()
    assert as_input(spec) is spec


def test_audio_to_float32_and_int16_convert_samples_and_keep_shape() -> None:
    import numpy as np

    from flowrtc import audio_to_float32, audio_to_int16

    pcm = np.array([[-32768, -16384, 0, 16384, 32767]], np.int16)
    as_float = audio_to_float32((8000, pcm))
    assert as_float.dtype == np.float32 and as_float.shape == (1, 5)
    assert as_float[0, 0] == -1.0 and as_float[0, 2] == 0.0 and abs(as_float[0, 3] - 0.5) < 1e-6
    back = audio_to_int16(as_float)
    assert back.dtype == np.int16 and np.abs(back.astype(int) - pcm).max() <= 1
    assert audio_to_int16(np.array([2.0, -2.0], np.float32)).tolist() == [32767, -32768]
    assert audio_to_int16(pcm) is pcm
