"""FastRTC's WebSocket protocol at WS /websocket/offer, against a real uvicorn server and websockets clients."""

from __future__ import annotations

import json
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import numpy as np
import pytest
from websockets.asyncio.client import connect
from ws_support import (
    Received,
    b64,
    collect,
    echo_graph,
    expected_reply_s,
    mulaw_frames,
    paced,
    payload_samples,
    pcm_frames,
    resource_snapshot,
    rms,
    serve,
    settle,
)

from flowrtc import AudioChunk, CloseStream, Graph, Log, decode, get_current_session
from flowrtc.operators.core import operator, scoped
from flowrtc.stream import Stream
from flowrtc.testing import load_audio

pytestmark = pytest.mark.anyio

HELLO = "asterisk_hello-world_8k.wav"  # 1.40 s "Hello world."
SILENCE_S = 0.6


def speech(media_dir: Any, rate: int) -> AudioChunk:
    return load_audio(media_dir / HELLO, sample_rate=rate)


def silence(rate: int, seconds: float = SILENCE_S) -> AudioChunk:
    return AudioChunk(np.zeros((1, int(rate * seconds)), np.int16), rate)


def media(frame: bytes) -> str:
    return json.dumps({"event": "media", "media": {"payload": b64(frame)}})


async def talk(ws: Any, chunks: list[AudioChunk], *, binary: bool = False) -> float:
    """Send chunks as 20 ms messages in real time; returns when the last one went out."""
    frames = [f for chunk in chunks for f in (pcm_frames(chunk) if binary else mulaw_frames(chunk))]
    async for _, frame in paced(frames):
        await ws.send(frame if binary else media(frame))
    return anyio.current_time()


class RatedEcho(Graph):
    """A handler stating its rates, as classic FastRTC handlers do."""

    input_sample_rate = 16000
    output_sample_rate = 16000

    def __init__(self) -> None:
        super().__init__(audio=echo_graph(16000).audio, name="rated_echo")


@pytest.mark.parametrize("rate, negotiate", [(16000, True), (48000, False)])
async def test_speech_in_reply_out(media_dir: Any, rate: int, negotiate: bool) -> None:
    """µ-law in at 16 kHz (stated in start) and 48 kHz (FastRTC's default), reply paced out at 24 kHz."""
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=None)
    clip = speech(media_dir, rate)
    async with serve(stream) as host:
        baseline = resource_snapshot()
        async with connect(f"ws://{host}/websocket/offer") as ws:
            start: dict[str, Any] = {"event": "start", "websocket_id": f"talk-{rate}"}
            if negotiate:
                start["sample_rate"] = rate
            await ws.send(json.dumps(start))
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                await talk(ws, [clip, silence(rate)])
                assert stream.hub.transport(f"talk-{rate}") == "websocket"
                await anyio.sleep(expected_reply_s(clip))
                await ws.send('{"event":"stop"}')
        acks = received.of("started")
        if negotiate:
            assert acks[0][1] == {
                "event": "started", "websocket_id": "talk-16000", "format": "mulaw",
                "sample_rate": 16000, "output_sample_rate": 24000, "frame_ms": 20,
            }
        else:
            assert not acks, "a plain FastRTC start gets no extra message"
        replies = received.of("media")
        audio = np.concatenate([payload_samples(m) for _, m in replies])
        assert all(len(payload_samples(m)) == 480 for _, m in replies[:-1]), "20 ms frames at 24 kHz"
        # The reply is the utterance (speech + the 300 ms pause that ended it), at 24 kHz.
        assert abs(len(audio) / 24000 - expected_reply_s(clip)) < 0.1
        assert rms(audio) > 1000
        span_s = replies[-1][0] - replies[0][0]
        assert span_s > len(audio) / 24000 - 0.25, f"reply was flooded out in {span_s:.2f} s, not paced"
        assert received.close_code == 1000
        await settle(stream, baseline)


async def test_handler_rates_are_the_defaults(media_dir: Any) -> None:
    """Without a rate in start, the client sends at the handler's input_sample_rate and hears its output rate."""
    stream = Stream(RatedEcho(), modality="audio", concurrency_limit=None)
    clip = speech(media_dir, 16000)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "rated"}))
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                await talk(ws, [clip, silence(16000)])
                await anyio.sleep(expected_reply_s(clip))
                await ws.send('{"event":"stop"}')
    replies = received.of("media")
    assert {len(payload_samples(m)) for _, m in replies[:-1]} == {320}, "20 ms at 16 kHz"
    assert abs(sum(len(payload_samples(m)) for _, m in replies) / 16000 - expected_reply_s(clip)) < 0.1


