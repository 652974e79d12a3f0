"""Handler kinds as graphs: StreamHandlers driven event-wise, audio-video handlers, video functions,
VideoStreamHandler's skip_frames and fps, receive-mode generators, and the video operators."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from fractions import Fraction
from typing import Any

import anyio
import numpy as np
import pytest

import flowrtc.handlers.driver as driver
from flowrtc import (
    AdditionalOutputs,
    AsyncAudioVideoStreamHandler,
    AsyncStreamHandler,
    AudioChunk,
    AudioVideoStreamHandler,
    ClientMessage,
    CloseStream,
    ConfigurationError,
    Error,
    GraphError,
    Interrupt,
    Log,
    Message,
    SessionClosed,
    Stream,
    StreamHandler,
    VideoFrame,
    VideoStreamHandler,
    WebRTCError,
    fps,
    get_current_context,
    skip_frames,
    wait_for_item,
)
from flowrtc.events import Warning as WarningEvent
from flowrtc.session import Session
from flowrtc.testing import arun, audio_frames

pytestmark = pytest.mark.anyio


def noise(seconds: float, rate: int, seed: int = 0) -> AudioChunk:
    samples = (np.random.default_rng(seed).standard_normal((1, round(seconds * rate))) * 3000).astype(np.int16)
    return AudioChunk(samples, rate)


def picture(index: int, size: int = 8) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :, 0] = index % 256
    image[:, :, 1] = index // 256
    image[0, :, 2] = 255  # top row marks "up", so a flip is visible
    return image


def index_of(image: np.ndarray) -> int:
    return int(image[1, 0, 0]) + 256 * int(image[1, 0, 1])


def frames(count: int, rate_fps: float = 30) -> list[VideoFrame]:
    return [VideoFrame(picture(i), pts=round(i * 90000 / rate_fps)) for i in range(count)]


async def exchange(stream: Stream, items: list[Any], *, session_id: str = "s", gap_s: float = 0.0, **options: Any) -> list[Any]:
    """Feed items into a Stream session, end the input, and collect the output until it ends."""
    out: list[Any] = []
    async with stream.session(session_id, transport="test", **options) as session:

        async def feed() -> None:
            try:
                for item in items:
                    await session.send(item)
                    if gap_s:
                        await anyio.sleep(gap_s)
                await session.end_input()
            except SessionClosed:
                pass

        async with anyio.create_task_group() as group:
            group.start_soon(feed)
            with anyio.fail_after(20):
                async for item in session:
                    out.append(item)
            group.cancel_scope.cancel()
    return out


# ------------------------------------------------------------------------ StreamHandler
class Echo(StreamHandler):
    """The docs' EchoHandler, plus a record of what receive got and where it ran."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("output_sample_rate", 48000)
        super().__init__(**options)
        self.queue: queue.Queue[Any] = queue.Queue()
        self.frames: list[tuple[int, np.ndarray]] = []
        self.threads: set[str] = set()

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.threads.add(threading.current_thread().name)
        self.frames.append(frame)
        self.queue.put(frame)

    def emit(self) -> Any:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def copy(self) -> Echo:
        return Echo(**self._options())

    def _options(self) -> dict[str, Any]:
        return {"input_sample_rate": self.input_sample_rate, "output_sample_rate": self.output_sample_rate, "expected_layout": self.expected_layout}


async def test_stream_handler_echoes_audio_sample_exact() -> None:
    handler = Echo(input_sample_rate=48000, output_sample_rate=48000)
    audio = noise(1.0, 48000)
    recording = await arun(handler.graph(), audio=audio)
    assert recording.audio is not None and recording.audio.sample_rate == 48000
    assert recording.audio_chunks[0].pts >= 960  # echoed once it has been received (20 ms in, or later)
    echoed = np.concatenate([chunk.samples for chunk in recording.audio_chunks], axis=1)
    assert np.array_equal(echoed, audio.samples)
    pts = [chunk.pts for chunk in recording.audio_chunks]
    assert pts == sorted(pts) and all(b - a >= 960 for a, b in zip(pts, pts[1:]))  # never overlapping
    assert all(name.startswith("flowrtc-") for name in handler.threads)  # a worker thread, never the loop


@pytest.mark.parametrize(("rate", "layout", "shape"), [(48000, "mono", (1, 960)), (16000, "mono", (1, 320)), (24000, "stereo", (2, 480))])
async def test_receive_gets_fastrtc_frames_whatever_the_transport_rate(hello: AudioChunk, rate: int, layout: str, shape: tuple[int, int]) -> None:
    handler = Echo(input_sample_rate=rate, expected_layout=layout)
    await arun(handler.graph(), audio=hello, frame_ms=30)  # 8 kHz, 30 ms packets in
    sizes = {frame[1].shape for frame in handler.frames[:-1]}
    assert sizes == {shape}
    assert all(frame[0] == rate and frame[1].dtype == np.int16 for frame in handler.frames)
    assert handler.frames[0][1].flags.writeable  # a copy the handler may change, like FastRTC's
    total = sum(frame[1].shape[1] for frame in handler.frames)
    assert abs(total - hello.duration_s * rate) <= rate // 100


