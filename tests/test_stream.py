"""Stream with every handler kind: set_input reaches the next call, time_limit and concurrency_limit
hold on every transport, additional outputs reach output_stream/fetch_latest_output, inputs are specs."""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import dataclass
from typing import Any, Callable

import anyio
import numpy as np
import pytest

from flowrtc import (
    AdditionalOutputs,
    AsyncAudioVideoStreamHandler,
    AsyncStreamHandler,
    AudioChunk,
    AudioVideoStreamHandler,
    Checkbox,
    CloseStream,
    ConfigurationError,
    Dropdown,
    Message,
    Number,
    Slider,
    Stream,
    StreamHandler,
    Textbox,
    VideoFrame,
    VideoStreamHandler,
    wait_for_item,
)
from flowrtc.hub import ConcurrencyLimitReached, ConnectionExists

pytestmark = pytest.mark.anyio

CALLS: list[tuple[Any, ...]] = []
SHUTDOWNS: list[str] = []


def image(value: int = 0) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def audio_frame(index: int = 0) -> AudioChunk:
    return AudioChunk(np.full((1, 960), index, np.int16), 48000, pts=960 * index)


def video_frame(index: int = 0) -> VideoFrame:
    return VideoFrame(image(index), pts=3000 * index)


# ---------------------------------------------------------------------- one of every kind
def frame_function(frame: np.ndarray, *args: Any) -> np.ndarray:
    CALLS.append(args)
    return frame


def slow_frame_function(frame: np.ndarray, *args: Any) -> Any:
    CALLS.append(args)
    time.sleep(0.01)
    return frame, AdditionalOutputs(*args)


def video_generator(level: int) -> Any:
    CALLS.append((level,))
    while True:
        time.sleep(0.02)
        yield image(level)


async def audio_generator(level: int) -> Any:
    CALLS.append((level,))
    while True:
        await asyncio.sleep(0.02)
        yield 16000, np.full((1, 320), level, np.int16)


class SyncHandler(StreamHandler):
    def __init__(self) -> None:
        super().__init__(output_sample_rate=48000)
        self.queue: queue.Queue[Any] = queue.Queue()

    def receive(self, frame: Any) -> None:
        CALLS.append(tuple(self.latest_args[1:]))
        self.queue.put(frame)

    def emit(self) -> Any:
        return None if self.queue.empty() else self.queue.get()

    def shutdown(self) -> None:
        SHUTDOWNS.append(type(self).__name__)

    def copy(self) -> SyncHandler:
        return SyncHandler()


class AsyncHandler(AsyncStreamHandler):
    def __init__(self) -> None:
        super().__init__(output_sample_rate=48000)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def receive(self, frame: Any) -> None:
        CALLS.append(tuple(self.latest_args[1:]))
        await self.queue.put(frame)

    async def emit(self) -> Any:
        return await wait_for_item(self.queue, 0.05)

    async def shutdown(self) -> None:
        SHUTDOWNS.append(type(self).__name__)

    def copy(self) -> AsyncHandler:
        return AsyncHandler()


class SyncAV(AudioVideoStreamHandler):
    def receive(self, frame: Any) -> None:
        pass

    def emit(self) -> None:
        return None

    def video_receive(self, frame: np.ndarray) -> None:
        CALLS.append(tuple(self.latest_args[1:]))
        self.last = frame

    def video_emit(self) -> Any:
        frame, self.last = getattr(self, "last", None), None
        return frame

    def shutdown(self) -> None:
        SHUTDOWNS.append(type(self).__name__)

    def copy(self) -> SyncAV:
        return SyncAV()


class AsyncAV(AsyncAudioVideoStreamHandler):
    def __init__(self) -> None:
        super().__init__()
        self.video: asyncio.Queue[Any] = asyncio.Queue()

    async def receive(self, frame: Any) -> None:
        pass

    async def emit(self) -> None:
        return await wait_for_item(asyncio.Queue(), 0.05)

    async def video_receive(self, frame: np.ndarray) -> None:
        CALLS.append(tuple(self.latest_args[1:]))
        await self.video.put(frame)

    async def video_emit(self) -> Any:
        return await wait_for_item(self.video, 0.05)

    async def shutdown(self) -> None:
        SHUTDOWNS.append(type(self).__name__)

    def copy(self) -> AsyncAV:
        return AsyncAV()


@dataclass
class Kind:
    name: str
    make: Callable[..., Stream]
    probe: Callable[[int], Any] | None  # one input item; None for receive mode


KINDS = [
    Kind("video function", lambda **kw: Stream(frame_function, modality="video", **kw), video_frame),
    Kind("VideoStreamHandler", lambda **kw: Stream(VideoStreamHandler(slow_frame_function, skip_frames=True), modality="video", **kw), video_frame),
    Kind("video generator", lambda **kw: Stream(VideoStreamHandler(video_generator, fps=50), modality="video", mode="receive", **kw), None),
    Kind("audio generator", lambda **kw: Stream(audio_generator, modality="audio", mode="receive", **kw), None),
    Kind("StreamHandler", lambda **kw: Stream(SyncHandler(), modality="audio", **kw), audio_frame),
    Kind("AsyncStreamHandler", lambda **kw: Stream(AsyncHandler(), modality="audio", **kw), audio_frame),
    Kind("AudioVideoStreamHandler", lambda **kw: Stream(SyncAV(), modality="audio-video", **kw), video_frame),
    Kind("AsyncAudioVideoStreamHandler", lambda **kw: Stream(AsyncAV(), modality="audio-video", **kw), video_frame),
]
IDS = [kind.name for kind in KINDS]


