"""Helpers for the WebSocket and phone route tests: a real uvicorn server, a turn-taking echo graph, clients."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import numpy as np
import uvicorn
from litestar import Litestar, Router
from websockets.exceptions import ConnectionClosed

from flowrtc import AudioChunk, Graph, Interrupt, decode, handler, resample
from flowrtc.adapters.websocket import websocket_route_handlers
from flowrtc.g711 import mulaw_to_pcm16
from flowrtc.operators.core import operator, scoped

SPEECH_RMS = 300.0


@asynccontextmanager
async def serve(
    stream: Any = None, *, prefix: str = "", route_handlers: list[Any] | None = None, app: Any = None
) -> AsyncIterator[str]:
    """Serve ``stream``'s WebSocket and telephone routes (under ``prefix``), or any ASGI ``app``,
    on 127.0.0.1; yields ``host:port``."""
    if app is None:
        handlers = route_handlers if route_handlers is not None else websocket_route_handlers(stream)
        app = Litestar(route_handlers=[Router(path=prefix, route_handlers=handlers)] if prefix else handlers)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="websockets-sansio")
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(server.serve, [sock])
            while not server.started:
                await anyio.sleep(0.01)
            try:
                yield f"127.0.0.1:{port}"
            finally:
                server.should_exit = True
    finally:
        sock.close()


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


@operator
async def echo_turns(source: AsyncIterable[Any], *, silence_ms: float = 300.0) -> AsyncIterator[Any]:
    """Reply to each utterance with the utterance itself; speech during a reply interrupts it.

    A tiny energy-based turn taker, so the route tests do not depend on the VAD model.
    """
    frames: list[AudioChunk] = []
    speaking = False
    silent_ms = 0.0
    reply_ends_s = 0.0
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, AudioChunk):
                yield item
                continue
            loud = rms(item.samples) > SPEECH_RMS
            now_s = item.end_pts / item.sample_rate
            if loud and not speaking:
                speaking = True
                if now_s < reply_ends_s:
                    reply_ends_s = 0.0
                    yield Interrupt(media_time_s=now_s)
            if speaking:
                frames.append(item)
                silent_ms = 0.0 if loud else silent_ms + item.duration_s * 1000
                if silent_ms >= silence_ms:
                    utterance = AudioChunk.concat(frames)
                    frames, speaking = [], False
                    yield utterance.with_pts(item.end_pts)
                    reply_ends_s = now_s + utterance.duration_s


def expected_reply_s(chunk: AudioChunk, silence_ms: float = 300.0) -> float:
    """How long ``echo_turns`` replies to ``chunk`` (first loud 20 ms frame to the end of the pause)."""
    size = chunk.sample_rate // 50
    loud = [i for i in range(0, chunk.n_samples - size + 1, size) if rms(chunk.samples[:, i : i + size]) > SPEECH_RMS]
    return (loud[-1] - loud[0] + size) / chunk.sample_rate + silence_ms / 1000


def echo_graph(rate: int = 16000, **options: Any) -> Graph:
    """``decode() | resample(rate) | echo_turns()``: FastRTC-style turn echo at ``rate``."""
    return Graph(audio=decode() | resample(rate) | echo_turns(**options), name="echo_turns")


def dtmf_graph(seen: list[str]) -> Graph:
    """Answers keypad digit d with d × 100 ms of a 440 Hz tone; records every digit."""
    from flowrtc import Dtmf

    def on_digit(event: Dtmf) -> tuple[int, np.ndarray]:
        seen.append(event.digit)
        t = np.arange(int(800 * int(event.digit))) / 8000
        return 8000, (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)

    return Graph(audio=drop_audio() | handler(on_digit, on=Dtmf, convert=lambda e: e), name="dtmf")


@operator
async def drop_audio(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Consume input audio; pass events."""
    async with scoped(source) as items:
        async for item in items:
            if not isinstance(item, AudioChunk):
                yield item


def mulaw_frames(chunk: AudioChunk, frame_ms: float = 20) -> list[bytes]:
    size = int(chunk.sample_rate * frame_ms / 1000)
    codes = chunk.to_mulaw()
    return [codes[i : i + size] for i in range(0, len(codes), size)]