async def test_emit_output_is_converted_to_output_sample_rate() -> None:
    class Tone(Echo):
        def emit(self) -> Any:
            if self.queue.empty():
                return None
            self.queue.get()
            return (16000, np.full(320, 1000, np.int16))  # 20 ms at 16 kHz, 1-D

    recording = await arun(Tone(output_sample_rate=24000).graph(), audio=noise(0.2, 48000))
    assert {chunk.sample_rate for chunk in recording.audio_chunks} == {24000}
    assert sum(chunk.n_samples for chunk in recording.audio_chunks) == pytest.approx(0.2 * 24000, abs=100)


class Counting(StreamHandler):
    """emit returns None; counts how often it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.receives = 0
        self.emits = 0
        self.emit_after_receive: list[int] = []

    def receive(self, frame: Any) -> None:
        self.receives += 1

    def emit(self) -> None:
        self.emits += 1
        self.emit_after_receive.append(self.receives)

    def copy(self) -> Counting:
        return Counting()


async def test_emit_is_called_after_every_receive_not_in_a_busy_loop() -> None:
    handler = Counting()
    await arun(handler.graph(), audio=noise(1.0, 48000))
    assert handler.receives == 50
    assert set(range(1, 51)) <= set(handler.emit_after_receive)  # every receive is followed by an emit
    assert handler.emits < 3 * handler.receives  # not FastRTC's ~15,000 calls per second


async def test_idle_stream_handler_session_costs_under_one_percent_of_a_core() -> None:
    stream = Stream(Counting(), modality="audio", concurrency_limit=None)
    async with stream.session("idle", transport="test") as session:
        await anyio.sleep(0.5)  # let the poll back off
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await anyio.sleep(2.0)
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    share = cpu_s / wall_s
    print(f"idle StreamHandler session: {100 * share:.3f}% of a core")
    assert share < 0.01


async def test_idle_emit_poll_backs_off_to_max_poll() -> None:
    handler = Counting()
    async with Session(handler.graph()):
        await anyio.sleep(1.0)
    # 20, 40, 80, 160, 200, 200 ... ms: about 7 calls in the first second, never 50.
    assert 4 <= handler.emits <= 10


class Producer(StreamHandler):
    """Makes output on its own, from a background thread, some time after start_up."""

    made_at = 0.0

    def __init__(self, notify: bool) -> None:
        super().__init__()
        self.notify = notify
        self.queue: queue.Queue[Any] = queue.Queue()

    def start_up(self) -> None:
        def later() -> None:
            time.sleep(0.3)
            Producer.made_at = time.perf_counter()
            self.queue.put((24000, np.zeros((1, 480), np.int16)))
            if self.notify:
                self.notify_emit()

        threading.Thread(target=later, daemon=True).start()

    def receive(self, frame: Any) -> None:
        pass

    def emit(self) -> Any:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None

    def copy(self) -> Producer:
        return Producer(self.notify)


@pytest.mark.parametrize("notify", [True, False])
async def test_output_made_in_the_background_is_picked_up_by_poll_or_notify_emit(monkeypatch: pytest.MonkeyPatch, notify: bool) -> None:
    monkeypatch.setattr(driver, "MAX_POLL_S", 0.05 if not notify else 30.0)
    handler = Producer(notify)
    stream = Stream(handler, modality="audio")
    async with stream.session("p", transport="test") as session:
        with anyio.fail_after(5):
            item = await session.receive()
        latency = time.perf_counter() - Producer.made_at
    assert isinstance(item, AudioChunk)
    assert latency < 1.0  # with a 30 s poll, only notify_emit can explain a prompt output


class Lifecycle(AsyncStreamHandler):
    """Async handler recording its lifecycle and its context in every method."""

    events: list[Any] = []

    def __init__(self) -> None:
        super().__init__(input_sample_rate=24000)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    async def start_up(self) -> None:
        Lifecycle.events.append(("start_up", get_current_context().webrtc_id))
        await self.queue.put((24000, np.full((1, 480), 7, np.int16)))  # a greeting before any input

    async def receive(self, frame: Any) -> None:
        Lifecycle.events.append(("receive", get_current_context().webrtc_id))
        await self.queue.put(frame)

    async def emit(self) -> Any:
        Lifecycle.events.append(("emit", get_current_context().webrtc_id))
        return await wait_for_item(self.queue)

    async def shutdown(self) -> None:
        Lifecycle.events.append(("shutdown", get_current_context().webrtc_id))

    def copy(self) -> Lifecycle:
        return Lifecycle()


async def test_async_handler_lifecycle_and_context_in_every_method() -> None:
    Lifecycle.events = []
    stream = Stream(Lifecycle(), modality="audio")
    out = await exchange(stream, audio_frames(noise(0.2, 24000)), session_id="ctx-1")
    audio = [item for item in out if isinstance(item, AudioChunk)]
    assert int(audio[0].samples[0, 0]) == 7  # start_up's greeting comes first
    assert len(audio) == 11
    names = [name for name, _ in Lifecycle.events]
    assert names[0] == "start_up" and names[-1] == "shutdown" and names.count("shutdown") == 1
    assert names.count("receive") == 10 and "emit" in names
    assert {session for _, session in Lifecycle.events} == {"ctx-1"}  # emit included, unlike FastRTC


class SyncContext(Echo):
    seen: list[Any] = []

    def receive(self, frame: Any) -> None:
        SyncContext.seen.append(("receive", get_current_context()))
        super().receive(frame)

    def emit(self) -> Any:
        SyncContext.seen.append(("emit", get_current_context()))
        return super().emit()

    def copy(self) -> SyncContext:
        return SyncContext()


async def test_get_current_context_in_sync_methods_carries_the_transport_object() -> None:
    SyncContext.seen = []
    websocket = object()
    await exchange(Stream(SyncContext(), modality="audio"), audio_frames(noise(0.1, 48000)), session_id="ws-9", transport_object=websocket)
    kinds = {kind for kind, _ in SyncContext.seen}
    assert kinds == {"receive", "emit"}
    assert {(c.webrtc_id, c.websocket is websocket) for _, c in SyncContext.seen} == {("ws-9", True)}


async def test_shutdown_runs_when_the_client_leaves_mid_session() -> None:
    calls: list[str] = []

    class Leaves(Counting):
        def shutdown(self) -> None:
            calls.append(threading.current_thread().name)

        def copy(self) -> Leaves:
            return Leaves()

    stream = Stream(Leaves(), modality="audio")
    async with stream.session("gone", transport="test") as session:
        await session.send(noise(0.02, 48000))
        await anyio.sleep(0.1)
    assert len(calls) == 1 and calls[0] == "flowrtc-shutdown"
    assert "gone" not in stream.hub


class Closer(Echo):
    def emit(self) -> Any:
        value = super().emit()
        if value is not None and len(self.frames) >= 3:
            return CloseStream("done")
        return value

    def copy(self) -> Closer:
        return Closer()


async def test_close_stream_from_emit_ends_the_session() -> None:
    out = await exchange(Stream(Closer(), modality="audio"), audio_frames(noise(1.0, 48000)), gap_s=0.005)
    assert isinstance(out[-1], CloseStream) and out[-1].msg == "done"
    assert len([item for item in out if isinstance(item, AudioChunk)]) == 2


class Outputs(Echo):
    def emit(self) -> Any:
        value = super().emit()
        if value is None:
            return None
        return value, AdditionalOutputs(len(self.frames))

    def copy(self) -> Outputs:
        return Outputs()


async def test_emit_may_return_audio_with_additional_outputs() -> None:
    out = await exchange(Stream(Outputs(), modality="audio"), audio_frames(noise(0.1, 48000)))
    outputs = [item for item in out if isinstance(item, AdditionalOutputs)]
    assert [o.args for o in outputs] == [(1,), (2,), (3,), (4,), (5,)]
    assert outputs[1].media_time_s == pytest.approx(0.04)


async def test_clear_queue_sends_an_interrupt_in_band() -> None:
    class Clears(Echo):
        def receive(self, frame: Any) -> None:
            super().receive(frame)
            if len(self.frames) == 3:
                self.clear_queue()

        def copy(self) -> Clears:
            return Clears()

    recording = await arun(Clears().graph(), audio=noise(0.2, 48000))
    interrupts = recording.of_type(Interrupt)
    assert len(interrupts) == 1 and interrupts[0].media_time_s == pytest.approx(0.06)


async def test_send_message_from_sync_and_async_code() -> None:
    class Talks(Echo):
        def receive(self, frame: Any) -> None:
            super().receive(frame)
            if len(self.frames) == 1:
                self.send_message_sync("hello")
                self.send_message_sync('{"type": "custom", "data": {"n": 1}}')

        def copy(self) -> Talks:
            return Talks()

    class ATalks(Lifecycle):
        async def start_up(self) -> None:
            await self.send_message({"type": "warning", "data": "careful"})

        def copy(self) -> ATalks:
            return ATalks()

    out = await exchange(Stream(Talks(), modality="audio"), audio_frames(noise(0.06, 48000)))
    assert Log(data="hello") in out and Message(type="custom", data={"n": 1}) in out
    out = await exchange(Stream(ATalks(), modality="audio"), [])
    assert [type(item).__name__ for item in out] == ["Warning"]


async def test_webrtc_error_ends_that_session_only() -> None:
    class Fails(Echo):
        def receive(self, frame: Any) -> None:
            raise WebRTCError("the model is unavailable")

        def copy(self) -> Fails:
            return Fails()

    failing = Stream(Fails(), modality="audio", concurrency_limit=None)
    healthy = Stream(Echo(), modality="audio", concurrency_limit=None)
    results = {}

    async def run(name: str, stream: Stream) -> None:
        results[name] = await exchange(stream, audio_frames(noise(0.2, 48000)), session_id=name, gap_s=0.01)

    async with anyio.create_task_group() as group:
        group.start_soon(run, "bad", failing)
        group.start_soon(run, "good", healthy)
    assert results["bad"] == [Error(message="the model is unavailable", kind="webrtc_error")]
    assert len([item for item in results["good"] if isinstance(item, AudioChunk)]) == 10


async def test_a_blocking_emit_does_not_keep_a_session_alive() -> None:
    class Blocks(Echo):
        def emit(self) -> Any:
            return self.queue.get()  # the docs' EchoHandler: blocks until input comes

        def copy(self) -> Blocks:
            return Blocks()

    handler = Blocks()
    started = time.perf_counter()
    recording = await arun(handler.graph(), audio=noise(0.1, 48000))
    assert len(recording.audio_chunks) == 5
    assert time.perf_counter() - started < 3  # the stuck emit is abandoned END_GRACE_S after the input ends
    handler.queue.put(None)  # let the abandoned worker thread finish


# ---------------------------------------------------------------------------- inputs
class Inputs(Echo):
    def __init__(self) -> None:
        super().__init__()
        self.args_seen: list[list[Any]] = []

    def receive(self, frame: Any) -> None:
        self.args_seen.append(list(self.latest_args))
        super().receive(frame)

    def copy(self) -> Inputs:
        return Inputs()


async def test_latest_args_keeps_fastrtcs_placeholder_and_sees_the_newest_inputs() -> None:
    handler = Inputs()
    await arun(handler.graph(), audio=noise(0.1, 48000), inputs=[(0.05, (0.77, "x"))])
    assert handler.args_seen[0] == ["__webrtc_value__"]
    assert handler.args_seen[-1] == ["__webrtc_value__", 0.77, "x"]


async def test_channel_sends_to_the_client_from_sync_and_async_code() -> None:
    """FastRTC's ``if self.channel: self.channel.send(...)`` idiom, and ``channel_set``."""
    seen: dict[str, Any] = {}

    class Talks(Echo):
        def receive(self, frame: Any) -> None:  # a worker thread
            seen["set"] = self.channel_set.is_set()
            if self.channel:
                self.channel.send("from receive")
            super().receive(frame)

        def copy(self) -> Talks:
            return Talks()

    class AsyncTalks(AsyncStreamHandler):
        async def start_up(self) -> None:  # the event loop
            await self.channel_set.wait()
            assert self.channel is not None
            self.channel.send({"type": "warning", "data": "from start_up"})

        async def receive(self, frame: Any) -> None:
            pass

        async def emit(self) -> None:
            return None

        def copy(self) -> AsyncTalks:
            return AsyncTalks()

    assert Talks().channel is None and not Talks().channel_set.is_set()  # no session yet
    for handler, expected in ((Talks(), Log(data="from receive")), (AsyncTalks(), WarningEvent(message="from start_up"))):
        stream = Stream(handler, modality="audio")
        async with stream.session("talks", transport="test") as session:
            await session.send(noise(0.02, 48000))
            with anyio.fail_after(5):
                item = await session.receive()
                while isinstance(item, AudioChunk):
                    item = await session.receive()
        assert item == expected
    assert seen == {"set": True}


