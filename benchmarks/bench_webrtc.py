"""How many real-time WebRTC sessions one server process holds, and how fast it connects and answers.

Run: ``python benchmarks/bench_webrtc.py [--peers 10,20,30,50] [--seconds 30] [--handler echo,reply_on_pause]``

One **server process** (uvicorn, the stream's routes, aiortc) serves either

* ``echo``: a graph that plays every 20 ms of the caller's audio straight back
  (``decode | resample(48 kHz mono) | handler(async echo) | encode``), or
* ``reply_on_pause``: ``ReplyOnPause(echo)`` (Silero VAD, pause detection, the
  user's turn played back after they stop);
* (``echo_sync``: the echo with a plain function, one worker-thread call per frame;
  ``passthrough``: without any user function.)

**Client processes** (``--per-client`` peers each, 25 by default) run aiortc peers
that connect through ``POST /webrtc/offer`` like a browser and send recorded speech
(Asterisk "hello world", 1.4 s, then silence; one turn every ``--turn-s`` seconds,
start offsets spread over a turn) as Opus in real time. The Opus packets are
encoded once and sent as they are (aiortc still packetizes, encrypts and sends
them), so the clients, which share the machine, stay as cheap as aiortc allows.
Each peer records the arrival time and level of every 20 ms frame it gets back;
the replies are decoded in one shared thread per client process
(``flowrtc.adapters.webrtc_tracks.decode_audio_shared``), and the clients run on
uvloop when it is installed (about a tenth less client CPU than aiortc's decoder
thread per peer on asyncio's own loop).

Reported per run:

* **connect**: offer posted → ICE+DTLS connected, median and p95 (peers connect in
  batches of ``--batch`` while the earlier ones already stream);
* **answered**: turns with reply audio before the next turn began;
* **latency**: echo: speech onset sent → its echo's onset received; ReplyOnPause:
  end of speech sent → reply onset received; median and p90, and the medians of
  the first and last third of the run (**no growing lag** when they agree);
* **CPU** of the server process (and of its event-loop thread alone: one loop
  runs every session, so it saturates first), of the client processes, and of
  everything else on the machine (other jobs share these cores); frames played
  by the server;
* **loop lag**: how late a 10 ms timer fires, p99, on the server and the clients;
* **speed probe**: how fast the shared machine ran Python around the run (``machine.py``;
  ~125 ms at full speed, 170-200 ms in a slow spell): compare rows of like speed.

A run **holds** when every turn was answered and the last third's median latency
is within 100 ms of the first third's. Target (2-core machine): ≥ 50 peers held.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import speed_probe_ms  # noqa: E402

CLIP = ROOT / "tests" / "media" / "asterisk_hello-world_8k.wav"
RATE = 48000
FRAME = 960
SPEECH_RMS = 300.0  # int16 RMS of a 20 ms frame that holds speech


# ------------------------------------------------------------------------------- server
def make_stream(kind: str) -> Any:
    from flowrtc import Graph, decode, encode, handler, resample
    from flowrtc.stream import Stream

    if kind == "echo":

        async def echo_frame(audio: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
            return audio  # an async function runs on the event loop: no worker-thread hop per 20 ms frame

        graph: Any = Graph(audio=decode() | resample(48000, layout="mono") | handler(echo_frame) | encode(sample_rate=48000), name="echo")
    elif kind == "echo_sync":  # the same with a plain function: one worker-thread call per 20 ms frame
        graph = Graph(audio=decode() | resample(48000, layout="mono") | handler(lambda audio: audio) | encode(sample_rate=48000), name="echo_sync")
    elif kind == "passthrough":  # the echo without the user function (no worker-thread call per frame)
        graph = Graph(audio=decode() | resample(48000, layout="mono") | encode(sample_rate=48000), name="passthrough")
    elif kind == "reply_on_pause":
        from flowrtc.handlers.reply_on_pause import ReplyOnPause

        def echo(audio: tuple[int, np.ndarray]) -> Any:
            # Under load ReplyOnPause can hand over an empty utterance ((rate, (1, 0))), which
            # AudioChunk.from_tuple rejects and which would end the session: skip it.
            if audio[1].size:
                yield audio

        graph = ReplyOnPause(echo)
    else:
        raise SystemExit(f"unknown handler {kind!r}")
    return Stream(graph, modality="audio", mode="send-receive", concurrency_limit=None, server_rtc_configuration={"iceServers": []})


def thread_cpu() -> dict[str, float]:
    """CPU seconds used so far by this process's threads, by thread name."""
    import collections
    import threading

    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    usage: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended since the listing
            continue
        name = names.get(int(task.name), "other")
        kind = "decoder" if name.endswith("-decoder") or name == "flowrtc-codec" else "event loop" if name == "MainThread" else "worker" if "ThreadPool" in name or "AnyIO" in name else name.split("-")[0]
        usage[kind] += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return dict(usage)


