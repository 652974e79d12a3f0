"""The ``stt`` and ``tts`` operators, on the recordings in tests/media and on hibari's own speech.

Whisper tiny.en and hibari are loaded once per process (get_stt_model / get_tts_model cache them).
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import numpy as np
import pytest

from flowrtc.errors import MissingExtraError
from flowrtc.events import Interrupt, Log, PauseDetected, PendingUtterance, SpeechResumed, SpeechStarted, SpeechStopped, Transcript, Utterance
from flowrtc.graph import Graph
from flowrtc.media import AudioChunk
from flowrtc.models.stt import get_stt_model
from flowrtc.models.tts import get_tts_model
from flowrtc.operators import resample
from flowrtc.operators.pause_gate import pause_gate
from flowrtc.operators.reply import CATCH_UP_S, catch_up_s, offline_replies
from flowrtc.operators.speech import load_stt_model, load_tts_model, stt, tts
from flowrtc.operators.vad import vad
from flowrtc.testing import arun, load_audio

MEDIA = Path(__file__).parent / "media"
HELLO = "asterisk_hello-world_8k.wav"
THANKS = "asterisk_demo-thanks_8k.wav"
MONKEYS = "asterisk_tt-monkeys_8k_nonspeech.wav"  # no speech
PUBLISHED = {
    HELLO: "hello world",
    THANKS: "goodbye thank you for trying out the asterisk open source pbx",
}
FOX = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stt_model() -> Any:
    return get_stt_model()


@pytest.fixture(scope="module")
def tts_model() -> Any:
    return get_tts_model()


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9 ]", " ", text.lower().replace("'", "")).split())


async def items(*values: Any) -> AsyncIterator[Any]:
    for value in values:
        yield value


async def collect(flow: Any) -> list[Any]:
    return [item async for item in flow]


@functools.lru_cache(maxsize=None)
def load_clip(name: str, sample_rate: int | None = None) -> AudioChunk:
    return load_audio(MEDIA / name, sample_rate=sample_rate)


def utterance(audio: AudioChunk, at_s: float) -> Utterance:
    return Utterance(audio=audio, start_s=0.0, end_s=audio.duration_s, media_time_s=at_s)


# -- stt ----------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_stt_transcribes_utterances_at_any_rate(rate: int, stt_model: Any) -> None:
    hello = load_clip(HELLO, sample_rate=rate)
    thanks = load_clip(THANKS, sample_rate=rate)
    before = SpeechStopped(media_time_s=1.0)
    out = await collect(items(before, utterance(hello, 1.2), utterance(thanks, 9.0)) | stt())
    assert out[0] == before
    transcripts = out[1:]
    assert all(isinstance(t, Transcript) and t.final for t in transcripts)
    assert [normalise(t.text) for t in transcripts] == [PUBLISHED[HELLO], PUBLISHED[THANKS]]
    assert [t.media_time_s for t in transcripts] == [1.2, 9.0]


@pytest.mark.anyio
async def test_stt_uses_the_shared_model(stt_model: Any) -> None:
    assert await load_stt_model() is stt_model
    assert await load_stt_model(stt_model) is stt_model


@pytest.mark.anyio
async def test_stt_keeps_the_utterance_when_asked(stt_model: Any) -> None:
    said = utterance(load_clip(HELLO), 2.0)
    out = await collect(items(said) | stt(keep_utterance=True))
    assert len(out) == 2 and out[0] is said
    assert isinstance(out[1], Transcript) and normalise(out[1].text) == PUBLISHED[HELLO]


@pytest.mark.anyio
async def test_empty_transcripts_produce_nothing(stt_model: Any) -> None:
    silent = utterance(AudioChunk.silence(1.0, 16000), 1.0)
    empty = utterance(AudioChunk.silence(0.0, 16000), 2.0)
    assert await collect(items(silent, empty) | stt()) == []
    assert await collect(items(silent, empty) | stt(keep_utterance=True)) == [silent, empty]


@pytest.mark.anyio
async def test_stt_takes_any_fastrtc_style_model() -> None:
    seen: list[tuple[int, tuple[int, ...], Any]] = []

    class Counter:  # only the sync FastRTC method: it must run in a worker thread
        def stt(self, audio: tuple[int, np.ndarray]) -> str:
            rate, samples = audio
            seen.append((rate, samples.shape, samples.dtype))
            return f"  {samples.shape[1] / rate:.1f} seconds  "

    stereo = AudioChunk(np.zeros((2, 8000), np.float32), 16000)
    out = await collect(items(utterance(stereo, 3.0), Log(data="x")) | stt(model=Counter()))
    assert out == [Transcript(text="0.5 seconds", media_time_s=3.0), Log(data="x")]
    assert seen == [(16000, (1, 8000), np.dtype(np.int16))]  # FastRTC's (rate, (1, n) int16)


def _speech_graph(**vad_options: Any) -> Graph:
    return Graph(audio=resample(16000) | vad(**vad_options) | pause_gate() | stt())


@pytest.mark.anyio
async def test_vad_gates_non_speech_away_from_stt(stt_model: Any) -> None:
    # Whisper alone writes words for these monkey screams (docs/models.md); behind the VAD it never sees them.
    recording = await arun(_speech_graph(), audio=load_clip(MONKEYS), trailing_silence_s=1.0)
    assert recording.of_type(Utterance) == []
    assert recording.of_type(Transcript) == []


@pytest.mark.anyio
async def test_vad_pause_gate_stt_on_a_recording(stt_model: Any) -> None:
    recording = await arun(_speech_graph(), audio=load_clip(HELLO), trailing_silence_s=1.0)
    transcripts = recording.of_type(Transcript)
    assert [normalise(t.text) for t in transcripts] == [PUBLISHED[HELLO]]
    # In band, after the turn's end, at its media time.
    pause = recording.of_type(PauseDetected)[0]
    assert recording.items.index(transcripts[0]) > recording.items.index(pause)
    assert transcripts[0].media_time_s == pause.media_time_s


class Heard:
    """The real model, noting the length of each audio it is asked to transcribe."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.lengths: list[float] = []
        self.asked = anyio.Event()

    async def astt(self, audio: tuple[int, np.ndarray]) -> str:
        self.lengths.append(round(audio[1].shape[1] / audio[0], 3))
        self.asked.set()
        return await self.model.astt(audio)


