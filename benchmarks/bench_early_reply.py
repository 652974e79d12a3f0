"""What starting the reply early (``ReplyOnPause(early_pause_ms=...)``) saves, wall clock, over WebSocket.

Run: ``python benchmarks/bench_early_reply.py [--handlers think300,talk_back] [--early 192] [--sessions 10] [--rounds 3]``

For each handler (see ``bench_websocket.make_handler``: ``think300`` waits 300 ms before its
first audio, as a language-model API and a voice would; ``talk_back`` runs the offline models
for real, Whisper tiny.en then hibari; ``pipeline_talk_back`` does the same as a pipeline of
operators, where ``stt`` is what starts early), rounds alternate between the plain handler and the same
handler with ``+early<ms>``: a fresh ``bench_websocket.py serve`` process each time, then its
client process (FastRTC's protocol, 16 kHz µ-law, "hello world" and 2.5 s of silence per
turn, in real time; ``--speech heldout`` plays bench_heldout's prompts by other speakers instead). Each row is the median over the round's turns of **end of speech → first
reply audio** at the client; the summary gives the median of the rounds and the ratio early /
plain, measured in the same run (the machine is shared: compare within a run, not across runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_websocket  # noqa: E402
from machine import speed_probe_ms  # noqa: E402


def seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def one_round(handler: str, sessions: int, turns: int, port: int, speech: str) -> dict[str, Any]:
    server = bench_websocket.start_server(port, handler)
    try:
        client = subprocess.run(
            [sys.executable, bench_websocket.__file__, "client", "--port", str(port), "--protocol", "fastrtc",
             "--sessions", str(sessions), "--turns", str(turns), "--ramp", "2.0", "--speech", speech],
            capture_output=True, text=True, check=True,
        )
        row = {**json.loads(client.stdout), **bench_websocket.http_json(port, "/bench/stats")}
    finally:
        server.terminate()
        server.wait(10)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handlers", default="think300,talk_back")
    parser.add_argument("--early", type=int, default=192, help="early_pause_ms of the early rounds")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--speech", default="hello", choices=["hello", "sentences", "heldout"], help="what the sessions say (bench_websocket --speech)")
    args = parser.parse_args()
    print(f"speed probe: {speed_probe_ms():.0f} ms", flush=True)
    print("| handler | round | plain: EoS → audio median / p90 (s) | early: median / p90 (s) | answered plain / early |")
    print("| --- | ---: | ---: | ---: | ---: |")
    summary = []
    for handler in args.handlers.split(","):
        plain, early = [], []
        for round_ in range(1, args.rounds + 1):
            rows = {}
            for kind in (handler, f"{handler}+early{args.early}"):
                rows[kind] = one_round(kind, args.sessions, args.turns, args.port, args.speech)
                time.sleep(1.0)
            a, b = rows[handler], rows[f"{handler}+early{args.early}"]
            if a["eos_to_audio_median_s"] is not None and b["eos_to_audio_median_s"] is not None:
                plain.append(a["eos_to_audio_median_s"])
                early.append(b["eos_to_audio_median_s"])
            print(f"| {handler} | {round_} | {seconds(a['eos_to_audio_median_s'])} / {seconds(a['eos_to_audio_p90_s'])} | "
                  f"{seconds(b['eos_to_audio_median_s'])} / {seconds(b['eos_to_audio_p90_s'])} | {a['answered']}/{a['turns']}, {b['answered']}/{b['turns']} |", flush=True)
        if not plain:
            summary.append(f"{handler}: no turn answered")
            continue
        p, e = statistics.median(plain), statistics.median(early)
        summary.append(f"{handler}: plain {p:.3f} s, early_pause_ms={args.early} {e:.3f} s, ratio {e / p:.2f}, saved {p - e:.3f} s (medians of {args.rounds} rounds)")
    print()
    print("\n".join(summary))


if __name__ == "__main__":
    main()