async def test_barge_in_clears_queued_audio(media_dir: Any) -> None:
    """Speech during a reply: the client gets clear, then nothing more of the old reply."""
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=None)
    clip = speech(media_dir, 16000)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "barge", "sample_rate": 16000}))
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                await talk(ws, [clip, silence(16000, 0.8)])  # the reply starts 0.3 s into this silence
                interrupt_sent = anyio.current_time()
                second_done = await talk(ws, [clip.slice(0, 8000)])  # 0.5 s of new speech, no pause yet
                await anyio.sleep(0.2)
                await ws.send('{"event":"stop"}')
    clears = received.of("clear")
    assert len(clears) == 1 and clears[0][1] == {"event": "clear"}
    clear_at = clears[0][0]
    assert interrupt_sent < clear_at < second_done, "clear while the user is still talking, not after a pause"
    old = [t for t, _ in received.of("media") if t < clear_at]
    after = [t for t, _ in received.of("media") if t > clear_at]
    assert old, "the first reply was playing"
    assert not after, f"{len(after)} frames of the old reply arrived after clear"
    assert len(old) * 0.02 < clip.duration_s, "the old reply was cut short"


async def test_pcm16_binary_frames(media_dir: Any) -> None:
    """Negotiated PCM16: binary s16le frames both ways, at the stated rates."""
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=None)
    clip = speech(media_dir, 16000)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "pcm", "format": "pcm16", "sample_rate": 16000, "output_sample_rate": 48000}))
            ack = json.loads(await ws.recv())
            assert ack["format"] == "pcm16" and ack["sample_rate"] == 16000 and ack["output_sample_rate"] == 48000
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                await talk(ws, [clip, silence(16000)], binary=True)
                await anyio.sleep(expected_reply_s(clip))
                await ws.send('{"event":"stop"}')
    frames = [m for _, m in received.messages if isinstance(m, bytes)]
    assert {len(f) for f in frames[:-1]} == {1920}, "20 ms of 48 kHz s16le per binary frame"
    audio = np.frombuffer(b"".join(frames), "<i2")
    assert abs(len(audio) / 48000 - expected_reply_s(clip)) < 0.1
    assert rms(audio) > 1000


async def test_concurrency_limit_answer(media_dir: Any) -> None:
    """Over the limit: FastRTC's failed JSON, then close 1013; the first session keeps going."""
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=1)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as first:
            await first.send(json.dumps({"event": "start", "websocket_id": "one"}))
            await first.send('{"event":"ping"}')
            assert json.loads(await first.recv()) == {"event": "pong"}
            async with connect(f"ws://{host}/websocket/offer") as second:
                await second.send(json.dumps({"event": "start", "websocket_id": "two"}))
                assert json.loads(await second.recv()) == {"status": "failed", "meta": {"error": "concurrency_limit_reached", "limit": 1}}
                received = Received()
                await collect(second, received)
                assert received.close_code == 1013
            await first.send('{"event":"ping"}')
            assert json.loads(await first.recv()) == {"event": "pong"}
            assert stream.hub.ids() == ["one"]


@operator
async def chatty(source: AsyncIterable[Any], closed: list[str]) -> AsyncIterator[Any]:
    """Logs the transport it runs on once, then swallows input; records that it was closed."""
    try:
        session = get_current_session()
        yield Log(data=f"transport={type(session.transport).__name__}")
        async with scoped(source) as items:
            async for _ in items:
                pass
    finally:
        closed.append("closed")


async def test_messages_context_and_cleanup_on_disconnect() -> None:
    """FastRTC messages go out as {"type", "data"}; the socket is the session's transport; a dropped client ends the session."""
    closed: list[str] = []
    stream = Stream(Graph(audio=decode() | chatty(closed)), modality="audio", concurrency_limit=None)
    async with serve(stream) as host:
        baseline = resource_snapshot()
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "chat"}))
            assert json.loads(await ws.recv()) == {"type": "log", "data": "transport=WebSocket"}
        # closed without a stop
        await settle(stream, baseline)
        assert closed == ["closed"]