@pytest.mark.anyio
async def test_stt_starts_on_a_pending_turn_and_uses_that_transcript(stt_model: Any) -> None:
    heard = Heard(stt_model)
    turn = utterance(load_clip(HELLO), 1.76)
    pending = PendingUtterance(utterance=turn, media_time_s=1.64)

    async def source() -> AsyncIterator[Any]:
        yield pending
        with anyio.fail_after(30):
            await heard.asked.wait()  # transcribing before the turn is over
        yield Utterance(audio=turn.audio, start_s=turn.start_s, end_s=turn.end_s, media_time_s=1.888)

    out = await collect(stt(model=heard)(source()))
    assert out[0] is pending
    (transcript,) = out[1:]
    assert normalise(transcript.text) == PUBLISHED[HELLO] and transcript.media_time_s == 1.888
    assert heard.lengths == [round(turn.audio.duration_s, 3)]  # once, early


@pytest.mark.anyio
async def test_stt_drops_a_pending_turn_the_speaker_went_on_from(stt_model: Any) -> None:
    heard = Heard(stt_model)
    hello = load_clip(HELLO)
    both = AudioChunk.concat([hello, AudioChunk.silence(0.35, 8000), hello])

    async def source() -> AsyncIterator[Any]:
        yield PendingUtterance(utterance=utterance(hello, 1.64), media_time_s=1.64)
        with anyio.fail_after(30):
            await heard.asked.wait()
        yield SpeechResumed(media_time_s=1.9)
        yield utterance(both, 4.0)

    out = await collect(stt(model=heard)(source()))
    (transcript,) = [item for item in out if isinstance(item, Transcript)]
    assert normalise(transcript.text) == "hello world hello world"
    assert heard.lengths == [round(hello.duration_s, 3), round(both.duration_s, 3)]


@pytest.mark.anyio
async def test_early_transcripts_on_a_recording_are_the_same_transcripts(stt_model: Any) -> None:
    hello = load_clip(HELLO)
    # the clip's own silence makes the pause 0.37 s, from the end of "world" to "hello"
    audio = AudioChunk.concat([hello, AudioChunk.silence(0.25, 8000), hello, AudioChunk.silence(1.5, 8000), load_clip(THANKS)])
    plain = await arun(_speech_graph(), audio=audio, trailing_silence_s=1.0)
    early = await arun(_speech_graph(early_pause_ms=192), audio=audio, trailing_silence_s=1.0)
    assert early.of_type(PendingUtterance) and early.of_type(SpeechResumed)  # the pause started one early
    assert [(t.text, t.media_time_s) for t in early.of_type(Transcript)] == [(t.text, t.media_time_s) for t in plain.of_type(Transcript)]
    assert [normalise(t.text) for t in plain.of_type(Transcript)] == ["hello world hello world", PUBLISHED[THANKS]]