@pytest.fixture(autouse=True)
def fresh_records() -> None:
    CALLS.clear()
    SHUTDOWNS.clear()


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.005)


async def drain(session: Any, into: list[Any]) -> None:
    async for item in session:
        into.append(item)


# ------------------------------------------------------------------------------ set_input
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_set_input_reaches_the_next_call_of_every_handler_kind(kind: Kind) -> None:
    stream = kind.make()
    out: list[Any] = []
    async with stream.session("id", transport="test") as session:
        async with anyio.create_task_group() as group:
            group.start_soon(drain, session, out)
            if kind.probe is None:  # a generator that needs an argument asks for it, then is called with it
                await until(lambda: Message(type="send_input", data=[]) in out)
                assert CALLS == []
                stream.set_input("id", 0.77)
                await until(lambda: len(CALLS) == 1)
            else:
                await session.send(kind.probe(0))
                await until(lambda: len(CALLS) == 1)
                stream.set_input("id", 0.77)
                await session.send(kind.probe(1))
                await until(lambda: len(CALLS) == 2)
            group.cancel_scope.cancel()
    assert CALLS[-1] == (0.77,)  # FastRTC dropped it for video (it replaced latest_args[0] with the frame)
    if kind.probe is not None:
        assert CALLS[0] == ()


async def test_set_input_before_the_session_is_attached_is_kept_for_it() -> None:
    stream = Stream(frame_function, modality="video")
    stream.hub.reserve("early", transport="webrtc")
    stream.set_input("early", "kept")  # e.g. the input hook answered before the media started
    stream.hub.release("early")
    stream.set_input("unknown", 1)  # an unknown id is ignored
    async with stream.session("early", transport="test") as session:
        stream.set_input("early", "kept")
        await session.send(video_frame())
        await until(lambda: len(CALLS) == 1)
    assert CALLS == [("kept",)]


async def test_additional_inputs_defaults_are_the_arguments_until_set_input() -> None:
    class FakeGradioSlider:  # gradio-like: only .value matters, gradio is never imported
        def __init__(self, value: float) -> None:
            self.value = value
            self.minimum, self.maximum, self.step, self.label = 0, 1, 0.01, "Confidence"

    stream = Stream(frame_function, modality="video", additional_inputs=[FakeGradioSlider(0.3), Textbox(value="hi")])
    assert stream.input_values() == [0.3, "hi"]
    assert stream.additional_inputs[0].to_dict() == {"type": "value", "value": 0.3, "label": "Confidence"}
    async with stream.session("d", transport="test") as session:
        await session.send(video_frame(0))
        await until(lambda: len(CALLS) == 1)
        stream.set_input("d", 0.9, "there")
        await session.send(video_frame(1))
        await until(lambda: len(CALLS) == 2)
    assert CALLS == [(0.3, "hi"), (0.9, "there")]


def test_additional_inputs_are_framework_neutral_specs() -> None:
    stream = Stream(
        frame_function,
        modality="video",
        additional_inputs=[Slider(minimum=0, maximum=1, step=0.01, value=0.3), Number(value=2), Checkbox(value=True), Dropdown(choices=["a", "b"])],
    )
    assert [spec.to_dict()["type"] for spec in stream.additional_inputs] == ["slider", "number", "checkbox", "dropdown"]
    assert stream.input_values() == [0.3, 2, True, "a"]
    with pytest.raises(ConfigurationError, match=r"\.value"):
        Stream(frame_function, modality="video", additional_inputs=[object()])


async def test_stream_handler_latest_args_start_with_the_input_defaults() -> None:
    stream = Stream(SyncHandler(), modality="audio", additional_inputs=[Slider(value=5)])
    async with stream.session("a", transport="test") as session:
        await session.send(audio_frame())
        await until(lambda: len(CALLS) == 1)
    assert CALLS == [(5,)]


# -------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_time_limit_ends_a_session_of_every_kind(kind: Kind) -> None:
    stream = kind.make(time_limit=0.3, additional_inputs=[Number(value=1)])
    out: list[Any] = []
    started = time.perf_counter()
    async with stream.session("t", transport="websocket") as session:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(drain, session, out)
                if kind.probe is not None:
                    for i in range(100):
                        try:
                            await session.send(kind.probe(i))
                        except Exception:
                            break
                        await anyio.sleep(0.02)
    elapsed = time.perf_counter() - started
    assert out[-1] == CloseStream("time limit reached")
    assert 0.29 <= elapsed < 2.0
    if kind.name.endswith("StreamHandler") and kind.name != "VideoStreamHandler":
        assert len(SHUTDOWNS) == 1  # shutdown runs on every transport, also when the time is up
    assert "t" not in stream.hub


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
async def test_concurrency_limit_counts_every_transport_for_every_kind(kind: Kind) -> None:
    stream = kind.make(concurrency_limit=2, additional_inputs=[Number(value=1)])
    async with stream.session("call", transport="telephone", phone_mode=True):
        async with stream.session("ws", transport="websocket"):
            with pytest.raises(ConcurrencyLimitReached) as info:
                async with stream.session("webrtc", transport="webrtc"):
                    pass  # pragma: no cover
            assert info.value.limit == 2
            with pytest.raises(ConnectionExists):
                async with stream.session("ws", transport="webrtc"):
                    pass  # pragma: no cover
    async with stream.session("webrtc", transport="webrtc"):
        assert stream.hub.ids() == ["webrtc"]