async def loop_lag_probe(lags: list[float]) -> None:
    """Append how late a 10 ms sleep wakes up, for ever (the event loop's lag)."""
    clock = asyncio.get_running_loop()
    while True:
        due = clock.time() + 0.01
        await asyncio.sleep(0.01)
        lags.append(max(0.0, clock.time() - due))


def serve(port: int, kind: str, loop: str) -> None:
    import uvicorn
    from litestar import Litestar, get

    from flowrtc.adapters.webrtc import WebRTCOptions, webrtc_transport

    stream = make_stream(kind)
    lags: list[float] = []

    @get("/bench/stats", sync_to_thread=False)
    def stats() -> dict[str, Any]:
        peers = webrtc_transport(stream).statistics()
        ordered = sorted(lags) or [0.0]
        return {
            "sessions": len(stream.hub),
            "primers": sum(p["audio_primers"] for p in peers.values()),
            "played_frames": sum(p["audio_played"] for p in peers.values()),
            "reanchors": sum(p["audio_reanchors"] for p in peers.values()),
            "encoded_ahead": sum(p["audio_encoded_ahead"] for p in peers.values()),
            "encoded_on_loop": sum(p["audio_encoded_on_loop"] for p in peers.values()),
            "loop_lag_p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
            "max_audio_queued": max((p["audio_queued"] for p in peers.values()), default=0),
            "max_session_audio_in": max((s.statistics()["audio_in"] for i in stream.hub.ids() if (s := stream.hub.session(i))), default=0),
            "max_session_output": max((s.statistics()["output"] for i in stream.hub.ids() if (s := stream.hub.session(i))), default=0),
            "loop_lag_max_ms": 1000 * ordered[-1],
            "threads_cpu_s": thread_cpu(),
        }

    @get("/bench/reset", sync_to_thread=False)
    def reset() -> dict[str, Any]:
        lags.clear()
        return {}

    tasks: list[Any] = []
    app = Litestar(
        route_handlers=[*stream.routes(webrtc=WebRTCOptions(max_negotiating=1000)), stats, reset],
        on_startup=[lambda: tasks.append(asyncio.get_running_loop().create_task(loop_lag_probe(lags)))],
        on_shutdown=[webrtc_transport(stream).aclose],
    )
    from flowrtc.runtime import tune_gc_for_serving

    tune_gc_for_serving()  # as Stream.launch and flowrtc run do
    run = lambda: uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, log_level="warning", access_log=False, backlog=4096)  # noqa: E731
    if not os.environ.get("BENCH_PROFILE"):
        run()
        return
    import cProfile

    profiler = cProfile.Profile(time.thread_time)  # the event loop thread's CPU time: other processes do not inflate it
    try:
        profiler.runcall(run)
    finally:
        profiler.dump_stats(os.environ["BENCH_PROFILE"])


# ------------------------------------------------------------------------------- client
@dataclass
class Peer:
    index: int
    lead_s: float
    pc: Any = None
    track: Any = None
    offer_at: float = 0.0
    connected_at: float | None = None
    received: list[tuple[float, float]] = field(default_factory=list)  # (arrival, rms)


