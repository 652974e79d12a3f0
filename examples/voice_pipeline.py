"""A voice assistant as one pipeline, offline: speech in, speech out.

::

    decode() | resample(16000) | vad(early_pause_ms=192) | pause_gate() | stt() | answer() | tts() | encode(sample_rate=24000)

* ``vad`` marks speech in band; ``pause_gate`` turns each user turn into an ``Utterance``;
* ``stt`` replaces the utterance with its ``Transcript`` (Whisper tiny.en, on this machine);
  ``vad(early_pause_ms=192)`` lets it start 192 ms into a pause, while the turn may still go
  on, so the transcript is ready sooner when the pause does end the turn;
* ``answer`` is the stand-in for your LLM: it answers each transcript with ``str`` items,
  one per sentence, so the first sentence is spoken while the next is being written;
* ``tts`` speaks every ``str`` (hibari, on this machine), placed in media time after the
  turn it answers; a user who starts talking over it cuts it off (``Interrupt``);
* ``encode`` cuts the audio into 20 ms frames at 24 kHz for the transport.

Run it on a recording (default: two Asterisk prompts, from tests/media) and listen to
what it answered::

    python examples/voice_pipeline.py                       # prints the timeline
    python examples/voice_pipeline.py talk.wav --out reply.wav
    python examples/voice_pipeline.py --serve               # a web page with a microphone

Needs ``pip install 'flowrtc[stt,tts]'``; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator

from flowrtc import AudioChunk, Graph, Interrupt, Transcript, decode, encode, operator, resample
from flowrtc.models.stt import get_stt_model
from flowrtc.operators import scoped
from flowrtc.operators.pause_gate import pause_gate
from flowrtc.operators.speech import stt, tts
from flowrtc.operators.vad import vad
from flowrtc.testing import load_audio, run, save_audio

MEDIA = Path(__file__).resolve().parent.parent / "tests" / "media"
#: Start transcribing this far into a pause (the turn ends at 448 ms); see docs/turn-taking.md.
EARLY_PAUSE_MS = 192


def reply_to(text: str) -> list[str]:
    """The offline stand-in for a language model: a canned answer, sentence by sentence."""
    words = text.lower()
    if "hello" in words:
        return ["Hello to you too!", "What can I do for you today?"]
    if "goodbye" in words or "thank" in words:
        return ["You are welcome.", "Goodbye, and have a nice day."]
    return [f"You said: {text}", "Tell me more."]


@operator
async def answer(source: AsyncIterable[Any]) -> AsyncIterator[Any]:
    """Answer each ``Transcript`` with text; pass everything through.

    A real step would stream an LLM's reply here, yielding each sentence as soon
    as it is complete (run blocking clients in ``anyio.to_thread.run_sync``).
    """
    async with scoped(source) as items:
        async for item in items:
            yield item
            if isinstance(item, Transcript):
                for sentence in reply_to(item.text):
                    yield sentence


def voice_graph() -> Graph:
    """One fresh pipeline per session (each session has its own VAD state and queue)."""
    return Graph(
        audio=decode()
        | resample(16000)
        | vad(early_pause_ms=EARLY_PAUSE_MS)
        | pause_gate()
        | stt()
        | answer()
        | tts()
        | encode(sample_rate=24000, frame_ms=20),
        name="voice_pipeline",
        modality="audio",
    )


def default_input() -> AudioChunk:
    """'Hello world!', a pause, then 'Goodbye. Thank you for trying out...' at 16 kHz."""
    hello = load_audio(MEDIA / "asterisk_hello-world_8k.wav", sample_rate=16000)
    thanks = load_audio(MEDIA / "asterisk_demo-thanks_8k.wav", sample_rate=16000)
    gap = AudioChunk.silence(4.0, 16000)  # room for the first answer to play before the next turn
    return AudioChunk.concat([hello, gap, thanks])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", nargs="?", help="a recording to talk to the pipeline (default: two prompts)")
    parser.add_argument("--out", help="write what the pipeline said (placed in time) to this .wav file")
    parser.add_argument("--serve", action="store_true", help="serve a web page to talk to it live")
    args = parser.parse_args(argv)

    if args.serve:
        from flowrtc.stream import Stream

        Stream(voice_graph(), modality="audio", mode="send-receive").launch()
        return 0

    audio = load_audio(args.audio) if args.audio else default_input()
    recording = run(voice_graph(), audio=audio, trailing_silence_s=2.0)
    for at, item in recording.timeline:
        if isinstance(item, Transcript):
            print(f"{at:6.2f} s  user said: {item.text}")
        elif isinstance(item, Interrupt):
            print(f"{at:6.2f} s  the user cut the answer off")
    said = recording.audio
    if said is None:
        print("the pipeline said nothing")
        return 0
    # Check the round trip: what the pipeline said, heard by the same speech-to-text model.
    print(f"the pipeline spoke for {said.duration_s:.2f} s of media time:")
    print(f"  {get_stt_model().stt(said.to_tuple())}")
    if args.out:
        print(f"wrote {save_audio(args.out, said)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
