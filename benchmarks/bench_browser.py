"""End of speech → first reply audio in a real browser, over the WebSocket route (and WebRTC).

The built-in page in headless Chromium (``?transport=websocket``: PCM16 at its
AudioContext's rate both ways) talks to ``ReplyOnPause(echo)`` served by
``bench_websocket.py serve --page`` (uvloop, as the other benchmarks). Its microphone
plays Asterisk "hello world" followed by 2.5 s of silence, looped. The page times each
answer itself: from the moment it sent the last loud 20 ms frame (louder than -41 dBFS,
``SPEECH_RMS``) to the arrival of the first reply frame (``window.flowrtc.answerMs``).
With ``--transport websocket,webrtc`` the page also talks WebRTC (Opus both ways); there it
times from the levels it hears, polled every 10 ms: the microphone going quiet, the reply
becoming audible as it plays.

Each round also runs bench_websocket's Python client (one session, FastRTC's protocol,
µ-law at 16 kHz, the same clip and gap) against the same server, right after the
browser: the baseline the browser's figure is compared with.

Run: ``python benchmarks/bench_browser.py [--rounds 3] [--turns 8]`` (needs Chromium:
``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_websocket import CLIP, GAP_S, run_client  # noqa: E402
from browser_support import CHROMIUM, launch_chromium  # noqa: E402
from machine import speed_probe_ms  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bench_websocket.py"), "serve", "--port", str(port), "--page"])
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=1):
                return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("the benchmark server did not start") from None
            time.sleep(0.2)


def microphone_file(folder: Path) -> Path:
    """The fake microphone: "hello world" and ``GAP_S`` of silence, at 48 kHz (Chromium loops it)."""
    from flowrtc.media import AudioChunk
    from flowrtc.testing import load_audio, save_audio

    clip = load_audio(CLIP, sample_rate=48000)
    path = folder / "hello-then-silence.wav"
    save_audio(path, AudioChunk.concat([clip, AudioChunk(np.zeros((1, int(GAP_S * 48000)), np.int16), 48000)]))
    return path


async def browser_answers(port: int, microphone: Path, turns: int, transport: str = "websocket") -> list[float]:
    """Seconds from the end of speech to the first reply audio, as the page measured them."""
    async with launch_chromium(microphone) as browser:
        await browser.send("Page.navigate", url=f"http://127.0.0.1:{port}/?transport={transport}")
        if not await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 20):
            raise RuntimeError("the page did not load")
        await browser.evaluate("document.getElementById('start').click()")
        if not await browser.wait("window.flowrtc.status === 'connected'", 20):
            raise RuntimeError(f"the page did not connect: {await browser.evaluate('JSON.stringify(window.flowrtc.errors)')}")
        from flowrtc.testing import load_audio

        cycle_s = load_audio(CLIP).duration_s + GAP_S  # one turn of the looped microphone
        await browser.wait(f"window.flowrtc.answerMs.length >= {turns + 1}", cycle_s * (turns + 3))
        answers = await browser.evaluate("window.flowrtc.answerMs")
        errors = await browser.evaluate("window.flowrtc.errors")
        jitter_ms = await browser.evaluate("window.flowrtc.stats.jitterBufferMs")
        if transport == "webrtc" and jitter_ms is not None:
            print(f"  (Chromium's jitter buffer held the reply audio {jitter_ms:.0f} ms on average)", flush=True)
        await browser.evaluate("document.getElementById('stop').click()")
    if errors:
        raise RuntimeError(f"the page reported errors: {errors}")
    # The first turn may start mid-word (the microphone runs before the socket opens): drop it.
    return [ms / 1000 for ms in answers[1 : turns + 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=8, help="answers timed per client per round")
    parser.add_argument("--transport", default="websocket", help="the page's transports, comma-separated: websocket, webrtc")
    args = parser.parse_args()
    transports = [t.strip() for t in args.transport.split(",") if t.strip()]
    if not transports or set(transports) - {"websocket", "webrtc"}:
        sys.exit("--transport takes websocket and/or webrtc")
    if CHROMIUM is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    port = free_port()
    server = start_server(port)
    rows: list[list[float]] = []  # per round: (median, p90) per transport, then the Python client's
    labels = {"websocket": "browser (WebSocket, PCM16)", "webrtc": "browser (WebRTC, Opus)"}
    try:
        with tempfile.TemporaryDirectory() as folder:
            microphone = microphone_file(Path(folder))
            print(f"speed probe: {speed_probe_ms():.0f} ms (about 125 at full speed)", flush=True)
            heads = [f"{labels[t]} median / p90 (s)" for t in transports] + ["Python client (FastRTC protocol, µ-law 16 kHz) median / p90 (s)"]
            print("| round | " + " | ".join(heads) + " | " + " | ".join(f"ratio {t}" for t in transports) + " |")
            print("| ---: |" + " ---: |" * (len(heads) + len(transports)))
            for round_number in range(1, args.rounds + 1):
                row: list[float] = []
                for transport in transports:
                    answers = asyncio.run(browser_answers(port, microphone, args.turns, transport))
                    row += [statistics.median(answers), float(np.percentile(answers, 90))]
                python: dict[str, Any] = asyncio.run(run_client(port, "fastrtc", 1, args.turns, 0.0, "hello"))
                row += [python["eos_to_audio_median_s"], python["eos_to_audio_p90_s"]]
                rows.append(row)
                cells = [f"{row[2 * i]:.3f} / {row[2 * i + 1]:.3f}" for i in range(len(transports) + 1)]
                ratios = [f"{row[2 * i] / row[-2]:.2f}" for i in range(len(transports))]
                print(f"| {round_number} | " + " | ".join(cells + ratios) + " |", flush=True)
    finally:
        server.terminate()
        server.wait(20)
    python_median = statistics.median(r[-2] for r in rows)
    summary = [f"{labels[t]} {statistics.median(r[2 * i] for r in rows):.3f} s (ratio {statistics.median(r[2 * i] for r in rows) / python_median:.2f})" for i, t in enumerate(transports)]
    print(f"\nmedian of {len(rows)} rounds: " + ", ".join(summary) + f", Python client {python_median:.3f} s")


if __name__ == "__main__":
    main()