async def test_wait_for_args_sync_asks_the_client_and_waits() -> None:
    class Asks(Echo):
        def receive(self, frame: Any) -> None:
            if len(self.frames) == 0:
                self.wait_for_args_sync()
            super().receive(frame)
            self.send_message_sync(f"args {self.latest_args[1:]}")

        def copy(self) -> Asks:
            return Asks()

    stream = Stream(Asks(), modality="audio")
    async with stream.session("ask", transport="test") as session:
        await session.send(noise(0.02, 48000))
        with anyio.fail_after(5):
            assert await session.receive() == Message(type="send_input", data=[])
        stream.set_input("ask", "hi")
        with anyio.fail_after(5):
            logs = [await session.receive() for _ in range(2)]
    assert Log(data="args ['hi']") in logs


async def test_phone_mode_never_waits_and_reset_clears_args_set() -> None:
    seen: dict[str, Any] = {}

    class Phone(AsyncStreamHandler):
        async def receive(self, frame: Any) -> None:
            seen["phone_mode"] = self.phone_mode
            if self.phone_mode:
                self.latest_args = [None]
            else:
                await self.wait_for_args()
            seen["args"] = list(self.latest_args)

        async def emit(self) -> None:
            return None

        def copy(self) -> Phone:
            return Phone()

    stream = Stream(Phone(), modality="audio")
    async with stream.session("call", transport="telephone", phone_mode=True) as session:
        await session.send(noise(0.02, 48000))
        await anyio.sleep(0.2)
    assert seen == {"phone_mode": True, "args": [None]}

    class Resets(Inputs):
        def receive(self, frame: Any) -> None:
            super().receive(frame)
            seen["before"] = self.args_set.is_set()
            self.reset()

        def copy(self) -> Resets:
            return Resets()

    stream = Stream(Resets(), modality="audio")
    async with stream.session("r", transport="test") as session:
        stream.set_input("r", 1)
        await session.send(noise(0.02, 48000))
        await anyio.sleep(0.2)
        assert seen["before"] is True and not session.args_set.is_set()


