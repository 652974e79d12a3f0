"""Graphs build fresh pipelines per session; sessions run them, end cleanly and contain failures."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator

import anyio
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked

from flowrtc.errors import GraphError, SessionClosed, WebRTCError
from flowrtc.events import ClientMessage, CloseStream, Error, Log, Message
from flowrtc.graph import Graph, Ports
from flowrtc.media import AudioChunk, VideoFrame
from flowrtc.operators import handler, identity, operator, rechunk, resample, scoped
from flowrtc.session import Session, current_session, get_current_session
from flowrtc.testing import audio_frames

pytestmark = pytest.mark.anyio


async def play(session: Session, items: list[Any]) -> None:
    for item in items:
        await session.send(item)
    await session.end_input()


async def run_session(graph: Graph, items: list[Any], **options: Any) -> list[Any]:
    """Feed ``items`` and collect every output item until the session ends."""
    async with Session(graph, **options) as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(play, session, items)
            return [item async for item in session]


def picture(value: int = 0) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


# -- Graph ------------------------------------------------------------------------------------------
def test_graph_forms_and_their_ports() -> None:
    audio = Graph(audio=resample(16000))
    assert (audio.modality, audio.message_port) == ("audio", "audio")
    video = Graph(video=identity())
    assert (video.modality, video.message_port) == ("video", "video")
    both = Graph(audio=identity(), video=identity(), name="av")
    assert (both.modality, both.message_port, both.name) == ("audio-video", "audio", "av")
    built = Graph(build=lambda ports: ports.audio)
    assert (built.modality, built.message_port) == ("audio-video", "messages")
    assert repr(audio) == "Graph(audio=Pipe(resample), name='graph')"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs an audio pipe, a video pipe or a build function"),
        ({"audio": identity(), "build": lambda ports: ports.audio}, "not both"),
        ({"audio": 42}, "must be callable"),
    ],
)
def test_graph_rejects_bad_wiring(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(GraphError, match=message):
        Graph(**kwargs)


def test_graph_build_must_return_streams() -> None:
    graph = Graph(build=lambda ports: [ports.audio, 42], name="broken")
    with pytest.raises(GraphError, match="graph 'broken' built int, not an async stream"):
        graph.open(Ports(audio=aiter_of([]), video=aiter_of([]), messages=aiter_of([])))


async def aiter_of(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def test_graph_builds_fresh_pipelines_for_every_session(hello: AudioChunk) -> None:
    calls: list[Ports] = []

    def build(ports: Ports) -> Any:
        calls.append(ports)
        return ports.audio | rechunk(duration_ms=30)

    frames = audio_frames(hello)[:5]  # 800 samples: 3 frames of 240, then 80 left over
    for graph in (Graph(audio=rechunk(duration_ms=30)), Graph(build=build)):
        first, second = await run_session(graph, frames), await run_session(graph, frames)
        for out in (first, second):
            assert [(c.pts, c.n_samples) for c in out] == [(0, 240), (240, 240), (480, 240), (720, 80)]
    assert len(calls) == 2 and calls[0].audio is not calls[1].audio


# -- routing and ordering --------------------------------------------------------------------------
async def test_session_routes_items_by_type_and_keeps_messages_in_band(hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:3]
    items = [frames[0], "hello", frames[1], {"type": "ping"}, Log(data="from client"), frames[2]]
    out = await run_session(Graph(audio=identity()), items)
    assert out == [frames[0], ClientMessage(data="hello"), frames[1], ClientMessage(data={"type": "ping"}), Log(data="from client"), frames[2]]


async def test_build_graphs_get_messages_on_their_own_port(hello: AudioChunk) -> None:
    def build(ports: Ports) -> list[Any]:
        return [ports.audio, ports.messages, ports.video]

    frames = audio_frames(hello)[:2]
    video = VideoFrame(picture(), pts=0)
    out = await run_session(Graph(build=build), [frames[0], "text", video, frames[1]])
    assert [o for o in out if isinstance(o, AudioChunk)] == frames
    assert [o for o in out if isinstance(o, ClientMessage)] == [ClientMessage(data="text")]
    assert [o for o in out if isinstance(o, VideoFrame)] == [video]


async def test_audio_and_video_pipelines_run_side_by_side(hello: AudioChunk) -> None:
    graph = Graph(audio=resample(16000), video=handler(lambda image: image + 1))
    frames = audio_frames(hello)[:3]
    videos = [VideoFrame(picture(10), pts=3000 * i) for i in range(3)]
    out: list[Any] = []
    async with Session(graph, video_buffer=8) as session:
        for frame, video in zip(frames, videos):
            await session.send(frame)
            await session.send(video)
        await session.end_input()
        out = [item async for item in session]
    assert sum(c.n_samples for c in out if isinstance(c, AudioChunk)) == 3 * 320
    assert [(v.pts, int(v.image[0, 0, 0])) for v in out if isinstance(v, VideoFrame)] == [(0, 11), (3000, 11), (6000, 11)]


# -- bounded channels -------------------------------------------------------------------------------
def held_until(release: anyio.Event) -> Any:
    """A handler that keeps each frame until ``release`` is set."""

    async def wait_for_release(audio: Any) -> Any:
        await release.wait()
        return audio

    return handler(wait_for_release)


async def test_audio_input_is_bounded_and_applies_backpressure(hello: AudioChunk) -> None:
    release = anyio.Event()
    frames = audio_frames(hello)[:6]
    sent: list[int] = []
    async with Session(Graph(audio=held_until(release)), input_buffer=2, output_buffer=1) as session:

        async def sender() -> None:
            for frame in frames:
                await session.send(frame)
                sent.append(frame.pts)
            await session.end_input()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await wait_all_tasks_blocked()
            # One frame is in the handler, two wait in the channel, the sender waits for room.
            assert len(sent) == 3 and session.statistics()["audio_in"] == 2
            release.set()
            out = [item async for item in session]
    assert [c.pts for c in out] == [f.pts for f in frames]


async def test_send_nowait_takes_a_free_slot_or_says_it_would_block(hello: AudioChunk) -> None:
    release = anyio.Event()
    frames = audio_frames(hello)[:4]
    async with Session(Graph(audio=held_until(release)), input_buffer=2, output_buffer=1) as session:
        session.send_nowait(frames[0])
        await wait_all_tasks_blocked()  # the handler holds the first frame
        session.send_nowait(frames[1])
        session.send_nowait(frames[2])
        with pytest.raises(anyio.WouldBlock):
            session.send_nowait(frames[3])  # the port is full: nothing is lost, the caller keeps the frame
        assert session.statistics()["audio_in"] == 2
        release.set()
        await session.end_input()
        out = [item async for item in session]
    assert [c.pts for c in out] == [f.pts for f in frames[:3]]
    with pytest.raises(SessionClosed):
        session.send_nowait(frames[3])


async def test_video_input_drops_the_oldest_frame_when_full() -> None:
    release = anyio.Event()

    async def slow(image: np.ndarray) -> Any:
        await release.wait()
        return image

    async with Session(Graph(video=handler(slow)), video_buffer=1) as session:
        await session.send(VideoFrame(picture(1), pts=0))
        await wait_all_tasks_blocked()  # frame 0 is in the handler
        for value in (2, 3, 4):
            await session.send(VideoFrame(picture(value), pts=3000 * value))  # never blocks
        assert session.statistics()["video_in"] == 1
        release.set()
        await session.end_input()
        out = [int(v.image[0, 0, 0]) async for v in session]
    assert out == [1, 4]  # the handler sees the newest frame, not a backlog


# -- ending cleanly ----------------------------------------------------------------------------------
async def test_ending_the_input_ends_the_session_and_leaves_no_task(hello: AudioChunk) -> None:
    tasks_before = len(asyncio.all_tasks())
    graph = Graph(audio=resample(16000) | rechunk(duration_ms=20))
    async with Session(graph) as session:
        assert len(asyncio.all_tasks()) > tasks_before
        out = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(play, session, audio_frames(hello))
            out = [item async for item in session]
    assert sum(c.n_samples for c in out) == hello.n_samples * 2
    assert session.closed.is_set()
    assert len(asyncio.all_tasks()) == tasks_before


async def test_leaving_early_closes_the_graph_and_leaves_no_task(hello: AudioChunk) -> None:
    closed: list[str] = []

    @operator
    async def endless(source: Any) -> AsyncIterator[Any]:
        try:
            async with scoped(source) as items:
                async for item in items:
                    while True:
                        yield item
        finally:
            closed.append("graph closed")

    tasks_before = len(asyncio.all_tasks())
    async with Session(Graph(audio=endless())) as session:
        await session.send(audio_frames(hello)[0])
        received = 0
        async for _ in session:
            received += 1
            if received == 50:
                break  # the consumer goes away while the graph still produces
    assert received == 50 and closed == ["graph closed"]
    assert len(asyncio.all_tasks()) == tasks_before
    with pytest.raises(SessionClosed):
        await session.send(audio_frames(hello)[1])


def test_no_thread_or_file_is_left_behind(hello: AudioChunk, media_dir: Any) -> None:
    import os

    from flowrtc.testing import load_audio

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    def echo(audio: Any) -> Any:  # sync: runs in worker threads
        return audio

    threads_before = set(threading.enumerate())
    files_before = open_files()

    async def main() -> list[Any]:
        tasks_before = len(asyncio.all_tasks())
        audio = load_audio(media_dir / "asterisk_hello-world_8k.wav")
        out = await run_session(Graph(audio=handler(echo) | resample(16000)), audio_frames(audio))
        assert len(asyncio.all_tasks()) == tasks_before
        return out

    out = anyio.run(main)
    assert sum(c.n_samples for c in out) == hello.n_samples * 2
    new_threads = [t for t in threading.enumerate() if t not in threads_before]
    for thread in new_threads:  # anyio's idle workers are told to stop when the loop ends
        thread.join(timeout=5)
    assert [t.name for t in new_threads if t.is_alive()] == []
    assert open_files() == files_before


# -- failures stay in their session -----------------------------------------------------------------
async def test_an_error_in_user_code_becomes_an_error_event_and_ends_only_that_session(hello: AudioChunk) -> None:
    frames = audio_frames(hello)
    bad_failed = anyio.Event()

    def fails_on_the_fifth(audio: Any) -> Any:
        rate, array = audio
        if array[0, 0] == frames[4].samples[0, 0]:
            raise RuntimeError("handler crashed")
        return audio

    async def waits_for_the_other(audio: Any) -> Any:
        await bad_failed.wait()  # keep running while the other session fails
        return audio

    results: dict[str, list[Any]] = {}

    async def bad() -> None:
        results["bad"] = await run_session(Graph(audio=handler(fails_on_the_fifth), name="bad"), frames[:10])
        bad_failed.set()

    async def good() -> None:
        results["good"] = await run_session(Graph(audio=handler(waits_for_the_other), name="good"), frames)

    tasks_before = len(asyncio.all_tasks())
    async with anyio.create_task_group() as tg:
        tg.start_soon(good)
        tg.start_soon(bad)
    assert results["bad"][:4] == frames[:4]
    assert results["bad"][4:] == [Error(message="handler crashed", kind="RuntimeError")]
    assert results["good"] == frames  # every frame, although the other session failed meanwhile
    assert len(asyncio.all_tasks()) == tasks_before


async def test_after_an_error_input_raises_session_closed(hello: AudioChunk) -> None:
    async def refuse(audio: Any) -> Any:
        raise WebRTCError("no thanks")

    frame = audio_frames(hello)[0]
    async with Session(Graph(audio=handler(refuse))) as session:
        await session.send(frame)
        out = [item async for item in session]  # the consumer is not cancelled: it reads the Error
        assert out == [Error(message="no thanks", kind="webrtc_error")]
        assert isinstance(session.error, WebRTCError)
        with pytest.raises(SessionClosed, match="has ended"):
            await session.send(frame)


async def test_close_stream_ends_the_session_after_what_was_queued(hello: AudioChunk) -> None:
    frames = audio_frames(hello)

    def stop_at_third(audio: Any) -> Any:
        rate, array = audio
        return CloseStream("bye") if np.array_equal(array, frames[2].samples) else audio

    async with Session(Graph(audio=handler(stop_at_third))) as session:
        async with anyio.create_task_group() as tg:

            async def feed() -> None:
                with pytest.raises(SessionClosed):
                    for frame in frames:
                        await session.send(frame)

            tg.start_soon(feed)
            out = [item async for item in session]
    assert out == [frames[0], frames[1], CloseStream("bye")]


async def test_time_limit_sends_close_stream() -> None:
    async def never(audio: Any) -> Any:
        await anyio.sleep_forever()

    async with Session(Graph(audio=handler(never)), time_limit_s=0.05) as session:
        await session.send(AudioChunk.silence(0.02, 8000))
        out = [item async for item in session]
    assert out == [CloseStream("time limit reached")]


async def test_cancel_ends_the_session_at_once(hello: AudioChunk) -> None:
    tasks_before = len(asyncio.all_tasks())
    async with Session(Graph(audio=identity())) as session:
        await session.send(audio_frames(hello)[0])
        session.cancel()
        await anyio.sleep(0)
        pytest.fail("cancel() must end the session block")  # pragma: no cover
    assert session.closed.is_set() and len(asyncio.all_tasks()) == tasks_before


# -- session state seen by user code ----------------------------------------------------------------
async def test_current_session_is_visible_in_graph_tasks_and_worker_threads(hello: AudioChunk) -> None:
    seen: list[Any] = []

    def in_thread(audio: Any) -> Any:
        seen.append(("thread", current_session()))
        return audio

    async def on_loop(audio: Any) -> Any:
        seen.append(("loop", get_current_session()))
        return audio

    assert current_session() is None
    with pytest.raises(GraphError, match="no flowrtc session"):
        get_current_session()
    async with Session(Graph(audio=handler(in_thread) | handler(on_loop)), session_id="abc") as session:
        await play(session, audio_frames(hello)[:1])
        assert [item async for item in session] == audio_frames(hello)[:1]
    assert seen == [("thread", session), ("loop", session)] and session.id == "abc"
    assert current_session() is None


async def test_inputs_set_input_and_wait_for_args(hello: AudioChunk) -> None:
    frames = audio_frames(hello)[:2]
    calls: list[tuple[Any, ...]] = []

    def uses_args(audio: Any, *args: Any) -> Any:
        calls.append(args)
        return audio

    graph = Graph(audio=handler(uses_args, args=lambda: get_current_session().latest_args))
    async with Session(graph, initial_args=["first"]) as session:
        assert session.args_set.is_set()
        await session.send(frames[0])
        assert await session.receive() == frames[0]
        session.set_input("second", 2)
        await session.send(frames[1])
        assert await session.receive() == frames[1]

        assert await session.wait_for_args() == ["second", 2]  # set: nothing asked, no wait
        session.clear_args()
        answers: list[list[Any]] = []

        async def waits() -> None:
            answers.append(await session.wait_for_args())

        async with anyio.create_task_group() as tg:
            tg.start_soon(waits)
            tg.start_soon(waits)  # two callers at once share one question
            await wait_all_tasks_blocked()
            session.set_input("answered")
        assert answers == [["answered"], ["answered"]]
        assert await session.receive() == Message(type="send_input", data=[])
        await session.send(frames[0])
        assert await session.receive() == frames[0]  # the second caller asked nothing
    assert calls == [("first",), ("second", 2), ("answered",)]

    async with Session(graph, phone_mode=True) as phone:
        assert await phone.wait_for_args() == []  # nobody can answer on a phone line


async def test_emit_and_emit_nowait_share_the_ordered_output() -> None:
    async with Session(Graph(audio=identity()), output_buffer=2) as session:
        await session.emit(Log(data="one"))
        assert session.emit_nowait(Log(data="two")) is True
        assert session.emit_nowait(Log(data="three")) is False  # full: dropped, not blocked
        assert session.statistics()["output"] == 2
        assert [await session.receive(), await session.receive()] == [Log(data="one"), Log(data="two")]
        await session.end_input()
        with pytest.raises(anyio.EndOfStream):
            await session.receive()


async def test_a_graph_that_fails_to_build_leaves_no_open_channel() -> None:
    import gc

    from flowrtc.graph import Graph
    from flowrtc.session import Session, current_session

    def broken(ports: object) -> object:
        raise RuntimeError("cannot build")

    with pytest.raises(RuntimeError, match="cannot build"):
        async with Session(Graph(build=broken)):
            pass
    gc.collect()  # an unclosed memory stream would warn here (warnings are errors)
    assert current_session() is None
