"""How many real-time WebSocket / phone sessions one server process holds, and how fast it answers.

Run: ``python benchmarks/bench_websocket.py [--sessions 100,200,300] [--protocol fastrtc,twilio] [--turns 3]``

One **server process** (uvicorn + uvloop, the routes of ``flowrtc.adapters.websocket``)
serves a ``ReplyOnPause`` echo handler (``fn`` yields the user's audio back) — or,
if ReplyOnPause is not installed, an energy-gated echo graph (the table says which);
``--handler`` picks another (``make_handler``: a slower reply, the offline models, early replies).
One separate **client process** plays N sessions at once: each sends recorded speech
(``--speech hello``: Asterisk "hello world", 1.4 s; ``sentences``: the nine sentences the
turn-taking defaults were tuned on; ``heldout``: prompts the defaults never saw, by four
more speakers and in four more languages, from ``bench_heldout``; each turn followed by 2.5 s of silence, ``--turns`` times) as 20 ms
µ-law messages in real time, speaking FastRTC's WebSocket protocol (16 kHz) or
Twilio's Media Streams protocol (8 kHz, marks echoed), and timestamps every reply
frame. The client is a minimal asyncio WebSocket client (precomputed frames, one
wake-up per 2 ms tick for all sessions) so that it, not the server, stays cheap.

Per session count it reports:

* **reply lag**: how late reply frames arrive against the server's promise (frame k of
  a reply is due ``max(0, k·20 ms − 60 ms)`` after its first frame: the sender keeps
  the client 60–100 ms ahead), mean and p95 over all reply frames (ms);
* **loop lag**: how late a 10 ms timer fires on the server's event loop, mean and p99;
* **answered**: turns that got reply audio before the next turn began;
* **EoS → audio**: end of speech to the first reply frame at the client, wall clock,
  median and p90. End of speech is the send time of the last 20 ms frame louder than
  ``SPEECH_RMS`` (``hello``), or the energy ground truth of ``bench_heldout`` (the end of
  the last 10 ms within 35 dB of the prompt's peak) placed in the frame that holds it;
* **EoS → decision** (FastRTC protocol only: its ``log`` messages): end of speech to the
  ``pause_detected`` log at the client, median; the rest of *EoS → audio* is the reply
  starting (``pause_detected`` → ``response_starting``, also in the JSON rows) and its
  first frame;
* server CPU (% of one core), how long the server was runnable but waiting for a CPU
  ("starved": other processes took the cores; such rows measure the machine, not
  flowrtc), the client process's CPU, and the client's own send lag (if that grows, the client was the bottleneck).

A count is **held** when mean reply lag < 20 ms and every turn was answered.
Targets (2-core machine): ≥ 300 sessions held; EoS → first audio ≤ 0.5 s median.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CLIP = ROOT / "tests" / "media" / "asterisk_hello-world_8k.wav"
GAP_S = 2.5
FRAME_S = 0.02
SERVER_MIN_LEAD_S = 0.06  # flowrtc.adapters.websocket.PLAYOUT_REFILL_S
SPEECH_RMS = 300.0
CLIENT_TICK_S = 0.002  # the client sends in 2 ms ticks (its send lag is reported)


# ------------------------------------------------------------------------------- server
HANDLERS = "auto, reply_on_pause, energy, sink, think<ms>, talk_back, pipeline_talk_back; all but energy and sink may end in +early<ms>"


def make_handler(kind: str) -> tuple[Any, str]:
    """The graph a handler name stands for (see ``HANDLERS``), and its label.

    * ``reply_on_pause`` (``auto``): ``ReplyOnPause`` echoing each turn;
    * ``think300``: the same, after 300 ms of waiting (``asyncio.sleep``) before its first
      audio, as a language-model API and a voice would take;
    * ``talk_back``: the offline models, for real: Whisper tiny.en transcribes the turn and
      hibari speaks the transcript back (``flowrtc[stt,tts]``);
    * ``pipeline_talk_back``: the same as a pipeline of operators,
      ``decode | resample | vad | pause_gate | stt | (transcript → text) | tts | encode``;
    * a ``+early192`` suffix starts the reply function (the pipeline: ``stt``) 192 ms into a
      pause (``early_pause_ms``).
    """
    base, _, early = kind.partition("+early")
    early_ms = float(early) if early else None
    if base == "sink":
        return sink_graph(), "sink (input only)"
    if base == "energy":
        return energy_echo_graph(), "energy-gated echo graph"
    if base == "pipeline_talk_back":
        return talk_back_pipeline(early_ms), f"decode | vad | pause_gate | stt | tts{'' if early_ms is None else f', early_pause_ms={early_ms:g}'}"
    try:
        from flowrtc import ReplyOnPause
    except ImportError:
        if kind != "auto":
            raise
        return energy_echo_graph(), "energy-gated echo graph"
    suffix = f", early_pause_ms={early_ms:g}" if early_ms is not None else ""
    if base.startswith("think"):
        think_s = float(base.removeprefix("think")) / 1000

        async def think_then_echo(audio: tuple[int, np.ndarray]) -> Any:
            await asyncio.sleep(think_s)
            yield audio

        return ReplyOnPause(think_then_echo, input_sample_rate=16000, early_pause_ms=early_ms), f"ReplyOnPause(echo after {think_s * 1000:g} ms{suffix})"
    if base == "talk_back":
        from flowrtc.models.stt import get_stt_model
        from flowrtc.models.tts import get_tts_model

        stt, tts = get_stt_model(), get_tts_model()

        def talk_back(audio: tuple[int, np.ndarray]) -> Any:
            yield from tts.stream_tts_sync(stt.stt(audio) or "Sorry?")

        return ReplyOnPause(talk_back, input_sample_rate=16000, early_pause_ms=early_ms), f"ReplyOnPause(STT then TTS{suffix})"
    if base not in ("auto", "reply_on_pause"):
        raise SystemExit(f"unknown handler {kind!r}: {HANDLERS}")

    def echo(audio: tuple[int, np.ndarray]) -> Any:
        yield audio

    return ReplyOnPause(echo, input_sample_rate=16000, early_pause_ms=early_ms), f"ReplyOnPause(echo{suffix})"


def talk_back_pipeline(early_ms: float | None) -> Any:
    from flowrtc import Graph, Transcript, decode, encode, resample
    from flowrtc.operators.core import operator, scoped
    from flowrtc.operators.pause_gate import pause_gate
    from flowrtc.operators.speech import stt, tts
    from flowrtc.operators.vad import vad

    @operator
    async def say(source: Any) -> Any:
        async with scoped(source) as items:
            async for item in items:
                yield item
                if isinstance(item, Transcript):
                    yield item.text

    class TalkBack(Graph):
        input_sample_rate = 16000  # what FastRTC's clients send without being told otherwise

    pipe = decode() | resample(16000) | vad(early_pause_ms=early_ms) | pause_gate() | stt() | say() | tts() | encode(sample_rate=24000, frame_ms=20)
    return TalkBack(audio=pipe, name="talk_back_pipeline", modality="audio")


def sink_graph() -> Any:
    from flowrtc import Graph, decode
    from flowrtc.operators.core import operator, scoped

    @operator
    async def sink(source: Any) -> Any:
        async with scoped(source) as items:
            async for _ in items:
                pass
        yield None

    class Sink(Graph):
        input_sample_rate = 16000

    return Sink(audio=decode() | sink(), name="sink")


def energy_echo_graph() -> Any:
    from flowrtc import AudioChunk, Graph, Interrupt, decode, resample
    from flowrtc.operators.core import operator, scoped

    @operator
    async def echo_turns(source: Any) -> Any:
        frames: list[AudioChunk] = []
        speaking, silent_s, reply_ends_s = False, 0.0, 0.0
        async with scoped(source) as items:
            async for item in items:
                if not isinstance(item, AudioChunk):
                    yield item
                    continue
                loud = float(np.sqrt(np.mean(item.samples.astype(np.float32) ** 2))) > SPEECH_RMS
                now_s = item.end_pts / item.sample_rate
                if loud and not speaking:
                    speaking = True
                    if now_s < reply_ends_s:
                        yield Interrupt(media_time_s=now_s)
                if speaking:
                    frames.append(item)
                    silent_s = 0.0 if loud else silent_s + item.duration_s
                    if silent_s >= 0.3:
                        utterance = AudioChunk.concat(frames)
                        frames, speaking = [], False
                        yield utterance.with_pts(item.end_pts)
                        reply_ends_s = now_s + utterance.duration_s

    class EnergyEcho(Graph):
        input_sample_rate = 16000  # what FastRTC's clients send without being told otherwise

    return EnergyEcho(audio=decode() | resample(16000) | echo_turns(), name="energy_echo")


class LagProbe:
    """How late a periodic timer fires on this event loop (and how long garbage collection paused it)."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.samples: list[float] = []
        self.gc_pauses: list[float] = []
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_started)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.period_s
            await asyncio.sleep(self.period_s)
            self.samples.append(max(0.0, loop.time() - due))

    def stats(self) -> dict[str, float]:
        lags = sorted(self.samples) or [0.0]
        return {
            "loop_lag_mean_ms": 1000 * statistics.fmean(lags),
            "loop_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))],
            "loop_lag_max_ms": 1000 * lags[-1],
            "gc_pause_total_ms": 1000 * sum(self.gc_pauses),
            "gc_pause_max_ms": 1000 * max(self.gc_pauses, default=0.0),
        }