async def test_wait_for_args_in_every_emit_asks_once_and_then_returns_at_once() -> None:
    """FastRTC's pattern: ``await self.wait_for_args()`` at the top of every ``emit``.
    The inputs stay set until ``reset()``: one ``send_input``, then all the audio comes back."""

    class AsksInEmit(AsyncStreamHandler):
        def __init__(self) -> None:
            super().__init__(output_sample_rate=48000)
            self.frames: asyncio.Queue[Any] = asyncio.Queue()

        async def receive(self, frame: Any) -> None:
            await self.frames.put(frame)

        async def emit(self) -> Any:
            await self.wait_for_args()
            return await wait_for_item(self.frames, 0.05)

        def copy(self) -> AsksInEmit:
            return AsksInEmit()

    stream = Stream(AsksInEmit(), modality="audio")
    sent = noise(0.2, 48000)
    questions, back = 0, []
    async with stream.session("asks", transport="test") as session:
        with anyio.fail_after(5):
            assert await session.receive() == Message(type="send_input", data=[])
        stream.set_input("asks", 0.77)
        for frame in audio_frames(sent):
            await session.send(frame)
        with anyio.move_on_after(1.0):
            while sum(c.n_samples for c in back) < sent.n_samples:
                item = await session.receive()
                if isinstance(item, AudioChunk):
                    back.append(item)
                elif item == Message(type="send_input", data=[]):
                    questions += 1
    assert questions == 0
    assert np.array_equal(AudioChunk.concat(back).samples, sent.samples)


