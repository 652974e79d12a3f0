"""A phone agent on Twilio: a chime when the call connects, then each turn echoed back.

A ``Stream`` serves Twilio's two routes:

* ``POST /telephone/incoming``: the voice webhook. It answers TwiML that connects
  the call to the WebSocket below, passing the caller's number and call SID.
* ``WS /telephone/handler``: Twilio Media Streams (8 kHz µ-law, 20 ms frames).
  The session runs in phone mode; replies are paced in real time, barge-in sends
  Twilio ``clear`` so the caller stops hearing the old reply at once, and a
  ``mark`` after each reply comes back as a ``PlaybackMark`` once it has played.

The agent here answers with ``ReplyOnPause``; swap ``answer`` for speech to
text → LLM → text to speech (see ``llm_voice_chat.py``) to make it talk.

    flowrtc run examples/twilio_phone_agent.py --port 8000
    python examples/twilio_phone_agent.py --port 8000

Then expose the port over HTTPS (``ngrok http 8000``, or your own proxy that
forwards ``X-Forwarded-Proto`` and ``Host``) and set the Twilio number's voice
webhook to ``https://<public host>/telephone/incoming`` (HTTP POST). Set
``TWILIO_AUTH_TOKEN`` so both routes check ``X-Twilio-Signature``; without it
they accept any request, which is fine on 127.0.0.1 only. Nothing here needs the
network to start: ``tests/test_examples.py`` plays a call into it with a fake
Twilio client.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterator

import numpy as np

from flowrtc import ReplyOnPause, Stream
from flowrtc.adapters.twilio import current_call

RATE = 8000  # the phone line's rate; replies at other rates are resampled anyway


def chime(*pitches_hz: float, note_s: float = 0.15) -> tuple[int, np.ndarray]:
    """Short sine notes, one after the other, at 8 kHz."""
    t = np.arange(int(note_s * RATE)) / RATE
    fade = np.minimum(1.0, np.minimum(t, note_s - t) / 0.01)  # no clicks
    notes = [np.sin(2 * np.pi * hz * t) * fade * 8000 for hz in pitches_hz]
    return RATE, np.concatenate(notes).astype(np.int16).reshape(1, -1)


def greet() -> Iterator[Any]:
    """Runs once when the call connects; what it yields plays first."""
    call = current_call()  # what Twilio's "start" message said about this call
    if call is not None:
        caller = call.custom_parameters.get("From", "an unknown number")
        print(f"call {call.call_sid or call.stream_sid} from {caller}", flush=True)
    yield chime(660, 880)


def answer(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
    """Each time the caller pauses: a short beep, then their own words back."""
    yield chime(990, note_s=0.1)
    yield audio


stream = Stream(
    ReplyOnPause(answer, startup_fn=greet, input_sample_rate=RATE, output_sample_rate=RATE),
    modality="audio",
    mode="send-receive",
    concurrency_limit=10,  # calls at once; the webhook answers <Reject reason="busy"/> past it
    time_limit=600,  # seconds per call
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve the phone agent for Twilio.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    stream.launch(host=options.host, port=options.port)
