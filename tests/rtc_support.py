"""Real servers and real peers for the HTTP/WebRTC tests.

* :func:`running_server` serves an ASGI app with uvicorn on 127.0.0.1 (a free
  port) in a thread with its own event loop, so the server's tasks, peer
  connections and threads can be counted apart from the test's.
* :class:`ClientPeer` is an aiortc peer that sends a recorded clip and/or a
  patterned video in real time, records what comes back (with arrival times)
  and the data-channel messages, and signals over HTTP with httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import gc
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import av
import httpx
import numpy as np
import uvicorn
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from flowrtc.media import AudioChunk

AUDIO_RATE = 48000
FRAME = 960
_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)


@dataclass
class Server:
    url: str
    loop: asyncio.AbstractEventLoop
    uvicorn: uvicorn.Server
    thread: threading.Thread
    baseline_tasks: int = 0

    def call(self, fn: Any, timeout: float = 10) -> Any:
        """Run ``fn()`` (sync) on the server's loop and return its result."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def task_count(self) -> int:
        return self.call(lambda: len(asyncio.all_tasks(self.loop)))

    def tasks(self) -> list[str]:
        return self.call(lambda: sorted(repr(task.get_coro()) for task in asyncio.all_tasks(self.loop)))


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[Server]:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread, for the block's duration."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    loops: list[asyncio.AbstractEventLoop] = []
    original_serve = server.serve

    async def serve(sockets: Any = None) -> None:
        loops.append(asyncio.get_running_loop())
        await original_serve(sockets)

    server.serve = serve  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    handle = Server(f"http://127.0.0.1:{port}", loops[0], server, thread)
    handle.baseline_tasks = handle.task_count()
    try:
        yield handle
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def open_peer_connections() -> list[RTCPeerConnection]:
    """Every peer connection in this process that is not closed."""
    gc.collect()
    return [obj for obj in gc.get_objects() if isinstance(obj, RTCPeerConnection) and obj.connectionState != "closed"]


def media_threads() -> list[str]:
    """aiortc's per-track decoder threads, and flowrtc's shared codec thread, still running."""
    return [thread.name for thread in threading.enumerate() if thread.name.endswith("-decoder") or thread.name == "flowrtc-codec"]


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


# -- media sources ---------------------------------------------------------------------
class ClipTrack(MediaStreamTrack):
    """Plays a 48 kHz mono clip in real time (20 ms frames), then silence."""

    kind = "audio"

    def __init__(self, clip: AudioChunk, *, lead_silence_s: float = 0.0) -> None:
        super().__init__()
        assert clip.sample_rate == AUDIO_RATE
        lead = np.zeros((1, int(lead_silence_s * AUDIO_RATE)), np.int16)
        self.samples = np.concatenate([lead, clip.to_layout(1).to_int16().samples], axis=1)
        self.position = 0
        self.started_at: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        wait = self.started_at + self.position / AUDIO_RATE - now
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.samples[:, self.position : self.position + FRAME]
        if chunk.shape[1] < FRAME:
            chunk = np.concatenate([chunk, np.zeros((1, FRAME - chunk.shape[1]), np.int16)], axis=1)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = self.position
        frame.time_base = _TIME_BASE
        self.position += FRAME
        return frame