async def test_time_limit_and_close_stream() -> None:
    """time_limit ends a WebSocket session: end_stream, then close 1000 with the reason."""
    stream = Stream(Graph(audio=decode() | chatty([])), modality="audio", concurrency_limit=None, time_limit=0.3)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "timed"}))
            received = Received()
            with anyio.fail_after(3):
                await collect(ws, received)
    assert {"type": "end_stream", "data": "time limit reached"} in [m for _, m in received.messages]
    assert (received.close_code, received.close_reason) == (1000, "time limit reached")


@operator
async def failing(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                raise RuntimeError("handler broke")
            yield item


async def test_handler_error_is_reported_and_closes() -> None:
    stream = Stream(Graph(audio=decode() | failing()), modality="audio", concurrency_limit=None)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "broken"}))
            await ws.send(media(b"\xff" * 960))
            received = Received()
            await collect(ws, received)
    errors = received.of("error")
    assert errors and errors[0][1]["kind"] == "RuntimeError" and errors[0][1]["message"] == "handler broke"
    assert received.close_code == 1011


async def test_close_stream_from_handler_waits_for_queued_audio() -> None:
    """A reply then CloseStream: all of the reply is delivered before the close."""

    @operator
    async def goodbye(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    yield AudioChunk(np.full((1, 24000), 3000, np.int16), 24000)  # 1 s
                    yield CloseStream("bye")
                    return

    stream = Stream(Graph(audio=decode() | goodbye()), modality="audio", concurrency_limit=None)
    async with serve(stream) as host:
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "bye"}))
            await ws.send(media(b"\xff" * 960))
            received = Received()
            await collect(ws, received)
    assert sum(len(payload_samples(m)) for _, m in received.of("media")) == 24000
    assert (received.close_code, received.close_reason) == (1000, "bye")


async def test_playout_is_bounded_and_clear_drops_the_frame_in_flight() -> None:
    from flowrtc.adapters.websocket import Playout

    playout = Playout(max_queued_s=0.06)
    frame = AudioChunk(np.zeros((1, 320), np.int16), 16000)  # 20 ms
    for _ in range(3):
        await playout.put(frame)
    with anyio.move_on_after(0.05) as blocked:
        await playout.put(frame)  # 60 ms queued: the producer waits
    assert blocked.cancelled_caught
    generation, _ = await playout.get()
    await playout.put(frame)  # room again
    assert playout.clear() == 3 and generation != playout.generation, "the sender must drop what it holds"
    playout.done()
    with anyio.fail_after(1):
        await playout.drained()



async def test_reply_on_pause_reply_and_barge_in(media_dir: Any) -> None:
    """FastRTC's protocol with a ReplyOnPause echo: a reply after the pause, clear when the user talks over it."""
    from flowrtc import ReplyOnPause

    def echo(audio: tuple[int, np.ndarray]) -> Any:
        yield audio

    stream = Stream(ReplyOnPause(echo, input_sample_rate=16000), modality="audio", concurrency_limit=None)
    clip = speech(media_dir, 16000)
    async with serve(stream) as host:
        baseline = resource_snapshot()
        async with connect(f"ws://{host}/websocket/offer") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "rop"}))  # plain FastRTC start: 16 kHz from the handler
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                await talk(ws, [clip, silence(16000, 0.8)])
                with anyio.fail_after(3):
                    while not received.of("media"):  # keep the line open until the reply plays
                        await talk(ws, [silence(16000, 0.1)])
                barge_at = anyio.current_time()
                barge_end = await talk(ws, [clip])  # talks over the reply
                await ws.send('{"event":"stop"}')
        logs = [m["data"] for _, m in received.messages if isinstance(m, dict) and m.get("type") == "log"]
        assert logs[:3] == ["started_talking", "pause_detected", "response_starting"]
        clears = received.of("clear")
        # The next pause could only end 0.35 s after this speech: a clear before that came from the onset.
        assert clears and barge_at < clears[0][0] < barge_end + 0.3, (barge_at, clears[:1], barge_end)
        assert not [t for t, _ in received.of("media") if t > clears[0][0]]
        await settle(stream, baseline)