# -- tts ----------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_tts_speech_transcribes_back_to_the_text(stt_model: Any, tts_model: Any) -> None:
    said = PauseDetected(media_time_s=2.0)
    out = await collect(items(said, FOX) | tts())
    assert out[0] == said
    chunks = out[1:]
    assert chunks and all(isinstance(c, AudioChunk) for c in chunks)
    rate = chunks[0].sample_rate
    assert rate == tts_model.sample_rate
    assert chunks[0].pts == round(2.0 * rate)  # placed from the text's media time
    assert all(b.pts == a.end_pts for a, b in zip(chunks, chunks[1:]))  # contiguous
    spoken = AudioChunk.concat(chunks)
    heard = await collect(items(utterance(spoken, 5.0)) | stt())
    assert [normalise(t.text) for t in heard] == [normalise(FOX)]


@pytest.mark.anyio
async def test_tts_streams_sentence_by_sentence_and_queues_texts(tts_model: Any) -> None:
    first = "Hello there. How are you today? I am fine."
    out = await collect(items(Transcript(text="hi", media_time_s=1.0), first, "Goodbye.") | tts())
    assert out[0] == Transcript(text="hi", media_time_s=1.0)  # user text passes, unspoken
    chunks = out[1:]
    assert len(chunks) == 4  # one per sentence
    assert chunks[0].pts == 24000
    assert all(b.pts == a.end_pts for a, b in zip(chunks, chunks[1:]))  # the second text plays after the first


@pytest.mark.anyio
async def test_tts_ignores_blank_text_and_shares_the_model(tts_model: Any) -> None:
    assert await collect(items("", "   ", Log(data="x")) | tts()) == [Log(data="x")]
    assert await load_tts_model() is tts_model