def test_concurrency_limit_default_is_one_and_none_means_unlimited() -> None:
    assert Stream(frame_function).concurrency_limit == 1
    assert Stream(frame_function, concurrency_limit=None).hub.concurrency_limit is None
    with pytest.raises(ConfigurationError):
        Stream(frame_function, concurrency_limit=0)
    with pytest.raises(ConfigurationError):
        Stream(frame_function, time_limit=-1)
    with pytest.raises(ConfigurationError, match="modality"):
        Stream(frame_function, modality="text")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- additional outputs
async def test_output_stream_follows_a_session_and_ends_with_it() -> None:
    stream = Stream(VideoStreamHandler(slow_frame_function), modality="video", concurrency_limit=None)
    seen: list[Any] = []

    async def follow() -> None:
        async for outputs in stream.output_stream("o"):
            seen.append(outputs.args)

    async with anyio.create_task_group() as outer:
        async with stream.session("o", transport="test") as session:
            async with anyio.create_task_group() as group:
                group.start_soon(drain, session, [])
                outer.start_soon(follow)
                await anyio.sleep(0.01)
                stream.set_input("o", "first")
                await session.send(video_frame(0))
                await until(lambda: len(seen) == 1)
                stream.set_input("o", "second")
                await session.send(video_frame(1))
                await until(lambda: len(seen) == 2)
                group.cancel_scope.cancel()
        with anyio.fail_after(2):
            await until(lambda: not stream.hub.ids())  # follow() ends once the session is gone
    assert seen == [("first",), ("second",)]
    assert [outputs async for outputs in stream.output_stream("o")] == []


async def test_fetch_latest_output_returns_the_next_additional_output() -> None:
    stream = Stream(slow_frame_function, modality="video")
    async with stream.session("f", transport="test") as session:
        async with anyio.create_task_group() as group:
            group.start_soon(drain, session, [])
            results: list[Any] = []

            async def fetch() -> None:
                results.append(await stream.fetch_latest_output("f", timeout_s=5))

            group.start_soon(fetch)
            await anyio.sleep(0.01)
            stream.set_input("f", 42)
            await session.send(video_frame())
            await until(lambda: bool(results))
            assert await stream.fetch_latest_output("f", timeout_s=0.05) is None  # nothing new
            group.cancel_scope.cancel()
    assert results == [AdditionalOutputs(42)]
    assert await stream.fetch_latest_output("f", timeout_s=0.05) is None  # the session is gone


async def test_stream_handler_outputs_reach_output_stream() -> None:
    class Counts(SyncHandler):
        def emit(self) -> Any:
            value = super().emit()
            return None if value is None else (value, AdditionalOutputs(int(value[1][0, 0])))

        def copy(self) -> Counts:
            return Counts()

    stream = Stream(Counts(), modality="audio")
    seen: list[Any] = []

    async def follow() -> None:
        async for outputs in stream.output_stream("s"):
            seen.append(outputs.args[0])

    async with stream.session("s", transport="test") as session:
        async with anyio.create_task_group() as group:
            group.start_soon(drain, session, [])
            group.start_soon(follow)
            await anyio.sleep(0.01)
            for i in range(3):
                await session.send(audio_frame(i))
            await until(lambda: len(seen) == 3)
            group.cancel_scope.cancel()
    assert seen == [0, 1, 2]


# ------------------------------------------------------------------------------- formats
def test_audio_rates_a_transport_needs() -> None:
    stream = Stream(SyncHandler(), modality="audio")
    assert (stream.input_sample_rate, stream.output_sample_rate) == (48000, 48000)
    assert Stream(SyncHandler(), modality="audio", mode="send").output_sample_rate is None
    assert Stream(frame_function, modality="video").input_sample_rate is None
    assert Stream(audio_generator, modality="audio", mode="receive").input_sample_rate is None


async def test_a_graph_is_served_as_it_is() -> None:
    from flowrtc import Graph
    from flowrtc.operators import identity

    stream = Stream(Graph(audio=identity()), modality="audio", mode="send")
    async with stream.session("g", transport="test") as session:
        await session.send(audio_frame())
        await session.send(Message(type="x"))
        await session.end_input()
        out = [item async for item in session]
    assert out == [Message(type="x")]  # send mode: media is not sent back
    assert repr(stream) == "Stream(modality='audio', mode='send', handler=Graph)"