@pytest.mark.parametrize("early_pause_ms", [None, 192])
async def test_a_short_gap_between_sentences_is_one_turn_over_a_real_websocket(media_dir: Any, early_pause_ms: float | None) -> None:
    """"Goodbye." and "Thank you for trying out ..." with a pause of ~0.42 s between their sounds,
    under the 448 ms that ends a turn: Silero hears the second sentence late, and without vad's
    resume hold the turn ended in the gap (tests/test_vad_operator.py).
    With ``early_pause_ms`` the gap starts an early call, which is withdrawn: nothing of it reaches the client."""
    from flowrtc import ReplyOnPause

    calls: list[float] = []

    def quiet(audio: tuple[int, np.ndarray]) -> Any:
        calls.append(audio[1].shape[1] / audio[0])
        yield audio[0], np.zeros((1, audio[0] // 10), np.int16)

    thanks = load_audio(media_dir / "asterisk_demo-thanks_8k.wav", sample_rate=16000)
    goodbye, rest = thanks.slice(0, round(1.12 * 16000)), thanks.slice(round(1.25 * 16000), thanks.n_samples)
    stream = Stream(ReplyOnPause(quiet, input_sample_rate=16000, early_pause_ms=early_pause_ms), modality="audio", concurrency_limit=None)
    async with serve(stream) as host, connect(f"ws://{host}/websocket/offer") as ws:
        await ws.send(json.dumps({"event": "start", "websocket_id": "gap"}))
        received = Received()
        async with anyio.create_task_group() as group:
            group.start_soon(collect, ws, received)
            await talk(ws, [goodbye, silence(16000, 0.28), rest, silence(16000, 1.0)])
            await ws.send('{"event":"stop"}')
    logs = [m["data"] for _, m in received.messages if isinstance(m, dict) and m.get("type") == "log"]
    assert logs.count("pause_detected") == 1, logs
    (decided,) = [t for t, m in received.messages if isinstance(m, dict) and m.get("data") == "pause_detected"]
    assert received.of("media") and all(t >= decided for t, _ in received.of("media"))  # only the turn's answer
    assert not received.of("clear")
    assert 1 <= len(calls) <= (1 if early_pause_ms is None else 2) and calls[-1] == max(calls)  # the whole turn answered


class EchoHandler:
    """A FastRTC-style AsyncStreamHandler: echoes each frame, records its context and its shutdown."""

    shutdowns: list[str] = []

    @staticmethod
    def make() -> Any:
        import asyncio

        from flowrtc import AsyncStreamHandler, get_current_context, wait_for_item

        class Echo(AsyncStreamHandler):
            def __init__(self) -> None:
                super().__init__(input_sample_rate=8000, output_sample_rate=8000)
                self.queue: asyncio.Queue[Any] = asyncio.Queue()
                self.context_id = ""

            async def receive(self, frame: tuple[int, np.ndarray]) -> None:
                self.context_id = get_current_context().webrtc_id
                await self.queue.put(frame)

            async def emit(self) -> Any:
                return await wait_for_item(self.queue)

            def copy(self) -> Echo:
                return Echo()

            async def shutdown(self) -> None:
                EchoHandler.shutdowns.append(self.context_id)

        return Echo()


@pytest.mark.parametrize("route", ["websocket", "phone"])
async def test_classic_handler_echo_and_shutdown_on_both_routes(media_dir: Any, route: str) -> None:
    """An AsyncStreamHandler over each route: audio echoed, the context's id is the session's, shutdown() runs on disconnect."""
    EchoHandler.shutdowns.clear()
    stream = Stream(EchoHandler.make(), modality="audio", concurrency_limit=None)
    clip = load_audio(media_dir / HELLO)  # 8 kHz
    sid = "MZ" + "e" * 32
    async with serve(stream) as host:
        baseline = resource_snapshot()
        path = "/websocket/offer" if route == "websocket" else "/telephone/handler"
        async with connect(f"ws://{host}{path}") as ws:
            if route == "websocket":
                await ws.send(json.dumps({"event": "start", "websocket_id": sid}))
            else:
                await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": {
                    "streamSid": sid, "callSid": "CA1", "accountSid": "AC1", "tracks": ["inbound"], "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
            received = Received()
            async with anyio.create_task_group() as group:
                group.start_soon(collect, ws, received)
                async for index, frame in paced(mulaw_frames(clip)):
                    message: dict[str, Any] = {"event": "media", "media": {"payload": b64(frame)}}
                    if route == "phone":
                        message.update(streamSid=sid, sequenceNumber=str(index + 2))
                    await ws.send(json.dumps(message))
                await anyio.sleep(0.3)
                group.cancel_scope.cancel()
        # the client went away without stop
        await settle(stream, baseline)
    echoed = np.concatenate([payload_samples(m) for _, m in received.of("media")])
    assert abs(len(echoed) - clip.n_samples) <= 160 and rms(echoed) > 1000
    assert EchoHandler.shutdowns == [sid], "shutdown() ran once, with the session's context"
