"""The ``flowrtc`` command."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Sequence

__all__ = ["main"]


def _demo_audio() -> str:
    return str(resources.files("flowrtc.static") / "hello-world_8k.wav")


def _demo(args: argparse.Namespace) -> int:
    from flowrtc.graph import Graph
    from flowrtc.operators import decode, encode, handler, resample
    from flowrtc.testing import run

    graph = Graph(audio=decode() | resample(16000) | handler(lambda audio: audio) | encode(sample_rate=24000), name="echo")
    recording = run(graph, audio=args.audio or _demo_audio())
    for at, item in recording.timeline:
        print(f"{at:8.3f}s  {type(item).__name__}")
    out = recording.audio
    print(f"echoed {out.duration_s if out else 0:.2f} s of audio at {out.sample_rate if out else 0} Hz")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowrtc", description="Real-time audio/video pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a built-in demo")
    demo.add_argument("--audio", help="recording to play through the echo graph")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
