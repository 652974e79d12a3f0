"""``stopword_gate``: let a turn through only after a stop word ("computer", "hey flow").

It sits between ``vad`` and ``pause_gate``::

    vad() | stopword_gate(["computer"]) | pause_gate() | reply(fn) | interrupt()

While *armed* it holds the audio back and swallows the VAD's speech events
(pauses announced by ``vad(early_pause_ms=...)`` too), so no turn forms, nothing
barges in and no reply starts early. It transcribes only what the VAD calls
speech (Whisper writes words for noise): the last ``window_s`` of each speech
segment, every ``check_every_s`` of speech and when the segment ends. When a
stop phrase is heard it emits :class:`~flowrtc.events.StopWord` (the client's
``{"type": "stopword"}`` message) and opens: the audio *after* the stop phrase
goes on to ``pause_gate`` with the speech events, until the VAD's next
``SpeechStopped`` ends that turn; then it is armed again.

* Stop word, pause, question: the question is the next turn.
* Stop word and question in one breath: the turn starts where the stop phrase
  ends, estimated from its share of the transcript's letters (the STT protocol
  gives no word times), and runs to the pause.
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any, AsyncIterable, AsyncIterator, Iterable, NamedTuple

from flowrtc.errors import ConfigurationError
from flowrtc.events import SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, StopWord
from flowrtc.media import AudioChunk
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.pause_gate import DEFAULT_SPEECH_PAD_MS
from flowrtc.operators.speech import load_stt_model, transcribe
from flowrtc.operators.vad import DEFAULT_MIN_SILENCE_MS, DEFAULT_MIN_SPEECH_MS

__all__ = ["stopword_gate", "StopWordMatch", "find_stop_word", "normalize_words"]

#: Seconds of speech transcribed at each check.
DEFAULT_WINDOW_S = 3.0
#: Seconds of speech between two checks during a long segment.
DEFAULT_CHECK_EVERY_S = 1.0

_NOT_WORD = re.compile(r"[^\w']+")


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation: ``"Hey, Flow!"`` -> ``["hey", "flow"]``.

    Hyphens and other punctuation separate words; apostrophes are dropped
    inside them (``"what's"`` -> ``"whats"``).
    """
    return [w for w in (word.replace("'", "") for word in _NOT_WORD.split(text.lower())) if w]


class StopWordMatch(NamedTuple):
    """A stop phrase found in a transcript.

    Attributes:
        word: the stop phrase as configured.
        end_fraction: share of the transcript's letters up to the end of the
            phrase (1.0: nothing was said after it).
    """

    word: str
    end_fraction: float


def find_stop_word(text: str, stop_words: Iterable[str]) -> StopWordMatch | None:
    """The first stop phrase said in ``text``, matched on whole words.

    Case-insensitive, punctuation ignored, multi-word phrases matched as
    consecutive words (``"hey flow"`` matches ``"Hey, flow."`` but not
    ``"they flowed"``). The earliest phrase in the text wins.
    """
    words = normalize_words(text)
    if not words:
        return None
    best: tuple[int, int, str] | None = None  # (end word index, start, phrase)
    for phrase in stop_words:
        target = normalize_words(phrase)
        n = len(target)
        if not n:
            continue
        for start in range(len(words) - n + 1):
            if words[start : start + n] == target:
                if best is None or start + n < best[0]:
                    best = (start + n, start, phrase)
                break
    if best is None:
        return None
    end = best[0]
    letters = sum(len(w) for w in words)
    return StopWordMatch(best[2], sum(len(w) for w in words[:end]) / letters)


def _clip(pieces: Iterable[AudioChunk], start_s: float, end_s: float) -> list[AudioChunk]:
    out = []
    for chunk in pieces:
        rate = chunk.sample_rate
        first = max(0, round(start_s * rate) - chunk.pts)
        last = min(chunk.n_samples, round(end_s * rate) - chunk.pts)
        if last > first:
            out.append(chunk if first == 0 and last == chunk.n_samples else chunk.slice(first, last))
    return out


