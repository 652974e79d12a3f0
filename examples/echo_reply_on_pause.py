"""Echo each turn back once the speaker pauses: ReplyOnPause, FastRTC's quickstart.

``echo`` gets the whole turn, ``(sample_rate, int16 array (1, n))``, each time the
speaker pauses, and yields what to play: here the turn itself, and a line of text
as ``AdditionalOutputs`` (the built-in page shows it). Speaking while the echo
plays cuts it off.

    flowrtc run examples/echo_reply_on_pause.py      # talk to it at http://127.0.0.1:8000/
    python examples/echo_reply_on_pause.py            # play a recording through it, print the timeline
    python examples/echo_reply_on_pause.py talk.wav --out echo.wav
"""

from __future__ import annotations

import argparse
from importlib.resources import files
from typing import Any, Iterator

import numpy as np

from flowrtc import AdditionalOutputs, AudioChunk, ReplyOnPause, Stream
from flowrtc.testing import Recording, load_audio, run, save_audio


def echo(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
    rate, samples = audio
    yield AdditionalOutputs(f"you spoke for {samples.shape[1] / rate:.1f} s")
    yield audio


stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")


def main(argv: list[str] | None = None) -> Recording:
    parser = argparse.ArgumentParser(description="Play a recording through the echo and print what happened.")
    parser.add_argument("audio", nargs="?", help="a recording (default: flowrtc's 'Hello world' clip)")
    parser.add_argument("--out", help="write the echo, placed in time as a listener heard it, to this file")
    args = parser.parse_args(argv)

    voice = load_audio(args.audio or files("flowrtc.static") / "hello-world_8k.wav")
    recording = run(stream.graph(), audio=voice, trailing_silence_s=1.0)  # silence lets the last turn end
    for at, item in recording.timeline:
        if not isinstance(item, AudioChunk):
            print(f"{at:7.3f} s  {item!r}")
    if recording.audio is not None:
        print(f"echoed {sum(c.duration_s for c in recording.audio_chunks):.2f} s of audio at {recording.audio.sample_rate} Hz")
        if args.out:
            print(f"wrote {save_audio(args.out, recording.audio)}")
    return recording


if __name__ == "__main__":
    main()