def serve(port: int, handler_kind: str, profile: str | None = None, ws: str = "websockets-sansio", page: bool = False) -> None:
    import uvicorn
    from litestar import Litestar, get, post

    from flowrtc.adapters.websocket import websocket_route_handlers
    from flowrtc.limits import Limits
    from flowrtc.stream import Stream

    handler, label = make_handler(handler_kind)
    no_ice_servers = {"iceServers": []}  # --page over WebRTC: local host candidates only, no STUN wait
    stream = Stream(
        handler,
        modality="audio",
        concurrency_limit=None,
        limits=Limits(max_connections=None),
        rtc_configuration=no_ice_servers,
        server_rtc_configuration=no_ice_servers,
    )
    probe = LagProbe()
    tasks: list[asyncio.Task[None]] = []

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, Any]:
        engine = vad_engine()
        return {**probe.stats(), "live_sessions": len(stream.hub), "handler": label, "pid": os.getpid(),
                "vad_batches": engine.batches if engine else 0, "vad_windows": engine.windows if engine else 0}

    @post("/bench/reset", sync_to_thread=False, status_code=200)
    def reset() -> dict[str, Any]:
        probe.samples.clear()
        probe.gc_pauses.clear()
        return {}

    def vad_engine() -> Any:
        try:
            from flowrtc.models.vad_engine import get_vad_engine

            return get_vad_engine()
        except Exception:  # no VAD model in this install (the energy or sink handler)
            return None

    def start_probe() -> None:
        tasks.append(asyncio.get_running_loop().create_task(probe.run()))

    routes = stream.routes() if page else websocket_route_handlers(stream)  # --page: all of them, with the built-in page
    app = Litestar(route_handlers=[*routes, stats, reset], on_startup=[start_probe])
    from flowrtc.runtime import tune_gc_for_serving

    tune_gc_for_serving()  # as Stream.launch and flowrtc run do
    run = lambda: uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",  # noqa: E731
                              ws=ws, log_level="warning", access_log=False, backlog=4096)
    if profile is None:
        run()
        return
    import cProfile

    profiler = cProfile.Profile()
    try:
        profiler.runcall(run)
    finally:
        profiler.dump_stats(profile)