@operator
async def stopword_gate(
    source: AsyncIterable[Any],
    stop_words: Iterable[str],
    *,
    model: Any = None,
    window_s: float = DEFAULT_WINDOW_S,
    check_every_s: float = DEFAULT_CHECK_EVERY_S,
    min_speech_ms: float = DEFAULT_MIN_SPEECH_MS,
    min_silence_ms: float = DEFAULT_MIN_SILENCE_MS,
    speech_pad_ms: float = DEFAULT_SPEECH_PAD_MS,
) -> AsyncIterator[Any]:
    """Hold audio and speech events back until a stop phrase is heard; then pass one turn.

    Options:
        stop_words: words or phrases to listen for (case and punctuation ignored).
        model: FastRTC-style STT model; default: the shared Whisper tiny.en.
        window_s: seconds of the current speech segment transcribed per check.
        check_every_s: during speech, transcribe again after this many seconds
            (and always when the segment ends).
        min_speech_ms / min_silence_ms: the upstream ``vad``'s settings, in ms
            (its events come that long after speech starts / stops).
        speech_pad_ms: audio before the speech included in what is transcribed, in ms.

    Emits ``StopWord(word=phrase)`` at the media time it was heard, before the
    turn it opens; that turn's ``SpeechStarted`` carries the estimated time the
    speech after the phrase began, so it can be earlier than the ``StopWord``. Other items
    (client messages, ``PauseDetected`` from ``trigger_response``) always pass.
    Each check blocks this stage for one transcription (about 0.5 s for
    Whisper tiny.en); the audio behind it waits, so nothing is lost.
    """
    phrases = [stop_words] if isinstance(stop_words, str) else list(stop_words)
    if not any(normalize_words(p) for p in phrases):
        raise ConfigurationError("stopword_gate needs at least one stop word or phrase")
    if window_s <= 0 or check_every_s <= 0:
        raise ConfigurationError("window_s and check_every_s must be > 0 s")
    model = await load_stt_model(model)
    speech_s = min_speech_ms / 1000
    silence_s = min_silence_ms / 1000
    lead_s = speech_s + speech_pad_ms / 1000
    keep_s = max(window_s, lead_s + silence_s) + 0.1
    recent: deque[AudioChunk] = deque()  # armed: the last keep_s of audio
    armed = True
    in_turn = False  # open: a SpeechStarted went on to pause_gate
    speech_start_s: float | None = None  # armed, in a speech segment: when the speech began
    heard: str | None = None  # armed: the phrase heard in this segment, nothing said after it yet
    paused: SpeechPaused | None = None  # armed: the segment's pause going on now (vad(early_pause_ms=...))
    next_check_s = 0.0
    checked_until_s = 0.0  # the end of the audio last transcribed
    now_s = 0.0

    async def check(end_s: float) -> tuple[StopWordMatch, float] | None:
        """Transcribe the segment's last ``window_s`` up to ``end_s``; the match and where the phrase ends."""
        nonlocal checked_until_s
        assert speech_start_s is not None
        checked_until_s = now_s
        begin_s = max(speech_start_s - speech_pad_ms / 1000, end_s - window_s)
        pieces = _clip(recent, begin_s, now_s)
        if not pieces:
            return None
        match = find_stop_word(await transcribe(model, AudioChunk.concat(pieces)), phrases)
        if match is None:
            return None
        spoken_from = max(begin_s, speech_start_s)
        return match, spoken_from + match.end_fraction * max(0.0, end_s - spoken_from)

    async with scoped(source) as items:
        async for item in items:
            if not armed:
                yield item
                if isinstance(item, SpeechStarted):
                    in_turn = True
                elif isinstance(item, SpeechStopped) and in_turn:
                    armed, in_turn = True, False
                    recent.clear()
                continue

            if isinstance(item, AudioChunk):
                recent.append(item)
                now_s = item.end_pts / item.sample_rate
                while recent and recent[0].end_pts / recent[0].sample_rate <= now_s - keep_s:
                    recent.popleft()
                if speech_start_s is None or now_s < next_check_s:
                    continue
                found = await check(now_s)
                next_check_s = now_s + check_every_s
                if found is None:
                    continue
                match, cut_s = found
                if heard is None:
                    heard = match.word
                    yield StopWord(word=match.word, media_time_s=now_s)
                if match.end_fraction < 1.0:
                    # Words follow the phrase: the rest of this segment, from where it ends, is the turn.
                    armed, in_turn, heard, speech_start_s = False, True, None, None
                    yield SpeechStarted(media_time_s=cut_s)
                    for chunk in _clip(recent, cut_s, now_s):
                        yield chunk
                    if paused is not None:  # the turn opened during a pause: it may be ending now
                        yield paused
                        paused = None
            elif isinstance(item, SpeechPaused):
                paused = item if speech_start_s is not None else None
            elif isinstance(item, SpeechResumed):
                paused = None
            elif isinstance(item, SpeechStarted):
                speech_start_s = item.media_time_s - speech_s
                next_check_s = speech_start_s + check_every_s
            elif isinstance(item, SpeechStopped):
                paused = None
                if speech_start_s is None:
                    continue
                speech_end_s = max(speech_start_s, item.media_time_s - silence_s)
                # A check that already heard all of the speech found no words after a phrase.
                found = await check(speech_end_s) if checked_until_s < speech_end_s else None
                speech_start_s = None
                if heard is None:
                    if found is None:
                        continue
                    yield StopWord(word=found[0].word, media_time_s=item.media_time_s)
                heard = None
                if found is not None and found[0].end_fraction < 1.0:
                    # Words followed the phrase in this segment: they are the turn.
                    cut_s = found[1]
                    yield SpeechStarted(media_time_s=cut_s)
                    for chunk in _clip(recent, cut_s, now_s):
                        yield chunk
                    yield item
                    recent.clear()
                else:
                    # The question comes next: hand over the silence since, as its lead-in.
                    armed = False
                    for chunk in _clip(recent, speech_end_s, now_s):
                        yield chunk
            else:
                yield item
