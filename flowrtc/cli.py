"""The ``flowrtc`` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from importlib import resources
from typing import Any, Sequence

from flowrtc.errors import ConfigurationError, FlowRTCError
from flowrtc.loader import load_object

__all__ = ["main", "demo_stream", "app_factory"]


def _demo_audio() -> str:
    return str(resources.files("flowrtc.static") / "hello-world_8k.wav")


def demo_stream() -> Any:
    """The demo: ReplyOnPause echo. Speak, pause, and hear yourself; the page shows each turn's length."""
    from flowrtc.events import AdditionalOutputs
    from flowrtc.handlers.reply_on_pause import ReplyOnPause
    from flowrtc.stream import Stream

    def echo(audio: tuple[int, Any]) -> Any:
        rate, samples = audio
        # First, so it shows even when the user talks over the echo (which closes this call).
        yield AdditionalOutputs(f"you spoke for {samples.shape[-1] / rate:.1f} s")
        yield audio

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


def _as_asgi(target: Any) -> Any:
    from flowrtc.stream import Stream

    if isinstance(target, Stream):
        return target.app()
    if callable(target):
        return target
    raise ConfigurationError(f"cannot serve a {type(target).__name__}: give a Stream or an ASGI app")


def app_factory() -> Any:
    """ASGI app named by ``FLOWRTC_APP`` (how ``flowrtc run --reload/--workers`` starts workers)."""
    from flowrtc.runtime import tune_gc_for_serving

    app = _as_asgi(load_object(os.environ["FLOWRTC_APP"]))
    tune_gc_for_serving()
    return app


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    target = load_object(args.app)
    app = _as_asgi(target)
    print(f"flowrtc: serving {args.app} at http://{args.host}:{args.port}/", flush=True)
    if args.reload or args.workers > 1:
        os.environ["FLOWRTC_APP"] = str(Path(args.app.partition(":")[0]).resolve()) + (":" + args.app.partition(":")[2] if ":" in args.app else "")
        uvicorn.run("flowrtc.cli:app_factory", factory=True, host=args.host, port=args.port, reload=args.reload, workers=None if args.reload else args.workers)
    else:
        from flowrtc.runtime import tune_gc_for_serving

        tune_gc_for_serving()
        uvicorn.run(app, host=args.host, port=args.port)
    return 0


def _graph_of(target: Any) -> Any:
    from flowrtc.graph import Graph
    from flowrtc.stream import Stream

    if isinstance(target, (Graph, Stream)) or hasattr(target, "graph"):
        return target.graph() if not isinstance(target, Graph) else target
    raise ConfigurationError(f"cannot process with a {type(target).__name__}: give a Graph, a Stream or a handler with .graph()")


def _event_record(at: float, item: Any) -> dict[str, Any]:
    import msgspec

    record: dict[str, Any] = {"t": round(at, 4), "type": type(item).__name__}
    if isinstance(item, msgspec.Struct):
        for field in item.__struct_fields__:
            value = getattr(item, field)
            if field == "media_time_s":
                continue
            if isinstance(value, (str, int, float, bool)) or value is None:
                record[field] = value
            elif field == "audio":
                record["audio_s"] = round(value.duration_s, 4)
    elif hasattr(item, "args"):
        record["args"] = [a if isinstance(a, (str, int, float, bool)) or a is None else repr(a) for a in item.args]
    return record


def _progress_bar(stream: Any) -> Any:
    state = {"last": -1}

    def show(at: float, total: float) -> None:
        if total <= 0:
            return
        percent = int(100 * at / total)
        if percent != state["last"]:
            state["last"] = percent
            filled = percent // 4
            stream.write(f"\r[{'#' * filled}{'.' * (25 - filled)}] {percent:3d}%  {at:7.1f}/{total:.1f} s")
            stream.flush()

    return show


def _process(args: argparse.Namespace) -> int:
    import json

    from flowrtc.media import AudioChunk
    from flowrtc.testing import load_audio, run, save_audio

    graph = _graph_of(load_object(args.app))
    audio = load_audio(args.input)
    show_progress = audio.duration_s >= args.progress_after_s and sys.stderr.isatty() or args.progress
    recording = run(graph, audio=audio, timeout_s=None, trailing_silence_s=args.trailing_silence_s,
                    progress=_progress_bar(sys.stderr) if show_progress else None)
    if show_progress:
        sys.stderr.write("\n")
    if args.output:
        if recording.audio is None:
            print("flowrtc: the graph produced no audio; nothing written to " + args.output, file=sys.stderr)
        else:
            save_audio(args.output, recording.audio)
    if args.events:
        with open(args.events, "w", encoding="utf-8") as out:
            for at, item in recording.timeline:
                if not isinstance(item, AudioChunk):
                    out.write(json.dumps(_event_record(at, item)) + "\n")
    replies = recording.audio.duration_s if recording.audio is not None else 0.0
    events = len(recording.events)
    print(f"flowrtc: processed {audio.duration_s:.2f} s of audio: {events} events, {replies:.2f} s of audio out")
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

    serve = commands.add_parser("run", help="serve a Stream (or an ASGI app) from a Python file")
    serve.add_argument("app", help="path/to/app.py[:name] (default names: stream, app, graph, handler)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--reload", action="store_true", help="restart when the code changes")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (sessions are pinned to one; use sticky routing)")
    serve.set_defaults(run=_run)

    process = commands.add_parser("process", help="play a recording through a graph faster than real time")
    process.add_argument("app", help="path/to/app.py[:name]: a Stream, a Graph or a handler with .graph()")
    process.add_argument("input", help="audio file to play (anything PyAV reads)")
    process.add_argument("-o", "--output", help="write the output audio here (wav, flac, ogg, mp3, webm)")
    process.add_argument("--events", help="write the event timeline here as JSON lines")
    process.add_argument("--trailing-silence-s", type=float, default=1.0, help="silence appended so a last turn can end (default 1 s)")
    process.add_argument("--progress", action="store_true", help="always show the progress bar")
    process.add_argument("--progress-after-s", type=float, default=30.0, help=argparse.SUPPRESS)
    process.set_defaults(run=_process)

    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 0
    except (FlowRTCError, OSError) as exc:
        print(f"flowrtc: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