def opus_packets(signal: np.ndarray) -> list[bytes]:
    """``signal`` (48 kHz mono int16) as Opus packets of 20 ms, encoded once like aiortc would (stereo, 96 kb/s)."""
    import av

    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate, codec.format, codec.layout, codec.sample_rate = 96000, "s16", "stereo", RATE
    codec.time_base = fractions.Fraction(1, RATE)
    codec.options = {"application": "voip"}
    packets: list[bytes] = []
    padded = np.concatenate([signal, np.zeros(-signal.size % FRAME + 2 * FRAME, np.int16)])
    for start in range(0, padded.size, FRAME):
        frame = av.AudioFrame.from_ndarray(np.repeat(padded[start : start + FRAME], 2)[None, :], format="s16", layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = RATE, start, fractions.Fraction(1, RATE)
        packets.extend(bytes(packet) for packet in codec.encode(frame))
    return packets[: signal.size // FRAME]


def speech_track(turn_packets: list[bytes], silence_packet: bytes, clip_s: float, lead_s: float, turn_s: float) -> Any:
    """An aiortc audio track: ``lead_s`` of silence, then a turn (the clip, then silence) every ``turn_s``.

    The Opus packets are encoded once for all peers and sent as they are (aiortc
    packetizes, encrypts and sends them; it only skips its own encoder), so the
    client processes stay cheap next to the server they measure.
    """
    import av
    from aiortc import MediaStreamTrack

    lead_frames = int(lead_s * RATE) // FRAME

    class SpeechTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None
            self.sent = 0

        def speech_onsets(self, until: float) -> list[tuple[float, float]]:
            """(onset, end) wall times of every turn sent before ``until``."""
            if self.start is None:
                return []
            out = []
            onset = self.start + lead_frames * FRAME / RATE
            while onset + clip_s < until:
                out.append((onset, onset + clip_s))
                onset += turn_s
            return out

        async def recv(self) -> Any:
            now = time.monotonic()
            if self.start is None:
                self.start = now
            wait = self.start + self.sent * FRAME / RATE - now
            if wait > 0:
                await asyncio.sleep(wait)
            index = self.sent - lead_frames
            packet = av.Packet(silence_packet if index < 0 else turn_packets[index % len(turn_packets)])
            packet.pts, packet.time_base = self.sent * FRAME, fractions.Fraction(1, RATE)
            self.sent += 1
            return packet

    return SpeechTrack()


async def connect_peer(peer: Peer, base: str, media: tuple[list[bytes], bytes, float], turn_s: float, client: Any) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from flowrtc.adapters.webrtc_tracks import decode_audio_shared

    pc = peer.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("text")
    peer.track = speech_track(*media, lead_s=peer.lead_s, turn_s=turn_s)
    sender = pc.addTrack(peer.track)

    def heard(decoded: tuple[np.ndarray, int]) -> None:
        samples = decoded[0][0].astype(np.float32)
        peer.received.append((time.monotonic(), float(np.sqrt(np.mean(samples * samples)))))

    # The reply is decoded (mono) in one shared thread per client process, and each frame is
    # timed on arrival by a callback: no decoder thread and no reader task per peer.
    receiver = next(t.receiver for t in pc.getTransceivers() if t.sender is sender)
    shared = decode_audio_shared(receiver, mono=True, deliver=heard, as_samples=True)

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                if not shared:
                    heard((frame.to_ndarray()[:, ::2], frame.sample_rate))

        asyncio.ensure_future(read())

    @pc.on("connectionstatechange")
    def on_state() -> None:
        if pc.connectionState == "connected" and peer.connected_at is None:
            peer.connected_at = time.monotonic()

    await pc.setLocalDescription(await pc.createOffer())
    peer.offer_at = time.monotonic()
    reply = await client.post(f"{base}/webrtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer", "webrtc_id": f"bench-{peer.index}"})
    answer = reply.json()
    if answer.get("type") != "answer":
        raise RuntimeError(f"peer {peer.index} refused: {answer}")
    assert "opus/48000" in answer["sdp"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))


def turn_latencies(peer: Peer, kind: str, until: float, turn_s: float) -> list[tuple[float, float | None]]:
    """(turn onset, latency or None if unanswered) for every complete turn."""
    out: list[tuple[float, float | None]] = []
    for onset, end in peer.track.speech_onsets(until - turn_s):
        window = [at for at, rms in peer.received if onset <= at < onset + turn_s and rms > SPEECH_RMS]
        if kind in ("echo", "echo_sync", "passthrough"):
            out.append((onset, window[0] - onset if window else None))
        else:
            after = [at for at in window if at >= end]
            out.append((onset, after[0] - end if after else None))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))] if ordered else float("nan")