# ------------------------------------------------------------------- audio-video handlers
class Mirror(AudioVideoStreamHandler):
    def __init__(self) -> None:
        super().__init__(input_sample_rate=48000, output_sample_rate=48000)
        self.audio: queue.Queue[Any] = queue.Queue()
        self.video: queue.Queue[Any] = queue.Queue()

    def receive(self, frame: Any) -> None:
        self.audio.put(frame)

    def emit(self) -> Any:
        return None if self.audio.empty() else self.audio.get()

    def video_receive(self, frame: np.ndarray) -> None:
        assert frame.flags.writeable
        self.video.put(frame)

    def video_emit(self) -> Any:
        return None if self.video.empty() else np.flip(self.video.get(), axis=0)

    def copy(self) -> Mirror:
        return Mirror()


class AsyncMirror(AsyncAudioVideoStreamHandler):
    def __init__(self) -> None:
        super().__init__(input_sample_rate=48000, output_sample_rate=48000)
        self.audio: asyncio.Queue[Any] = asyncio.Queue()
        self.video: asyncio.Queue[Any] = asyncio.Queue()

    async def receive(self, frame: Any) -> None:
        await self.audio.put(frame)

    async def emit(self) -> Any:
        return await wait_for_item(self.audio)

    async def video_receive(self, frame: np.ndarray) -> None:
        await self.video.put(frame)

    async def video_emit(self) -> Any:
        frame = await wait_for_item(self.video)
        return None if frame is None else np.flip(frame, axis=0)

    def copy(self) -> AsyncMirror:
        return AsyncMirror()


