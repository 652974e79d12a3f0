"""ReplyOnStopWords and the stopword_gate operator, on recorded prompts joined with hibari saying the stop words.

Whisper tiny.en and hibari are loaded once per process; the spoken inputs are built once per module.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Any, AsyncIterator

import numpy as np
import pytest

from flowrtc.adapters.messages import to_wire
from flowrtc.errors import ConfigurationError, MissingExtraError
from flowrtc.events import (
    Interrupt,
    Log,
    PendingUtterance,
    ReplyStarted,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    StopWord,
    Utterance,
)
from flowrtc.graph import Graph
from flowrtc.handlers.reply_on_stopwords import ReplyOnStopWords
from flowrtc.media import AudioChunk
from flowrtc.models.stt import get_stt_model
from flowrtc.models.tts import HibariTTSOptions, get_tts_model
from flowrtc.operators.resample import Resampler
from flowrtc.operators.stopwords import find_stop_word, normalize_words, stopword_gate
from flowrtc.testing import arun, audio_frames, load_audio

MEDIA = Path(__file__).parent / "media"
HELLO = "asterisk_hello-world_8k.wav"  # "Hello world!"
THANKS = "asterisk_demo-thanks_8k.wav"  # "Goodbye. Thank you for trying out the asterisk open source PBX."
REPLY_S = 0.5


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stt_model() -> Any:
    return get_stt_model()


def normalise(text: str) -> str:
    return " ".join(normalize_words(text))


@functools.lru_cache(maxsize=None)
def said(text: str, rate: int) -> AudioChunk:
    """hibari saying ``text`` (fixed seed), as int16 at ``rate``."""
    tts_rate, samples = get_tts_model().tts(text, HibariTTSOptions(seed=1))
    converter = Resampler(rate)
    chunk = AudioChunk.from_tuple((tts_rate, samples)).to_int16()
    return AudioChunk.concat([*converter.push(chunk), *converter.flush()])


@functools.lru_cache(maxsize=None)
def clip(name: str, rate: int) -> AudioChunk:
    return load_audio(MEDIA / name, sample_rate=rate)


def join(rate: int, *parts: str | float) -> AudioChunk:
    """Clips (file names), hibari speech (other text) and silences (seconds), back to back."""
    pieces = []
    for part in parts:
        if isinstance(part, float):
            pieces.append(AudioChunk.silence(part, rate))
        elif part.endswith(".wav"):
            pieces.append(clip(part, rate))
        else:
            pieces.append(said(part, rate))
    return AudioChunk.concat([p.with_pts(0) for p in pieces])


class Replier:
    """A reply function that records the audio it was given and answers with ``reply_s`` of tone."""

    def __init__(self, reply_s: float = REPLY_S) -> None:
        self.heard: list[tuple[int, np.ndarray]] = []
        self.reply_s = reply_s

    def __call__(self, audio: tuple[int, np.ndarray]) -> Any:
        self.heard.append(audio)
        n = int(24000 * self.reply_s)
        yield 24000, (0.1 * np.sin(np.arange(n) * 0.05)).astype(np.float32)


def transcripts(stt_model: Any, replier: Replier) -> list[str]:
    return [normalise(stt_model.stt(audio)) for audio in replier.heard]


# -- matching -----------------------------------------------------------------------------------


def test_stop_words_match_case_and_punctuation_blind_on_whole_words(stt_model: Any) -> None:
    handler = ReplyOnStopWords(Replier(), ["computer", "hey flow"], stt_model=stt_model)
    assert handler.stop_word_detected("Computer.")
    assert handler.stop_word_detected("OK, COMPUTER! What time is it?")
    assert handler.stop_word_detected("Hey, Flow.")
    assert handler.stop_word_detected("hey-flow")
    assert not handler.stop_word_detected("They flowed over the computers.")
    assert not handler.stop_word_detected("Hey there, flow.")
    assert not handler.stop_word_detected("")


def test_find_stop_word_reports_what_follows_the_phrase() -> None:
    assert find_stop_word("Computer.", ["computer"]) == ("computer", 1.0)
    match = find_stop_word("Computer, what time is it?", ["what time", "computer"])
    assert match is not None and match.word == "computer"  # the earliest phrase said wins
    assert match.end_fraction == pytest.approx(8 / 20)  # letters: computer / computerwhattimeisit
    assert find_stop_word("Hey Flo!", ["hey flow", "hey flo"]) == ("hey flo", 1.0)
    assert find_stop_word("What's up?", ["whats"]) == ("whats", pytest.approx(5 / 7))
    assert find_stop_word("nothing here", ["computer"]) is None


def test_bad_stop_words_are_refused(stt_model: Any) -> None:
    for bad in ([], [""], ["..."], [None]):
        with pytest.raises(ConfigurationError):
            ReplyOnStopWords(Replier(), bad, stt_model=stt_model)  # type: ignore[arg-type]
    assert ReplyOnStopWords(Replier(), "computer", stt_model=stt_model).stop_words == ["computer"]


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_replies_only_to_what_follows_the_stop_word(stt_model: Any) -> None:
    rate = 48000
    replier = Replier()
    handler = ReplyOnStopWords(replier, ["computer"])  # the default STT model, shared
    assert handler.stt_model is stt_model
    audio = join(rate, 0.5, "Computer.", 1.0, HELLO, 1.0, THANKS)
    recording = await arun(handler, audio=audio, trailing_silence_s=1.0)

    assert transcripts(stt_model, replier) == ["hello world"]  # one reply, to the audio after the stop word
    assert replier.heard[0][0] == handler.input_sample_rate
    stop_words = recording.of_type(StopWord)
    assert [s.word for s in stop_words] == ["computer"]
    assert to_wire(stop_words[0]) == {"type": "stopword", "data": ""}
    # In order: the stop word, then the single reply and its audio.
    items = recording.items
    first_audio = next(i for i, item in enumerate(items) if isinstance(item, AudioChunk))
    [started] = recording.of_type(ReplyStarted)
    assert items.index(stop_words[0]) < items.index(started) < first_audio
    assert 1.5 < stop_words[0].media_time_s < 2.5  # heard at the end of "Computer." (ends ~1.8 s)
    assert recording.audio is not None
    assert recording.audio.duration_s == pytest.approx(started.media_time_s + REPLY_S, abs=0.05)
    # The untriggered speech ("Goodbye. Thank you...") was never a turn.
    assert recording.log().count("pause_detected") == 1


@pytest.mark.anyio
async def test_no_stop_word_no_reply(stt_model: Any) -> None:
    replier = Replier()
    handler = ReplyOnStopWords(replier, ["computer", "hey flow"], input_sample_rate=16000)
    recording = await arun(handler, audio=join(16000, 0.5, HELLO, 0.6, THANKS, 0.5, HELLO), trailing_silence_s=1.0)
    assert replier.heard == []
    assert recording.of_type(StopWord, ReplyStarted, SpeechStarted, Utterance) == []
    assert recording.audio is None


@pytest.mark.anyio
async def test_stop_word_and_question_in_one_breath(stt_model: Any) -> None:
    replier = Replier()
    handler = ReplyOnStopWords(replier, ["computer"], input_sample_rate=16000)
    recording = await arun(handler, audio=join(16000, 0.5, "Computer, what is the weather like today?"), trailing_silence_s=1.0)
    assert [s.word for s in recording.of_type(StopWord)] == ["computer"]
    assert transcripts(stt_model, replier) == ["what is the weather like today"]


@pytest.mark.anyio
async def test_multi_word_phrase_then_a_short_pause_and_armed_again_after_each_turn(stt_model: Any) -> None:
    replier = Replier()
    handler = ReplyOnStopWords(replier, ["hey flow", "hey flo"], input_sample_rate=16000)
    audio = join(16000, 0.3, "Hey flow.", 0.2, HELLO, 1.0, THANKS, 1.0, "Hey flow.", 1.0, HELLO)
    recording = await arun(handler, audio=audio, trailing_silence_s=1.0)
    assert len(recording.of_type(StopWord)) == 2
    assert transcripts(stt_model, replier) == ["hello world", "hello world"]  # "Goodbye..." was not answered


@pytest.mark.anyio
async def test_only_the_stop_word_interrupts_a_reply(stt_model: Any) -> None:
    replier = Replier(reply_s=12.0)
    handler = ReplyOnStopWords(replier, ["computer"], input_sample_rate=16000)
    # The first reply plays from ~4.7 s for 12 s: "Goodbye..." talks over it, then the stop word does.
    audio = join(16000, 0.5, "Computer.", 1.0, HELLO, 0.5, THANKS, 1.0, "Computer, what is the weather like today?")
    recording = await arun(handler, audio=audio, trailing_silence_s=1.0)
    stop_words = recording.of_type(StopWord)
    interrupts = recording.of_type(Interrupt)
    assert len(stop_words) == 2 and len(interrupts) == 1
    assert recording.items.index(stop_words[1]) < recording.items.index(interrupts[0])
    assert interrupts[0].media_time_s > 9.0  # not during "Goodbye..." (about 5 to 10.5 s)
    assert transcripts(stt_model, replier) == ["hello world", "what is the weather like today"]


@pytest.mark.anyio
async def test_early_replies_start_only_in_addressed_turns(stt_model: Any) -> None:
    """With early_pause_ms, the answered turn is started early and answered as without;
    the pause inside the unaddressed "Goodbye. Thank you..." starts nothing."""
    audio = join(16000, 0.5, "Computer.", 1.0, HELLO, 1.0, THANKS)
    plain_replier, early_replier = Replier(), Replier()
    plain = await arun(ReplyOnStopWords(plain_replier, ["computer"], input_sample_rate=16000), audio=audio, trailing_silence_s=1.0)
    early = await arun(
        ReplyOnStopWords(early_replier, ["computer"], input_sample_rate=16000, early_pause_ms=192), audio=audio, trailing_silence_s=1.0
    )
    assert transcripts(stt_model, early_replier) == transcripts(stt_model, plain_replier) == ["hello world"]
    assert early.times(ReplyStarted) == plain.times(ReplyStarted)
    [pending] = early.of_type(PendingUtterance)  # "Goodbye." ends with a pause of ~0.3 s, but it was not addressed
    # One call of fn, made early on exactly the turn's audio, became the reply.
    assert len(early_replier.heard) == 1
    assert np.array_equal(early_replier.heard[0][1], plain_replier.heard[0][1])
    assert pending.media_time_s < early.times(ReplyStarted)[0] - 0.2  # the head start
    assert early.audio is not None and plain.audio is not None
    assert np.array_equal(early.audio.samples, plain.audio.samples)


@pytest.mark.anyio
async def test_gate_swallows_pauses_while_armed_and_announces_one_going_on_when_it_opens() -> None:
    class Hears:
        def __init__(self, text: str) -> None:
            self.text = text

        def stt(self, audio: Any) -> str:
            return self.text

    async def source() -> AsyncIterator[Any]:
        for start in range(0, 16000 * 2, 320):
            yield AudioChunk(np.full((1, 320), 1000, np.int16), 16000, start)
            if start == 3200:
                yield SpeechStarted(media_time_s=0.22)
            elif start == 9600:
                yield SpeechPaused(speech_end_s=0.45, media_time_s=0.62)
            elif start == 12800:
                yield SpeechResumed(media_time_s=0.82)
            elif start == 19200:
                yield SpeechPaused(speech_end_s=1.05, media_time_s=1.22)

    # Never addressed: nothing of the segment, its pauses included, gets through.
    unaddressed = [item async for item in source() | stopword_gate(["computer"], model=Hears("just chatting"), check_every_s=1.2)]
    assert unaddressed == []
    # Addressed: the first check (1.2 s of speech in) comes during the second pause; it opens
    # the turn, and that pause is announced. The first one, withdrawn while armed, is not.
    opened = [item async for item in source() | stopword_gate(["computer"], model=Hears("Computer, lights on."), check_every_s=1.2)]
    events = [item for item in opened if not isinstance(item, AudioChunk)]
    assert [type(e) for e in events] == [StopWord, SpeechStarted, SpeechPaused]
    assert events[2] == SpeechPaused(speech_end_s=1.05, media_time_s=1.22)
    assert opened.index(events[2]) > opened.index(events[1])


# -- the operator on its own, and the classic surface ----------------------------------------------


@pytest.mark.anyio
async def test_gate_passes_other_items_and_swallows_unaddressed_speech() -> None:
    class Never:
        def stt(self, audio: Any) -> str:
            return "just chatting"

    async def source() -> AsyncIterator[Any]:
        yield Log(data="hi")
        for start in range(0, 16000 * 2, 320):
            yield AudioChunk(np.full((1, 320), 1000, np.int16), 16000, start)
            if start == 3200:
                yield SpeechStarted(media_time_s=0.22)
        yield SpeechStopped(media_time_s=2.0)

    out = [item async for item in source() | stopword_gate(["computer"], model=Never())]
    assert out == [Log(data="hi")]


def test_graph_copy_and_repr(stt_model: Any) -> None:
    handler = ReplyOnStopWords(Replier(), ["computer"], stt_model=stt_model, can_interrupt=False)
    graph = handler.graph()
    assert isinstance(graph, Graph) and graph.name == "ReplyOnStopWords"
    assert "stopword_gate" in repr(graph.audio) and "pause_gate" in repr(graph.audio)
    clone = handler.copy()
    assert isinstance(clone, ReplyOnStopWords) and clone.stop_words == ["computer"] and clone.stt_model is stt_model
    assert "stop_words=['computer']" in repr(handler)
    handler.send_stopword()  # outside a session: nothing to send to, no error


def test_missing_stopword_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import flowrtc.models.stt as stt_module

    monkeypatch.setattr(stt_module, "_cache", {})
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    with pytest.raises(MissingExtraError, match=re.escape("flowrtc[stopword]")) as info:
        ReplyOnStopWords(Replier(), ["computer"])
    assert isinstance(info.value, ImportError) and info.value.extra == "stopword"


def test_classic_receive_and_emit(stt_model: Any) -> None:
    replier = Replier()
    handler = ReplyOnStopWords(replier, ["computer"], input_sample_rate=16000, output_sample_rate=16000)
    try:
        for frame in audio_frames(join(16000, 0.5, "Computer.", 1.0, HELLO, 1.0)):
            handler.receive(frame.to_tuple())
        outputs = []
        for _ in range(50):
            out = handler.emit()
            if out is None and outputs:
                break
            if out is not None:
                outputs.append(out)
    finally:
        handler.shutdown()
    assert transcripts(stt_model, replier) == ["hello world"]
    assert outputs and all(rate == 16000 for rate, _ in outputs)
    assert sum(samples.shape[-1] for _, samples in outputs) == pytest.approx(16000 * REPLY_S, abs=320)
