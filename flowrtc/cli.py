"""The ``flowrtc`` command."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from typing import Any, Sequence

__all__ = ["main", "demo_stream"]


def _demo_audio() -> str:
    return str(resources.files("flowrtc.static") / "hello-world_8k.wav")


def demo_stream() -> Any:
    """The demo: ReplyOnPause echo. Speak, pause, and hear yourself; the page shows each turn's length."""
    from flowrtc.events import AdditionalOutputs
    from flowrtc.handlers.reply_on_pause import ReplyOnPause
    from flowrtc.stream import Stream

    def echo(audio: tuple[int, Any]) -> Any:
        rate, samples = audio
        yield audio
        yield AdditionalOutputs(f"you spoke for {samples.shape[-1] / rate:.1f} s")

    return Stream(
        ReplyOnPause(echo),
        modality="audio",
        mode="send-receive",
        concurrency_limit=10,
        # Served on this machine: host candidates are enough, no STUN round trip.
        server_rtc_configuration={"iceServers": []},
        ui_args={"title": "flowrtc echo"},
    )


def _demo(args: argparse.Namespace) -> int:
    if args.offline:
        return _offline_demo(args.audio)
    demo_stream().launch(host=args.host, port=args.port)
    return 0


def _offline_demo(audio: str | None) -> int:
    from flowrtc.graph import Graph
    from flowrtc.operators import decode, encode, handler, resample
    from flowrtc.testing import run

    graph = Graph(audio=decode() | resample(16000) | handler(lambda audio: audio) | encode(sample_rate=24000), name="echo")
    recording = run(graph, audio=audio or _demo_audio())
    for at, item in recording.timeline:
        print(f"{at:8.3f}s  {type(item).__name__}")
    out = recording.audio
    print(f"echoed {out.duration_s if out else 0:.2f} s of audio at {out.sample_rate if out else 0} Hz")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowrtc", description="Real-time audio/video pipelines.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="serve the built-in page with an echo demo (open the printed URL)")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    demo.add_argument("--offline", action="store_true", help="instead, play a recording through an echo graph and print the timeline")
    demo.add_argument("--audio", help="with --offline: the recording to play")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