@pytest.mark.parametrize("handler_type", [Mirror, AsyncMirror])
async def test_audio_video_handlers_receive_and_emit_both(handler_type: type) -> None:
    stream = Stream(handler_type(), modality="audio-video")
    audio = audio_frames(noise(0.1, 48000))
    video = frames(4)
    out = await exchange(stream, [x for pair in zip(audio, video + [None]) for x in pair if x is not None], gap_s=0.005)
    got_video = [item for item in out if isinstance(item, VideoFrame)]
    assert [index_of(f.image[::-1]) for f in got_video] == [0, 1, 2, 3]  # flipped back = the input
    assert all(f.image[-1, 0, 2] == 255 for f in got_video)  # the top row is now at the bottom
    got_audio = [item for item in out if isinstance(item, AudioChunk)]
    assert np.array_equal(np.concatenate([c.samples for c in got_audio], axis=1), np.concatenate([c.samples for c in audio], axis=1))


# -------------------------------------------------------------------------- video functions
async def test_video_function_runs_in_a_worker_thread_and_returns_frames_and_outputs() -> None:
    threads: set[str] = set()

    def detect(image: np.ndarray, conf_threshold: float = 0.3) -> Any:
        threads.add(threading.current_thread().name)
        image[0, 0] = 9  # the function gets its own copy
        return np.flip(image, axis=0), AdditionalOutputs(index_of(image), conf_threshold)

    stream = Stream(detect, modality="video", mode="send-receive")
    source = frames(5)
    out = await exchange(stream, source, gap_s=0.01)
    video = [item for item in out if isinstance(item, VideoFrame)]
    assert [f.pts for f in video] == [f.pts for f in source]  # output keeps the input's timing
    assert [o.args for o in out if isinstance(o, AdditionalOutputs)] == [(i, 0.3) for i in range(5)]
    assert threading.main_thread().name not in threads
    assert source[0].image[0, 0, 0] == 0


async def test_video_function_that_needs_inputs_asks_once_and_passes_frames_until_set() -> None:
    calls: list[Any] = []

    def needs(image: np.ndarray, threshold: float) -> np.ndarray:
        calls.append(threshold)
        return 255 - image

    stream = Stream(needs, modality="video")
    async with stream.session("v", transport="test") as session:
        await session.send(frames(1)[0])
        with anyio.fail_after(5):
            assert await session.receive() == Message(type="send_input", data=[])
            first = await session.receive()
        assert index_of(first.image) == 0  # shown as it is until inputs arrive
        stream.set_input("v", 0.5)
        await session.send(frames(2)[1])
        with anyio.fail_after(5):
            second = await session.receive()
    assert calls == [0.5] and index_of(255 - second.image) == 1


async def test_send_mode_sends_no_media_but_keeps_additional_outputs() -> None:
    def count(image: np.ndarray) -> Any:
        return image, AdditionalOutputs(index_of(image))

    out = await exchange(Stream(count, modality="video", mode="send"), frames(3), gap_s=0.01)
    assert out == [AdditionalOutputs(0), AdditionalOutputs(1), AdditionalOutputs(2)]
    out = await exchange(Stream(Outputs(), modality="audio", mode="send"), audio_frames(noise(0.06, 48000)))
    assert [type(item) for item in out] == [AdditionalOutputs] * 3


async def test_client_messages_reach_no_handler_but_flow_on() -> None:
    out = await exchange(Stream(lambda image: image, modality="video"), [frames(1)[0], "hi"])
    assert ClientMessage(data="hi") in out
    out = await exchange(Stream(Echo(), modality="audio"), ["hi", *audio_frames(noise(0.04, 48000))])
    assert len([item for item in out if isinstance(item, AudioChunk)]) == 2


# ------------------------------------------------------------------------------ skip_frames
@pytest.mark.parametrize("video_buffer", [1, 8])
async def test_skip_frames_keeps_one_frame_and_a_slow_handler_always_gets_the_newest(video_buffer: int) -> None:
    sent: list[int] = []
    calls: list[tuple[int, int]] = []

    def process_image(image: np.ndarray) -> np.ndarray:
        calls.append((index_of(image), sent[-1]))
        time.sleep(0.2)
        return np.flip(image, axis=0)

    stream = Stream(VideoStreamHandler(process_image, skip_frames=True), modality="video")
    depths: list[int] = []
    outputs: list[VideoFrame] = []
    async with stream.session("skip", transport="test", video_buffer=video_buffer) as session:

        async def read() -> None:
            async for item in session:
                outputs.append(item)

        async with anyio.create_task_group() as group:
            group.start_soon(read)
            started = anyio.current_time()
            for i, frame in enumerate(frames(48)):  # 1.6 s at 30 fps
                await anyio.sleep(max(0.0, started + i / 30 - anyio.current_time()))
                sent.append(i)
                await session.send(frame)
                depths.append(session.statistics()["video_in"])
            await anyio.sleep(0.45)
            group.cancel_scope.cancel()
    if video_buffer == 1:
        assert max(depths) <= 1
    processed = [index for index, _ in calls]
    assert 4 <= len(processed) <= 10  # ~8 calls of 200 ms in 1.6 s, not 48
    assert processed == sorted(processed)
    for index, newest_sent in calls[1:]:
        assert index >= newest_sent - 1  # the newest frame (or the one that arrived as the call began)
    assert [index_of(f.image[::-1]) for f in outputs] == processed[: len(outputs)]