# ------------------------------------------------------------------------------- client
class Turn(NamedTuple):
    """One turn of the script: speech then ``GAP_S`` of silence, as 20 ms µ-law frames."""

    frames: list[bytes]
    first_speech: int  # index of the first frame with speech
    end_s: float  # end of the speech, seconds from the turn's first sample


def load_turns(rate: int, speech: str = "hello") -> list[Turn]:
    """The turns a session says, at ``rate``.

    ``hello``: Asterisk "hello world"; its speech ends with the last 20 ms frame louder
    than ``SPEECH_RMS`` (the figure of earlier runs). ``sentences``: the nine sentences
    ``bench_turns`` tuned the defaults on; ``heldout``: three prompts from each of the six
    voices of ``bench_heldout`` (none of which the defaults were chosen on; fetched once
    from Debian's mirror). For these two, speech ends where ``bench_heldout``'s energy
    ground truth says (the last 10 ms louder than 35 dB under the prompt's peak), which
    does not depend on the VAD being measured.
    """
    from flowrtc.media import AudioChunk
    from flowrtc.testing import load_audio

    size = rate // 50
    gap = AudioChunk(np.zeros((1, int(GAP_S * rate)), np.int16), rate)

    def frames_of(audio: AudioChunk) -> list[bytes]:
        codes = AudioChunk.concat([audio, gap]).to_mulaw()
        return [codes[i * size : (i + 1) * size] for i in range(len(codes) // size)]

    if speech == "hello":
        clip = load_audio(CLIP, sample_rate=rate)
        samples = clip.samples[0]
        loud = [i for i in range(len(samples) // size) if np.sqrt(np.mean(samples[i * size : (i + 1) * size].astype(np.float64) ** 2)) > SPEECH_RMS]
        return [Turn(frames_of(clip), loud[0], (loud[-1] + 1) * FRAME_S)]
    from bench_heldout import VOICES, heldout_cache, prompts, tuning_prompts
    from bench_turns import at_rate

    said = tuning_prompts() if speech == "sentences" else [p for voice in VOICES for p in prompts(heldout_cache(), voice, 3)[0]]
    return [Turn(frames_of(at_rate(p.audio, rate)), int(p.start_s / FRAME_S), p.end_s) for p in said]


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client WebSocket frame; the all-zero mask key leaves the payload as is (RFC 6455 allows any key)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\x00\x00\x00\x00" + payload


class Conn(asyncio.Protocol):
    """One benchmark session over a minimal WebSocket client."""

    def __init__(self, index: int, protocol: str, path: str, host: str) -> None:
        self.index = index
        self.protocol = protocol
        self.sid = f"MZ{index:032d}"
        self.path, self.host = path, host
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.handshake_done = False
        self.arrivals: list[float] = []
        self.logs: list[tuple[float, str]] = []  # (arrival, data) of FastRTC-protocol log messages
        self.clears = 0
        self.errors: list[str] = []
        self.sent: list[float] = []
        self.sequence = 1
        # µ-law bytes in 20 ms of reply: Twilio's 8 kHz, or ReplyOnPause's default 24 kHz output
        self.out_frame_bytes = (8000 if protocol == "twilio" else 24000) // 50

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.handshake_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self.buffer[:end]).split(b"\r\n", 1)[0]
            del self.buffer[: end + 4]
            self.handshake_done = True
            if b" 101 " in status:
                self.upgraded.set_result(True)
            else:
                self.upgraded.set_exception(ConnectionError(status.decode()))
                return
        now = asyncio.get_running_loop().time()
        buf = self.buffer
        while len(buf) >= 2:
            opcode, n, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + n:
                return
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            if opcode == 1:
                self.on_text(payload, now)
            elif opcode == 9:
                self.write(payload, 10)
            elif opcode == 8:
                if not self.closed.done():
                    self.closed.set_result(payload[:2])
                self.write(payload[:2], 8)

    def on_text(self, payload: bytes, now: float) -> None:
        if payload.startswith(b'{"event":"media"'):
            # A message may carry several 20 ms frames: each counts as arriving now.
            start = payload.index(b'"payload":"') + 11
            size = (payload.index(b'"', start) - start) * 3 // 4 - payload.count(b"=", start)
            self.arrivals.extend([now] * max(1, round(size / self.out_frame_bytes)))
        elif payload.startswith(b'{"event":"mark"'):
            name = json.loads(payload)["mark"]["name"]
            self.send_json({"event": "mark", "sequenceNumber": self.next_seq(), "streamSid": self.sid, "mark": {"name": name}})
        elif payload.startswith(b'{"event":"clear"'):
            self.clears += 1
        elif payload.startswith(b'{"type":"log"'):
            self.logs.append((now, json.loads(payload)["data"]))
        elif b'"error"' in payload or b'"failed"' in payload:
            self.errors.append(payload.decode()[:200])

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(b"")

    def write(self, payload: bytes, opcode: int = 1) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(ws_frame(payload, opcode))

    def send_json(self, message: dict[str, Any]) -> None:
        self.write(json.dumps(message, separators=(",", ":")).encode())

    def next_seq(self) -> str:
        self.sequence += 1
        return str(self.sequence)

    def start(self) -> None:
        if self.protocol == "twilio":
            self.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            self.send_json({"event": "start", "sequenceNumber": "1", "streamSid": self.sid, "start": {
                "accountSid": "AC0", "streamSid": self.sid, "callSid": f"CA{self.index}", "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, "customParameters": {}}})
        else:
            self.send_json({"event": "start", "websocket_id": f"bench-{self.index}"})

    def media(self, k: int, b64payload: str) -> None:
        if self.protocol == "twilio":
            seq = self.next_seq()
            text = ('{"event":"media","sequenceNumber":"' + seq + '","streamSid":"' + self.sid + '","media":{"track":"inbound","chunk":"'
                    + str(k + 1) + '","timestamp":"' + str(k * 20) + '","payload":"' + b64payload + '"}}')
        else:
            text = '{"event":"media","media":{"payload":"' + b64payload + '"}}'
        self.write(text.encode())

    def stop(self) -> None:
        if self.protocol == "twilio":
            self.send_json({"event": "stop", "sequenceNumber": self.next_seq(), "streamSid": self.sid, "stop": {"accountSid": "AC0", "callSid": f"CA{self.index}"}})
        else:
            self.send_json({"event": "stop"})


async def run_client(port: int, protocol: str, sessions: int, turns: int, ramp_s: float, speech: str = "hello") -> dict[str, Any]:
    import heapq

    loop = asyncio.get_running_loop()
    rate, path = (8000, "/telephone/handler") if protocol == "twilio" else (16000, "/websocket/offer")
    script = load_turns(rate, speech)
    payloads = [[base64.b64encode(f).decode() for f in turn.frames] for turn in script]
    conns: list[Conn] = []

    async def open_one(index: int) -> None:
        _, conn = await loop.create_connection(lambda: Conn(index, protocol, path, f"127.0.0.1:{port}"), "127.0.0.1", port)
        await conn.upgraded
        conn.start()
        conns.append(conn)

    for batch in range(0, sessions, 50):
        await asyncio.gather(*(open_one(i) for i in range(batch, min(sessions, batch + 50))))
    # Session i says turns i, i+1, ... of the script (so every turn is said as often),
    # each turn starting at frame ``starts[i][j]`` of its stream.
    plans = [[(i + j) % len(script) for j in range(turns)] for i in range(len(conns))]
    starts = [[sum(len(script[t].frames) for t in plan[:j]) for j in range(turns + 1)] for plan in plans]
    streams = [[p for t in plan for p in payloads[t]] for plan in plans]
    t0 = loop.time() + 0.2
    schedule = [(t0 + random.uniform(0, ramp_s), i, 0) for i in range(len(conns))]
    heapq.heapify(schedule)
    send_lag: list[float] = []
    while schedule:
        now = loop.time()
        if schedule[0][0] > now:
            # One wake-up per tick sends every frame that has come due: a timer per frame
            # (50 per session per second) cost the client more CPU than the server.
            await asyncio.sleep(max(schedule[0][0] - now, CLIENT_TICK_S))
            continue
        while schedule and schedule[0][0] <= now:
            due, i, k = heapq.heappop(schedule)
            conn = conns[i]
            send_lag.append(now - due)
            conn.media(k, streams[i][k])
            conn.sent.append(now)
            if k + 1 < len(streams[i]):
                heapq.heappush(schedule, (due + FRAME_S, i, k + 1))
    await asyncio.sleep(0.5)
    for conn in conns:
        conn.stop()
    await asyncio.wait([asyncio.ensure_future(asyncio.wait_for(c.closed, 10)) for c in conns])
    for conn in conns:
        if conn.transport:
            conn.transport.close()

    latencies, lags, answered = [], [], 0
    decided, started = [], []  # EoS → "pause_detected", "pause_detected" → "response_starting" (FastRTC protocol)
    for conn, plan, start in zip(conns, plans, starts):
        arrivals = conn.arrivals
        for j, t in enumerate(plan):
            turn = script[t]
            # A frame is sent once its 20 ms have passed (as a microphone delivers it), so
            # media time e of the turn is wall time sent[f] - ((f + 1)·20 ms - e) for the frame f holding e.
            f = max(0, int(np.ceil(turn.end_s / FRAME_S - 1e-9)) - 1)
            eos = conn.sent[start[j] + f] - ((f + 1) * FRAME_S - turn.end_s)
            next_start = conn.sent[start[j + 1] + script[plan[j + 1]].first_speech] if j + 1 < turns else float("inf")
            reply = [a for a in arrivals if eos <= a < next_start]
            if not reply:
                continue
            answered += 1
            latencies.append(reply[0] - eos)
            pause = next((a for a, data in conn.logs if data == "pause_detected" and eos <= a <= reply[0]), None)
            starting = next((a for a, data in conn.logs if data == "response_starting" and pause is not None and pause <= a <= reply[0]), None)
            if pause is not None and starting is not None:
                decided.append(pause - eos)
                started.append(starting - pause)
            lags.extend(max(0.0, a - (reply[0] + max(0.0, k * FRAME_S - SERVER_MIN_LEAD_S))) for k, a in enumerate(reply))
    lags.sort()
    return {
        "protocol": protocol,
        "speech": speech,
        "sessions": len(conns),
        "turns": len(conns) * turns,
        "answered": answered,
        "eos_to_audio_median_s": statistics.median(latencies) if latencies else None,
        "eos_to_audio_p90_s": sorted(latencies)[int(0.9 * (len(latencies) - 1))] if latencies else None,
        "eos_to_pause_detected_median_s": statistics.median(decided) if decided else None,
        "pause_detected_to_response_starting_median_s": statistics.median(started) if started else None,
        "reply_lag_mean_ms": 1000 * statistics.fmean(lags) if lags else None,
        "reply_lag_p95_ms": 1000 * lags[int(0.95 * (len(lags) - 1))] if lags else None,
        "client_send_lag_mean_ms": 1000 * statistics.fmean(send_lag),
        "client_send_lag_max_ms": 1000 * max(send_lag),
        "errors": sum(len(c.errors) for c in conns),
        "first_error": next((c.errors[0] for c in conns if c.errors), None),
    }


# ------------------------------------------------------------------------------- driver
def graph_decision_s(handler_kind: str, protocol: str, speech: str = "hello") -> float:
    """End of speech → first reply audio in the handler's graph alone, in media time (no transport).

    Each turn of the script is run through the graph with ``flowrtc.testing.run``
    (median over the turns); what the wall-clock figure adds to this is the transport's share.
    """
    from flowrtc.media import AudioChunk
    from flowrtc.testing import run

    rate = 8000 if protocol == "twilio" else 16000
    decisions = []
    for turn in load_turns(rate, speech):
        audio = AudioChunk.from_mulaw(b"".join(turn.frames), rate)
        handler, _ = make_handler(handler_kind)
        graph = handler if not hasattr(handler, "graph") or not callable(handler.graph) else handler.graph()
        recording = run(graph, audio=audio)
        first = next((item for item in recording.items if isinstance(item, AudioChunk)), None)
        if first is not None:  # the sink handler never replies
            decisions.append(first.pts / first.sample_rate - turn.end_s)
    return statistics.median(decisions) if decisions else float("nan")


def http_json(port: int, path: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU time, time spent runnable but waiting for a CPU) of a process, in seconds, over all its threads."""
    cpu = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, waiting, _ = (int(v) for v in (task / "schedstat").read_text().split())
        except (OSError, ValueError):
            continue
        cpu, wait = cpu + on_cpu, wait + waiting
    return cpu / 1e9, wait / 1e9


def start_server(port: int, handler: str) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, __file__, "serve", "--port", str(port), "--handler", handler])
    for _ in range(300):
        try:
            http_json(port, "/bench/stats")
            return server
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the benchmark server did not start")


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for protocol in args.protocol.split(","):
        decision_s = graph_decision_s(args.handler, protocol, args.speech)
        port = args.port
        server = start_server(port, args.handler)
        try:
            for sessions in [int(n) for n in args.sessions.split(",")]:
                http_json(port, "/bench/reset", "POST")
                (cpu0, wait0), wall0 = cpu_seconds(server.pid), time.monotonic()
                children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                client = subprocess.run(
                    [sys.executable, __file__, "client", "--port", str(port), "--protocol", protocol,
                     "--sessions", str(sessions), "--turns", str(args.turns), "--ramp", str(args.ramp), "--speech", args.speech],
                    capture_output=True, text=True, check=True,
                )
                cpu1, wait1 = cpu_seconds(server.pid)
                wall = time.monotonic() - wall0
                children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                client_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
                row = {**json.loads(client.stdout), **http_json(port, "/bench/stats"),
                       "server_cpu_pct": 100 * (cpu1 - cpu0) / wall, "server_starved_pct": 100 * (wait1 - wait0) / wall,
                       "client_cpu_pct": 100 * client_cpu / wall,
                       "load_avg_1min": os.getloadavg()[0], "graph_decision_s": decision_s}
                row["held"] = bool(row["reply_lag_mean_ms"] is not None and row["reply_lag_mean_ms"] < 20 and row["answered"] == row["turns"])
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                time.sleep(1.0)
        finally:
            server.terminate()
            server.wait(10)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def f(value: Any, spec: str) -> str:
        return "–" if value is None else format(value, spec)

    lines = [
        "| protocol | sessions | held | answered | reply lag mean / p95 (ms) | loop lag mean / p99 (ms) | EoS → audio median / p90 (s) | EoS → decision median (s) | server CPU | server starved | client CPU | client send lag mean (ms) |",
        "| --- | ---: | :---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['protocol']} | {r['sessions']} | {'yes' if r['held'] else 'no'} | {r['answered']}/{r['turns']} | "
            f"{f(r['reply_lag_mean_ms'], '.1f')} / {f(r['reply_lag_p95_ms'], '.1f')} | "
            f"{r['loop_lag_mean_ms']:.1f} / {r['loop_lag_p99_ms']:.1f} | "
            f"{f(r['eos_to_audio_median_s'], '.3f')} / {f(r['eos_to_audio_p90_s'], '.3f')} | {f(r.get('eos_to_pause_detected_median_s'), '.3f')} | "
            f"{r['server_cpu_pct']:.0f}% | {r['server_starved_pct']:.0f}% | {r['client_cpu_pct']:.0f}% | {r['client_send_lag_mean_ms']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--port", type=int, default=8765)
    p_serve.add_argument("--handler", default="auto", help=HANDLERS)
    p_serve.add_argument("--profile", help="write cProfile stats here when the server stops")
    p_serve.add_argument("--ws", default="websockets-sansio", help="uvicorn WebSocket implementation")
    p_serve.add_argument("--page", action="store_true", help="serve every route of the stream, the built-in page too (bench_browser)")
    p_client = sub.add_parser("client")
    p_client.add_argument("--port", type=int, default=8765)
    p_client.add_argument("--protocol", default="fastrtc", choices=["fastrtc", "twilio"])
    p_client.add_argument("--sessions", type=int, default=100)
    p_client.add_argument("--turns", type=int, default=3)
    p_client.add_argument("--ramp", type=float, default=2.0)
    p_client.add_argument("--speech", default="hello", choices=["hello", "sentences", "heldout"])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--handler", default="auto", help=HANDLERS)
    parser.add_argument("--protocol", default="fastrtc,twilio")
    parser.add_argument("--sessions", default="100,200,300")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which sessions start talking")
    parser.add_argument("--speech", default="hello", choices=["hello", "sentences", "heldout"],
                        help="what each session says: 'hello world' every turn, the nine tuning sentences, or held-out voices (bench_heldout)")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.port, args.handler, args.profile, args.ws, args.page)
    elif args.command == "client":
        import uvloop

        print(json.dumps(uvloop.run(run_client(args.port, args.protocol, args.sessions, args.turns, args.ramp, args.speech))))
    else:
        rows = sweep(args)
        print(f"handler: {http_handler_label(rows)}")
        for protocol in dict.fromkeys(r["protocol"] for r in rows):
            decision = next(r["graph_decision_s"] for r in rows if r["protocol"] == protocol)
            print(f"{protocol}: end of speech → first reply audio in the graph alone (media time): {decision:.3f} s")
        print()
        print(table(rows))


def http_handler_label(rows: list[dict[str, Any]]) -> str:
    return str(rows[0].get("handler", "?"))


if __name__ == "__main__":
    main()