def pcm_frames(chunk: AudioChunk, frame_ms: float = 20) -> list[bytes]:
    size = int(chunk.sample_rate * frame_ms / 1000) * 2
    data = chunk.to_pcm()
    return [data[i : i + size] for i in range(0, len(data), size)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def payload_samples(message: dict[str, Any]) -> np.ndarray:
    return mulaw_to_pcm16(np.frombuffer(base64.b64decode(message["media"]["payload"]), np.uint8))


async def paced(frames: list[Any], frame_s: float = 0.02) -> AsyncIterator[tuple[int, Any]]:
    """Yield frames in real time (index, frame)."""
    start = anyio.current_time()
    for index, frame in enumerate(frames):
        delay = start + index * frame_s - anyio.current_time()
        if delay > 0:
            await anyio.sleep(delay)
        yield index, frame


class Received:
    """Everything a test client got, with arrival times."""

    def __init__(self) -> None:
        self.messages: list[tuple[float, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""

    def of(self, event: str) -> list[tuple[float, Any]]:
        return [(t, m) for t, m in self.messages if isinstance(m, dict) and m.get("event") == event]


async def collect(ws: Any, received: Received) -> None:
    """Read until the server closes; JSON text is decoded, binary kept as bytes."""
    from websockets.exceptions import ConnectionClosed

    try:
        async for raw in ws:
            message = json.loads(raw) if isinstance(raw, str) else raw
            received.messages.append((anyio.current_time(), message))
    except ConnectionClosed:
        pass
    received.close_code = ws.close_code
    received.close_reason = ws.close_reason or ""


def resource_snapshot() -> tuple[int, int]:
    """(asyncio tasks, threads) now."""
    return len(asyncio.all_tasks()), threading.active_count()


async def settle(stream: Any, baseline: tuple[int, int], timeout_s: float = 5.0) -> None:
    """Wait until no session is live and tasks/threads are back to ``baseline``; fail otherwise.

    One extra thread may stay (an idle anyio worker); the VAD engine's thread
    exits within ``WORKER_IDLE_S`` of its last batch, so it is waited for.
    """
    with anyio.move_on_after(timeout_s):
        while len(stream.hub) or resource_snapshot()[0] > baseline[0] or resource_snapshot()[1] > baseline[1] + 1:
            await anyio.sleep(0.02)
    assert len(stream.hub) == 0, f"sessions left: {stream.hub.ids()}"
    tasks, threads = resource_snapshot()
    assert tasks <= baseline[0], f"{tasks - baseline[0]} asyncio tasks left behind: {asyncio.all_tasks()}"
    assert threads <= baseline[1] + 1, f"threads grew from {baseline[1]} to {threads}"


# -- Twilio's side of a Media Stream ------------------------------------------------------------

ACCOUNT = "AC" + "a" * 32
CALL = "CA" + "b" * 32
STREAM_SID = "MZ" + "c" * 32


class FakeTwilio:
    """Twilio's side of a bidirectional Media Stream, as documented.

    Plays what it receives in real time and echoes each mark once the audio
    before it has played; ``clear`` drops the buffer and echoes pending marks.
    """

    def __init__(self, ws: Any, custom: dict[str, str] | None = None) -> None:
        self.ws = ws
        self.custom = custom or {}
        self.sequence = 0
        self.chunk = 0
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._play_end = 0.0
        self._marks: list[tuple[float, str]] = []

    def _next(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    async def begin(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.ws.send(json.dumps({
            "event": "start", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
            "start": {
                "accountSid": ACCOUNT, "streamSid": STREAM_SID, "callSid": CALL, "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.custom,
            },
        }))

    async def media(self, payload: bytes) -> None:
        self.chunk += 1
        await self.ws.send(json.dumps({
            "event": "media", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
            "media": {"track": "inbound", "chunk": str(self.chunk), "timestamp": str((self.chunk - 1) * 20),
                      "payload": base64.b64encode(payload).decode()},
        }))

    async def talk(self, chunks: list[AudioChunk]) -> None:
        frames = [f for chunk in chunks for f in mulaw_frames(chunk)]
        async for _, frame in paced(frames):
            await self.media(frame)

    async def dtmf(self, digit: str) -> None:
        await self.ws.send(json.dumps({"event": "dtmf", "streamSid": STREAM_SID, "sequenceNumber": self._next(),
                                       "dtmf": {"track": "inbound_track", "digit": digit}}))

    async def stop(self) -> None:
        await self.ws.send(json.dumps({"event": "stop", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
                                       "stop": {"accountSid": ACCOUNT, "callSid": CALL}}))

    async def _echo_mark(self, name: str) -> None:
        await self.ws.send(json.dumps({"event": "mark", "sequenceNumber": self._next(), "streamSid": STREAM_SID,
                                       "mark": {"name": name}}))

    async def run(self) -> None:
        """Read the server's messages until it closes, playing audio and echoing marks."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._mark_echoer)
            try:
                async for raw in self.ws:
                    message = json.loads(raw)
                    now = anyio.current_time()
                    self.received.append((now, message))
                    if message["event"] == "media":
                        self._play_end = max(self._play_end, now) + len(base64.b64decode(message["media"]["payload"])) / 8000
                    elif message["event"] == "mark":
                        self._marks.append((self._play_end, message["mark"]["name"]))
                    elif message["event"] == "clear":
                        self._play_end = now
                        self._marks = [(now, name) for _, name in self._marks]
            except ConnectionClosed:
                pass
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason or ""
            group.cancel_scope.cancel()

    async def _mark_echoer(self) -> None:
        while True:
            await anyio.sleep(0.01)
            now = anyio.current_time()
            due = [name for at, name in self._marks if at <= now]
            self._marks = [(at, name) for at, name in self._marks if at > now]
            for name in due:
                try:
                    await self._echo_mark(name)
                except ConnectionClosed:
                    return

    def of(self, event: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m["event"] == event]


def reply_audio(messages: list[tuple[float, dict[str, Any]]]) -> np.ndarray:
    return np.concatenate([mulaw_to_pcm16(np.frombuffer(base64.b64decode(m["media"]["payload"]), np.uint8)) for _, m in messages])