class _SlowTTS:
    """Says one short chunk per sentence; the word "forever" never finishes synthesizing."""

    rate = 16000

    def __init__(self) -> None:
        self.first = anyio.Event()
        self.closed: list[str] = []

    async def stream_tts(self, text: str, options: Any = None) -> AsyncIterator[tuple[int, np.ndarray]]:
        try:
            for sentence in text.split(". "):
                if sentence == "forever":
                    await anyio.sleep_forever()
                yield self.rate, np.full(self.rate // 10, 0.1, np.float32)
                self.first.set()
        finally:
            self.closed.append(text)


@pytest.mark.anyio
async def test_interrupt_cancels_the_synthesis_in_progress() -> None:
    model = _SlowTTS()

    async def upstream() -> AsyncIterator[Any]:
        yield PauseDetected(media_time_s=1.0)
        yield "One. forever"
        yield "Queued behind it."
        await model.first.wait()
        yield Interrupt(media_time_s=1.05)
        yield "After."

    with anyio.fail_after(5):
        out = await collect(upstream() | tts(model=model))
    kinds = [type(item).__name__ for item in out]
    assert kinds == ["PauseDetected", "AudioChunk", "Interrupt", "AudioChunk"]
    assert out[1].pts == 16000
    assert out[3].pts == round(1.05 * 16000)  # the next reply starts where the cut happened
    assert model.closed == ["One. forever", "After."]  # closed, and the queued text never started


class _WallTimeTTS:
    """0.1 s of audio per sentence, each taking ``seconds`` of wall time to make."""

    rate = 16000

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds = seconds

    async def stream_tts(self, text: str, options: Any = None) -> AsyncIterator[tuple[int, np.ndarray]]:
        for _ in text.split(". "):
            await anyio.sleep(self.seconds)
            yield self.rate, np.full(self.rate // 10, 0.1, np.float32)


async def spoken_then_speech(speech_at_s: float) -> AsyncIterator[Any]:
    yield PauseDetected(media_time_s=1.0)
    yield "One. Two. Three."  # 0.3 s of audio from 1.0 s: it plays until 1.3 s
    yield SpeechStarted(media_time_s=speech_at_s)  # at once, before the voice has said it all


def audio_and_cuts(out: list[Any]) -> tuple[list[float], list[float]]:
    return [round(i.media_time_s, 3) for i in out if isinstance(i, AudioChunk)], [i.media_time_s for i in out if isinstance(i, Interrupt)]


@pytest.mark.anyio
async def test_barge_in_while_speaking() -> None:
    model = _WallTimeTTS()
    out = await collect(spoken_then_speech(1.2) | tts(model=model))
    assert [type(i).__name__ for i in out][-2:] == ["SpeechStarted", "Interrupt"]
    audio, cuts = audio_and_cuts(out)
    assert audio[:2] == [1.0, 1.1] and cuts == [1.2]  # at least what plays before 1.2 s, then the cut

    out = await collect(spoken_then_speech(1.4) | tts(model=model))  # after its audio ended: no cut
    assert audio_and_cuts(out) == ([1.0, 1.1, 1.2], [])

    out = await collect(spoken_then_speech(1.2) | tts(model=model, can_interrupt=False))
    assert audio_and_cuts(out) == ([1.0, 1.1, 1.2], [])


@pytest.mark.anyio
async def test_a_slow_voice_is_judged_where_its_audio_would_play_offline_and_cut_live_when_it_stalls() -> None:
    slow = _WallTimeTTS(seconds=0.3)  # slower than real time, as a big voice on a busy machine
    with offline_replies():  # what flowrtc.testing.run does: the same cut on any machine
        assert catch_up_s() == math.inf
        assert audio_and_cuts(await collect(spoken_then_speech(1.4) | tts(model=slow))) == ([1.0, 1.1, 1.2], [])
        assert audio_and_cuts(await collect(spoken_then_speech(1.15) | tts(model=slow))) == ([1.0, 1.1], [1.15])
    # live, a voice that has not got to 1.4 s within CATCH_UP_S (0.1 s) is still speaking there
    assert catch_up_s() == CATCH_UP_S == 0.1
    assert audio_and_cuts(await collect(spoken_then_speech(1.4) | tts(model=slow))) == ([], [1.4])


# -- missing extras -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_stt_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowrtc.models.stt as stt_module

    monkeypatch.setattr(stt_module, "_cache", {})
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(MissingExtraError, match=r"flowrtc\[stt\]") as info:
        await collect(items(utterance(load_clip(HELLO), 1.0)) | stt())
    assert isinstance(info.value, ImportError) and info.value.extra == "stt"


@pytest.mark.anyio
async def test_missing_tts_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowrtc.models.tts as tts_module

    monkeypatch.setattr(tts_module, "_cache", {})
    monkeypatch.setitem(sys.modules, "hibari", None)
    with pytest.raises(MissingExtraError, match=r"flowrtc\[tts\]") as info:
        await collect(items("Hello.") | tts())
    assert isinstance(info.value, ImportError) and info.value.extra == "tts"


# -- the example and the docs -------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def _doc_blocks(first_heading: str, end_heading: str) -> list[tuple[int, str]]:
    lines = (ROOT / "docs" / "models.md").read_text().splitlines()
    start, end = lines.index(first_heading), lines.index(end_heading)
    blocks, index = [], start
    while index < end:
        if lines[index].strip() == "```python":
            stop = lines.index("```", index + 1)
            blocks.append((index + 1, "\n".join(lines[index + 1 : stop]) + "\n"))
            index = stop
        index += 1
    return blocks


OPERATOR_DOCS = _doc_blocks("## Speech operators: `stt` and `tts`", "## Speed")


def test_the_operator_docs_have_python_blocks() -> None:
    assert len(OPERATOR_DOCS) == 3


@pytest.mark.parametrize(("line", "code"), OPERATOR_DOCS, ids=[f"models.md:{line}" for line, _ in OPERATOR_DOCS])
def test_doc_block_runs_as_is(line: int, code: str, capsys: pytest.CaptureFixture[str], stt_model: Any) -> None:
    exec(compile(code, f"docs/models.md:{line}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    if "Utterance" in code:
        assert "2 1.5\n" in out and "Hello there. How can I help? 5.0\n" in out


def test_voice_pipeline_example_runs() -> None:
    example = ROOT / "examples" / "voice_pipeline.py"
    result = subprocess.run([sys.executable, "-W", "error", str(example)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "user said: Hello world!" in result.stdout
    assert "hello to you too what can i do for you today" in normalise(result.stdout)  # hibari, heard by Whisper
    assert "the user cut the answer off" not in result.stdout