async def test_without_skip_frames_a_deep_buffer_serves_old_frames() -> None:
    sent: list[int] = []
    lags: list[int] = []

    def slow(image: np.ndarray) -> np.ndarray:
        lags.append(sent[-1] - index_of(image))
        time.sleep(0.1)
        return image

    stream = Stream(slow, modality="video")
    async with stream.session("noskip", transport="test", video_buffer=8) as session:
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: _drain(session))
            for i, frame in enumerate(frames(30)):
                sent.append(i)
                await session.send(frame)
                await anyio.sleep(1 / 30)
            group.cancel_scope.cancel()
    assert max(lags) >= 3  # the contrast: frames wait in the queue


async def _drain(session: Any) -> None:
    async for _ in session:
        pass


async def test_skip_frames_operator_drains_a_channel_and_keeps_messages() -> None:
    send, receive = anyio.create_memory_object_stream[Any](16)
    items = [*frames(3), ClientMessage(data="m"), *frames(5)[3:]]
    for item in items:
        send.send_nowait(item)
    send.close()
    out = [item async for item in skip_frames(receive)]
    assert out == [ClientMessage(data="m"), items[-1]]
    with pytest.raises(GraphError, match="drain"):
        async for _ in skip_frames(_agen(frames(1))):
            pass


async def _agen(items: list[Any]) -> Any:
    for item in items:
        yield item


# -------------------------------------------------------------------------------------- fps
async def test_fps_stamps_and_paces_frames_with_an_injected_clock() -> None:
    now = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    out = [item async for item in fps(_agen([*frames(3), Log(data="x"), frames(4)[3]]), 10, clock=lambda: now[0], sleep=sleep)]
    video = [item for item in out if isinstance(item, VideoFrame)]
    assert [f.pts for f in video] == [0, 9000, 18000, 27000] and video[0].time_base == Fraction(1, 90000)
    assert waits == [0.1, 0.1, 0.1]
    assert Log(data="x") in out
    with pytest.raises(ConfigurationError):
        async for _ in fps(_agen([]), 0):
            pass


async def test_fps_re_anchors_after_a_stall_instead_of_bursting() -> None:
    now = [0.0]
    waits: list[float] = []

    async def source() -> Any:
        for i, frame in enumerate(frames(4)):
            if i == 2:
                now[0] += 1.0  # the producer stalled for a second
            yield frame

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        now[0] += seconds

    [item async for item in fps(source(), 10, clock=lambda: now[0], sleep=sleep)]
    assert waits == [0.1, 0.1]  # frames 1 and 3 wait; frame 2 goes at once after the stall


# ---------------------------------------------------------------------------- generators
async def test_receive_generators_sync_and_async_audio() -> None:
    def tones(count: int = 3) -> Any:
        for i in range(count):
            yield (16000, np.full((1, 1600), i, np.int16))

    async def atones() -> Any:
        for i in range(2):
            yield 16000, np.full(1600, i, np.int16), "mono"
        yield AdditionalOutputs("done")

    out = await exchange(Stream(tones, modality="audio", mode="receive"), [])
    audio = [item for item in out if isinstance(item, AudioChunk)]
    assert [(c.pts, int(c.samples[0, 0])) for c in audio] == [(0, 0), (1600, 1), (3200, 2)]  # one continuous stream
    out = await exchange(Stream(atones, modality="audio", mode="receive", additional_inputs=[]), [])
    assert [type(item).__name__ for item in out] == ["AudioChunk", "AudioChunk", "AdditionalOutputs"]


async def test_receive_generator_video_paced_at_fps() -> None:
    def generation() -> Any:
        for i in range(10):
            yield picture(i) if i % 2 else (picture(i), AdditionalOutputs(i))

    stream = Stream(VideoStreamHandler(generation, fps=50), modality="video", mode="receive")
    started = time.perf_counter()
    out = await exchange(stream, [])
    elapsed = time.perf_counter() - started
    video = [item for item in out if isinstance(item, VideoFrame)]
    assert [f.pts for f in video] == [i * 1800 for i in range(10)]
    assert [index_of(f.image) for f in video] == list(range(10))
    assert elapsed >= 0.17  # nine gaps of 20 ms
    assert [o.args for o in out if isinstance(o, AdditionalOutputs)] == [(0,), (2,), (4,), (6,), (8,)]


