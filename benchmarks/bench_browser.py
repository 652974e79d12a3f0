"""End of speech → first reply audio in a real browser, over the WebSocket route.

The built-in page in headless Chromium (``?transport=websocket``: PCM16 at its
AudioContext's rate both ways) talks to ``ReplyOnPause(echo)`` served by
``bench_websocket.py serve --page`` (uvloop, as the other benchmarks). Its microphone
plays Asterisk "hello world" followed by 2.5 s of silence, looped. The page times each
answer itself: from the moment it sent the last loud 20 ms frame (louder than -41 dBFS,
``SPEECH_RMS``) to the arrival of the first reply frame (``window.flowrtc.answerMs``).

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


async def browser_answers(port: int, microphone: Path, turns: int) -> list[float]:
    """Seconds from the end of speech to the first reply frame, as the page measured them."""
    async with launch_chromium(microphone) as browser:
        await browser.send("Page.navigate", url=f"http://127.0.0.1:{port}/?transport=websocket")
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
        await browser.evaluate("document.getElementById('stop').click()")
    if errors:
        raise RuntimeError(f"the page reported errors: {errors}")
    # The first turn may start mid-word (the microphone runs before the socket opens): drop it.
    return [ms / 1000 for ms in answers[1 : turns + 1]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--turns", type=int, default=8, help="answers timed per client per round")
    args = parser.parse_args()
    if CHROMIUM is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    port = free_port()
    server = start_server(port)
    rows: list[tuple[float, float, float, float]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            microphone = microphone_file(Path(folder))
            print(f"speed probe: {speed_probe_ms():.0f} ms (about 125 at full speed)", flush=True)
            print("| round | browser (WebSocket, PCM16) median / p90 (s) | Python client (FastRTC protocol, µ-law 16 kHz) median / p90 (s) | ratio |")
            print("| ---: | ---: | ---: | ---: |")
            for round_number in range(1, args.rounds + 1):
                browser = asyncio.run(browser_answers(port, microphone, args.turns))
                python: dict[str, Any] = asyncio.run(run_client(port, "fastrtc", 1, args.turns, 0.0, "hello"))
                b50, b90 = statistics.median(browser), float(np.percentile(browser, 90))
                p50, p90 = python["eos_to_audio_median_s"], python["eos_to_audio_p90_s"]
                rows.append((b50, b90, p50, p90))
                print(f"| {round_number} | {b50:.3f} / {b90:.3f} | {p50:.3f} / {p90:.3f} | {b50 / p50:.2f} |", flush=True)
    finally:
        server.terminate()
        server.wait(20)
    b = statistics.median(r[0] for r in rows)
    p = statistics.median(r[2] for r in rows)
    print(f"\nmedian of {len(rows)} rounds: browser {b:.3f} s, Python client {p:.3f} s, ratio {b / p:.2f}")


if __name__ == "__main__":
    main()