def pattern(height: int = 96, width: int = 128) -> np.ndarray:
    """A BGR image: bright top half, dark bottom half (flipping it is easy to see)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2] = 230
    image[height // 2 :] = 20
    return image


class PatternTrack(MediaStreamTrack):
    """Sends :func:`pattern` frames at ``fps``."""

    kind = "video"

    def __init__(self, fps: int = 15) -> None:
        super().__init__()
        self.fps = fps
        self.count = 0
        self.started_at: float | None = None
        self.image = pattern()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self.started_at is None:
            self.started_at = now
        wait = self.started_at + self.count / self.fps - now
        if wait > 0:
            await asyncio.sleep(wait)
        frame = av.VideoFrame.from_ndarray(self.image, format="bgr24")
        frame.pts = self.count * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.count += 1
        return frame


def top_minus_bottom(image: np.ndarray) -> float:
    """Mean brightness of the top half minus the bottom half."""
    half = image.shape[0] // 2
    return float(image[:half].mean()) - float(image[half:].mean())


# -- the client peer --------------------------------------------------------------------
@dataclass
class ClientPeer:
    """An aiortc client of a flowrtc server."""

    base_url: str
    audio: AudioChunk | None = None
    video: bool = False
    receive_only: tuple[str, ...] = ()
    send_only: bool = False
    channel_label: str | None = "text"
    webrtc_id: str = field(default_factory=lambda: f"peer-{time.monotonic_ns()}")
    lead_silence_s: float = 0.0
    pc: RTCPeerConnection = field(init=False)
    messages: list[dict[str, Any]] = field(default_factory=list)
    audio_in: list[tuple[float, np.ndarray]] = field(default_factory=list)
    video_in: list[tuple[float, np.ndarray]] = field(default_factory=list)
    audio_track: ClipTrack | None = None
    channel: Any = None
    answer: dict[str, Any] | None = None
    offer_sent_at: float = 0.0
    connected_at: float | None = None
    _readers: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        if self.channel_label is not None:
            self.channel = self.pc.createDataChannel(self.channel_label)
            self.channel.on("message", self._on_message)
        if self.audio is not None:
            self.audio_track = ClipTrack(self.audio, lead_silence_s=self.lead_silence_s)
            transceiver = self.pc.addTransceiver(self.audio_track, direction="sendonly" if self.send_only else "sendrecv")
            del transceiver
        if self.video:
            self.pc.addTransceiver(PatternTrack(), direction="sendonly" if self.send_only else "sendrecv")
        for kind in self.receive_only:
            self.pc.addTransceiver(kind, direction="recvonly")

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._readers.append(asyncio.ensure_future(self._read(track)))

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected" and self.connected_at is None:
                self.connected_at = time.monotonic()

    def _on_message(self, text: str) -> None:
        import json

        self.messages.append(json.loads(text))

    async def _read(self, track: Any) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if track.kind == "audio":
                self.audio_in.append((time.monotonic(), frame.to_ndarray().reshape(-1, 2).T[0].copy()))
            else:
                self.video_in.append((time.monotonic(), frame.to_ndarray(format="bgr24")))

    async def offer_sdp(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def connect(self, client: httpx.AsyncClient, *, trickle: bool = False) -> dict[str, Any]:
        """Post the offer (or an offer without candidates, then each candidate) and apply the answer."""
        sdp = await self.offer_sdp()
        candidates: list[dict[str, Any]] = []
        if trickle:
            sdp, candidates = split_candidates(sdp)
        self.offer_sent_at = time.monotonic()
        response = await client.post(f"{self.base_url}/webrtc/offer", json={"sdp": sdp, "type": "offer", "webrtc_id": self.webrtc_id})
        body = response.json()
        if body.get("type") != "answer":
            return body
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        for candidate in candidates:
            reply = await client.post(f"{self.base_url}/webrtc/offer", json={"type": "ice-candidate", "webrtc_id": self.webrtc_id, "candidate": candidate})
            assert reply.json() == {"status": "success"}, reply.text
        return body

    async def wait_connected(self, timeout: float = 10) -> None:
        assert await wait_for(lambda: self.pc.connectionState == "connected", timeout), self.pc.connectionState

    def messages_of(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.messages if message.get("type") == kind]

    def received_audio(self, since: float = 0.0) -> np.ndarray:
        parts = [samples for at, samples in self.audio_in if at >= since]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    async def close(self) -> None:
        await self.pc.close()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


def split_candidates(sdp: str) -> tuple[str, list[dict[str, Any]]]:
    """An SDP without its candidate lines, and those candidates as browser-style JSON."""
    lines = sdp.splitlines()
    kept: list[str] = []
    candidates: list[dict[str, Any]] = []
    index = -1
    mid: str | None = None
    for line in lines:
        if line.startswith("m="):
            index += 1
            mid = None
        if line.startswith("a=mid:"):
            mid = line[6:]
        if line.startswith("a=candidate:"):
            candidates.append({"candidate": line[2:], "sdpMLineIndex": index, "sdpMid": mid})
            continue
        if line.startswith("a=end-of-candidates"):
            continue
        kept.append(line)
    for candidate in candidates:  # a=mid comes after the candidates in aiortc's SDP; fill it in
        if candidate["sdpMid"] is None:
            candidate["sdpMid"] = _mid_of(kept, candidate["sdpMLineIndex"])
    return "\r\n".join(kept) + "\r\n", candidates


def _mid_of(lines: list[str], index: int) -> str | None:
    section = -1
    for line in lines:
        if line.startswith("m="):
            section += 1
        elif section == index and (match := re.match(r"a=mid:(\S+)", line)):
            return match.group(1)
    return None


def envelope(samples: np.ndarray, rate: int = AUDIO_RATE, window_ms: int = 20) -> np.ndarray:
    """RMS per window, as float."""
    size = rate * window_ms // 1000
    count = len(samples) // size
    frames = samples[: count * size].astype(np.float64).reshape(count, size)
    return np.sqrt((frames**2).mean(axis=1))


def best_lag(sent: np.ndarray, received: np.ndarray, max_lag: int) -> tuple[int, float]:
    """The lag (in windows) at which ``received`` best matches ``sent``, and the correlation there."""
    best = (0, -1.0)
    for lag in range(0, max_lag):
        part = received[lag : lag + len(sent)]
        if len(part) < len(sent) // 2:
            break
        reference = sent[: len(part)]
        if part.std() == 0 or reference.std() == 0:
            continue
        correlation = float(np.corrcoef(reference, part)[0, 1])
        if correlation > best[1]:
            best = (lag, correlation)
    return best