async def test_receive_generator_needing_inputs_asks_for_them() -> None:
    def countdown(steps: int) -> Any:
        for i in range(steps):
            yield (8000, np.full((1, 80), i, np.int16))

    stream = Stream(countdown, modality="audio", mode="receive")
    async with stream.session("gen", transport="test") as session:
        with anyio.fail_after(5):
            assert await session.receive() == Message(type="send_input", data=[])
        stream.set_input("gen", 2)
        with anyio.fail_after(5):
            out = [item async for item in session]
    assert len(out) == 2


async def test_webrtc_error_in_a_generator_reaches_the_client() -> None:
    def generation() -> Any:
        yield (8000, np.zeros((1, 80), np.int16))
        raise WebRTCError("This is a test error")

    out = await exchange(Stream(generation, modality="audio", mode="receive"), [])
    assert isinstance(out[0], AudioChunk)
    assert out[-1] == Error(message="This is a test error", kind="webrtc_error")


# ---------------------------------------------------------------------- configuration table
def a_generator() -> Any:
    yield None


@pytest.mark.parametrize(
    ("handler", "modality", "mode", "message"),
    [
        (lambda image: image, "audio", "send-receive", "ReplyOnPause"),
        (lambda: None, "audio", "receive", "generator function"),
        (lambda image: image, "video", "receive", "generator function"),
        (Echo(), "video", "send-receive", "audio handler"),
        (Echo(), "audio", "receive", "generator function yielding"),
        (Echo(), "audio-video", "send-receive", "AudioVideoStreamHandler"),
        (Mirror(), "audio-video", "send", "supports mode=.send-receive. only"),
        (Mirror(), "audio-video", "receive", "supports mode=.send-receive. only"),
        (lambda image: image, "audio-video", "send-receive", "not a function"),
        (VideoStreamHandler(lambda image: image), "audio", "send-receive", "modality='video'"),
        (VideoStreamHandler(lambda image: image), "video", "receive", "generator function"),
        (42, "video", "send-receive", "cannot serve a int"),
    ],
)
def test_unsupported_combinations_are_refused_clearly(handler: Any, modality: str, mode: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Stream(handler, modality=modality, mode=mode)  # type: ignore[arg-type]


def test_handlers_missing_methods_are_refused_at_construction() -> None:
    class Incomplete(StreamHandler):
        def receive(self, frame: Any) -> None:
            pass

    with pytest.raises(ConfigurationError, match="must implement emit, copy"):
        Stream(Incomplete(), modality="audio")

    class SameCopy(Echo):
        def copy(self) -> SameCopy:
            return self

    stream = Stream(SameCopy(), modality="audio")
    with pytest.raises(ConfigurationError, match="new handler"):
        stream.graph()


@pytest.mark.parametrize(
    ("handler", "modality", "mode"),
    [
        (Echo(), "audio", "send-receive"),
        (Echo(), "audio", "send"),
        (Mirror(), "audio-video", "send-receive"),
        (Mirror(), "audio", "send-receive"),
        (lambda image: image, "video", "send-receive"),
        (lambda image: image, "video", "send"),
        (VideoStreamHandler(lambda image: image, skip_frames=True), "video", "send"),
        (a_generator, "video", "receive"),
        (a_generator, "audio", "receive"),
        (VideoStreamHandler(a_generator, fps=5), "video", "receive"),
    ],
)
def test_supported_combinations(handler: Any, modality: str, mode: str) -> None:
    stream = Stream(handler, modality=modality, mode=mode)  # type: ignore[arg-type]
    assert stream.graph().modality in (modality, "audio-video")


def test_handler_options_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="expected_layout"):
        Echo(expected_layout="surround")
    with pytest.raises(ConfigurationError, match="output_sample_rate"):
        Echo(output_sample_rate=0)
    with pytest.warns(DeprecationWarning, match="output_frame_size"):
        handler = StreamHandler(output_frame_size=960)
    assert handler.output_frame_size == 480 and handler.fps == 30


async def test_handler_attributes_outside_a_session() -> None:
    handler = Echo()
    assert handler.latest_args == ["__webrtc_value__"] and handler.phone_mode is False and handler.loop is None
    handler.set_args([1, 2])
    assert handler.latest_args == ["__webrtc_value__", 1, 2]
    handler.phone_mode = True
    assert handler.phone_mode
    with pytest.raises(GraphError):
        handler.args_set  # noqa: B018
    with pytest.raises(GraphError):
        await handler.send_message("x")