def starved_seconds(pid: int) -> float:
    """Time the process's threads were runnable but waiting for a core (other processes had them)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            pass
    return total / 1e9


async def client_main(base: str, kind: str, first: int, count: int, peers_total: int, seconds: float, turn_s: float, batch: int) -> None:
    """One client process: connect ``count`` peers, say "ready", measure after "go", print the results as JSON."""
    import httpx

    from flowrtc.testing import load_audio

    clip = load_audio(CLIP, sample_rate=RATE, layout="mono").to_int16().samples[0]
    turn = np.zeros(int(turn_s * RATE) // FRAME * FRAME, np.int16)
    turn[: clip.size] = clip
    media = (opus_packets(np.concatenate([turn, turn]))[turn.size // FRAME :], opus_packets(np.zeros(10 * FRAME, np.int16))[-1], clip.size / RATE)
    peers = [Peer(index, lead_s=0.5 + (index * turn_s / max(1, peers_total)) % turn_s) for index in range(first, first + count)]
    lags: list[float] = []

    async with httpx.AsyncClient(timeout=60) as client:
        for start in range(0, count, batch):
            group = peers[start : start + batch]
            await asyncio.gather(*(connect_peer(peer, base, media, turn_s, client) for peer in group))
            deadline = time.monotonic() + 30
            while any(peer.connected_at is None for peer in group) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        probing = asyncio.ensure_future(loop_lag_probe(lags))
        cpu0, t0 = sum(os.times()[:2]), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, t1 = sum(os.times()[:2]), time.monotonic()
        probing.cancel()
        await asyncio.gather(*(peer.pc.close() for peer in peers))
    turns = [item for peer in peers for item in turn_latencies(peer, kind, t1, turn_s) if item[0] >= t0 - turn_s]
    lags.sort()
    print(
        json.dumps({
            "turns": turns,
            "connects": [peer.connected_at - peer.offer_at for peer in peers if peer.connected_at is not None],
            "cpu_s": cpu1 - cpu0,
            "wall_s": t1 - t0,
            "loop_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))] if lags else 0.0,
        }),
        flush=True,
    )


def machine_busy_seconds() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_load(base: str, kind: str, peers_n: int, seconds: float, turn_s: float, batch: int, per_client: int, server_pid: int) -> dict[str, Any]:
    shares = [min(per_client, peers_n - first) for first in range(0, peers_n, per_client)]
    clients = []
    first = 0
    for count in shares:
        command = [sys.executable, __file__, "--client", base, "--handler", kind, "--first", str(first), "--count", str(count),
                   "--peers", str(peers_n), "--seconds", str(seconds), "--turn-s", str(turn_s), "--batch", str(batch)]
        clients.append(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        first += count
        # Connect the next client's peers only once these are up (connect times are not measured under a stampede).
        if clients[-1].stdout.readline().strip() != "ready":
            raise RuntimeError("a client process failed while connecting")
    get_json(f"{base}/bench/reset")
    before = get_json(f"{base}/bench/stats")
    cpu0, starved0, busy0, t0 = cpu_seconds(server_pid), starved_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    for client in clients:
        client.stdin.write("go\n")
        client.stdin.flush()
    time.sleep(seconds)
    cpu1, starved1, busy1, t1 = cpu_seconds(server_pid), starved_seconds(server_pid), machine_busy_seconds(), time.monotonic()
    after = get_json(f"{base}/bench/stats")
    rss = rss_mb(server_pid)
    results = [json.loads(client.communicate(timeout=120)[0].strip().splitlines()[-1]) for client in clients]
    wall = t1 - t0
    turns = sorted((onset, latency) for result in results for onset, latency in result["turns"])
    answered = [latency for _, latency in turns if latency is not None]
    third = max(1, len(turns) // 3)
    first_third = [lat for _, lat in turns[:third] if lat is not None]
    last_third = [lat for _, lat in turns[-third:] if lat is not None]
    connects = [value for result in results for value in result["connects"]]
    client_cpu = sum(result["cpu_s"] for result in results)
    return {
        "handler": kind,
        "peers": peers_n,
        "client_processes": len(clients),
        "connected": len(connects),
        "connect_median_ms": 1000 * statistics.median(connects) if connects else float("nan"),
        "connect_p95_ms": 1000 * percentile(connects, 0.95),
        "turns": len(turns),
        "answered": len(answered),
        "latency_median_ms": 1000 * statistics.median(answered) if answered else float("nan"),
        "latency_p90_ms": 1000 * percentile(answered, 0.9),
        "first_third_ms": 1000 * statistics.median(first_third) if first_third else float("nan"),
        "last_third_ms": 1000 * statistics.median(last_third) if last_third else float("nan"),
        "server_cpu_pct": 100 * (cpu1 - cpu0) / wall,
        "server_loop_cpu_pct": 100 * (after["threads_cpu_s"].get("event loop", 0.0) - before["threads_cpu_s"].get("event loop", 0.0)) / wall,
        "server_starved_pct": 100 * (starved1 - starved0) / wall,
        "client_cpu_pct": 100 * client_cpu / wall,
        "other_cpu_pct": max(0.0, 100 * ((busy1 - busy0) - (cpu1 - cpu0) - client_cpu) / wall),
        "client_loop_lag_p99_ms": max(result["loop_lag_p99_ms"] for result in results),
        "server_rss_mb": rss,
        "pauses": after["primers"] - before["primers"],
        "played_frames": after["played_frames"] - before["played_frames"],
        "reanchors": after["reanchors"] - before["reanchors"],
        "encoded_ahead": after["encoded_ahead"] - before["encoded_ahead"],
        "encoded_on_loop": after["encoded_on_loop"] - before["encoded_on_loop"],
        "loop_lag_p99_ms": after["loop_lag_p99_ms"],
    }


def bench(kind: str, peers: int, seconds: float, turn_s: float, batch: int, per_client: int, loop: str) -> dict[str, Any]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--handler", kind, "--loop", loop])
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get_json(f"{base}/bench/stats")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)
        probe_before = speed_probe_ms()
        result = run_load(base, kind, peers, seconds, turn_s, batch, per_client, server.pid)
        result["speed_probe_ms"] = max(probe_before, speed_probe_ms())  # the slower of before and after
        result["holds"] = result["answered"] == result["turns"] and abs(result["last_third_ms"] - result["first_third_ms"]) <= 100
        return result
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly (and a profile is written)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| handler | peers | connect median / p95 | answered | latency median / p90 | first → last third | server CPU: all (event loop) | clients CPU | other processes | frames played (pauses) | loop lag p99 server / client | speed probe | holds |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for r in results:
        rows.append(
            f"| {r['handler']} | {r['peers']} | {r['connect_median_ms']:.0f} / {r['connect_p95_ms']:.0f} ms | {r['answered']}/{r['turns']} "
            f"| {r['latency_median_ms']:.0f} / {r['latency_p90_ms']:.0f} ms | {r['first_third_ms']:.0f} → {r['last_third_ms']:.0f} ms "
            f"| {r['server_cpu_pct']:.0f} % ({r['server_loop_cpu_pct']:.0f} %) | {r['client_cpu_pct']:.0f} % ({r['client_processes']} proc.) | {r['other_cpu_pct']:.0f} % "
            f"| {r['played_frames']} ({r['pauses']}) | {r['loop_lag_p99_ms']:.0f} / {r['client_loop_lag_p99_ms']:.0f} ms | {r['speed_probe_ms']:.0f} ms | {'yes' if r['holds'] else 'no'} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default="50", help="comma-separated peer counts (default 50)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per run, after all peers connected")
    parser.add_argument("--handler", default="echo,reply_on_pause", help="echo, reply_on_pause, echo_sync, passthrough (comma-separated)")
    parser.add_argument("--turn-s", type=float, default=5.0, help="seconds between the starts of two turns of one peer")
    parser.add_argument("--batch", type=int, default=5, help="peers connected at once while ramping up")
    parser.add_argument("--per-client", type=int, default=25, help="peers per client process")
    parser.add_argument("--loop", default="auto", help="the server's event loop: auto, asyncio or uvloop")
    parser.add_argument("--json", action="store_true", help="print raw results as JSON lines too")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.handler, args.loop)
        return
    if args.client:
        client = client_main(args.client, args.handler, args.first, args.count, int(args.peers), args.seconds, args.turn_s, args.batch)
        try:
            import uvloop
        except ImportError:
            asyncio.run(client)
        else:
            uvloop.run(client)  # a cheaper loop for the clients, which share the machine with the server
        return
    results = []
    for kind in args.handler.split(","):
        for peers in (int(n) for n in args.peers.split(",")):
            result = bench(kind, peers, args.seconds, args.turn_s, args.batch, args.per_client, args.loop)
            results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
    print(f"\n{os.cpu_count()} cores shared by the server, the client processes and anything else running; {args.seconds:.0f} s measured per row\n")
    print(table(results))


if __name__ == "__main__":
    main()
