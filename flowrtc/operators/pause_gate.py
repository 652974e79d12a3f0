"""``pause_gate``: collect one user turn and emit it as an ``Utterance``.

It follows the ``vad`` operator's events: a turn starts at ``SpeechStarted``
(``log: started_talking``) and ends at ``SpeechStopped`` (``PauseDetected``,
``log: pause_detected``, then the ``Utterance``). The utterance's audio runs
from ``speech_pad_ms`` before the speech to ``speech_pad_ms`` after it, at the
rate and layout the gate received. The user's audio stops here: only events
(and the utterances) go on, so what follows answers turns, not frames.

:func:`turn_settings` maps FastRTC's ``AlgoOptions`` and ``SileroVadOptions``
onto the streaming detector; :func:`turn_taking` builds ``vad | pause_gate`` from them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterable, AsyncIterator

from flowrtc.errors import ConfigurationError
from flowrtc.events import Log, PauseDetected, PendingUtterance, SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped, Utterance
from flowrtc.media import AudioChunk
from flowrtc.operators.core import Pipe, operator, scoped
from flowrtc.operators.vad import (
    DEFAULT_MIN_SILENCE_MS,
    DEFAULT_MIN_SPEECH_MS,
    DEFAULT_RISE_DB,
    DEFAULT_RISE_HOLD_MS,
    DEFAULT_TAIL_DB,
    DEFAULT_TAIL_MS,
    DEFAULT_THRESHOLD,
    check_early_pause,
    vad,
)

__all__ = ["pause_gate", "turn_settings", "turn_taking", "TurnSettings", "DEFAULT_SPEECH_PAD_MS"]

#: Audio kept before and after the speech in an utterance (ms).
DEFAULT_SPEECH_PAD_MS = 200.0
_FALLBACK_RATE = 16000  # rate of an empty utterance when no audio ever arrived


@dataclass(frozen=True)
class TurnSettings:
    """The streaming detector's settings.

    Attributes:
        threshold: speech probability at which speech starts (0..1).
        neg_threshold: probability below which speech stops (0..1).
        min_speech_ms: continuous speech before a turn starts, in ms.
        min_silence_ms: silence that ends a turn, in ms.
        speech_pad_ms: audio kept around the speech in an utterance, in ms.
        max_turn_s: a turn is cut after this many seconds.
    """

    threshold: float = DEFAULT_THRESHOLD
    neg_threshold: float = DEFAULT_THRESHOLD - 0.15
    min_speech_ms: float = DEFAULT_MIN_SPEECH_MS
    min_silence_ms: float = DEFAULT_MIN_SILENCE_MS
    speech_pad_ms: float = DEFAULT_SPEECH_PAD_MS
    max_turn_s: float = math.inf


def turn_settings(algo_options: Any = None, model_options: Any = None) -> TurnSettings:
    """Map FastRTC's ``AlgoOptions`` and ``SileroVadOptions`` onto the streaming detector.

    * a turn starts after ``max(min_speech_duration_ms, started_talking_threshold)``
      of continuous speech;
    * it ends after a silence of ``max(min_silence_duration_ms,
      audio_chunk_duration - speech_threshold)``: FastRTC's rule "a chunk with
      less than ``speech_threshold`` of speech is a pause", on a sliding chunk;
    * it is cut at ``min(max_continuous_speech_s, max_speech_duration_s)``;
    * ``threshold`` is Silero's, with speech ending below ``threshold - 0.15``;
      ``speech_pad_ms`` pads the utterance; ``window_size_samples`` is ignored.

    ``None`` stands for the default options (the same numbers as
    ``flowrtc.handlers.options``; a test keeps them equal).
    """
    default = TurnSettings()
    if algo_options is None and model_options is None:
        return default
    threshold = getattr(model_options, "threshold", default.threshold)
    min_speech_ms = float(getattr(model_options, "min_speech_duration_ms", default.min_speech_ms))
    min_silence_ms = float(getattr(model_options, "min_silence_duration_ms", 0.0))
    pad_ms = float(getattr(model_options, "speech_pad_ms", default.speech_pad_ms))
    max_speech_s = float(getattr(model_options, "max_speech_duration_s", math.inf))
    if algo_options is not None:
        min_speech_ms = max(min_speech_ms, round(algo_options.started_talking_threshold * 1000, 6))
        chunk_pause_ms = round((algo_options.audio_chunk_duration - algo_options.speech_threshold) * 1000, 6)
        max_turn_s = min(float(algo_options.max_continuous_speech_s), max_speech_s)
    else:
        chunk_pause_ms = default.min_silence_ms
        max_turn_s = max_speech_s
    return TurnSettings(
        threshold=threshold,
        neg_threshold=max(0.01, threshold - 0.15),
        min_speech_ms=min_speech_ms,
        min_silence_ms=max(min_silence_ms, chunk_pause_ms),
        speech_pad_ms=pad_ms,
        max_turn_s=max_turn_s,
    )


def turn_taking(
    algo_options: Any = None,
    model_options: Any = None,
    *,
    model: Any = None,
    batched: bool = True,
    engine: Any = None,
    rise_db: float | None = DEFAULT_RISE_DB,
    rise_hold_ms: float = DEFAULT_RISE_HOLD_MS,
    tail_db: float | None = DEFAULT_TAIL_DB,
    tail_ms: float = DEFAULT_TAIL_MS,
    early_pause_ms: float | None = None,
) -> Pipe:
    """``vad | pause_gate`` configured from FastRTC's options (see :func:`turn_settings`).

    ``rise_db`` and ``rise_hold_ms`` go to :func:`~flowrtc.operators.vad.vad`:
    the hold of a turn's end while the audio is getting louder again; so do
    ``tail_db`` and ``tail_ms``: a pause counted from where the sound died away.
    ``early_pause_ms`` too: after that much pause, ``pause_gate`` sends the turn
    ahead as a ``PendingUtterance``, so that ``reply`` can start answering it early.

    With a FastRTC-style chunk ``model`` the detector reproduces FastRTC's rule
    on its chunks: a chunk with more than ``started_talking_threshold`` of speech
    starts the turn, one with less than ``speech_threshold`` ends it.
    """
    s = turn_settings(algo_options, model_options)
    check_early_pause(early_pause_ms, s.min_silence_ms)
    gate = pause_gate(
        speech_pad_ms=s.speech_pad_ms, min_speech_ms=s.min_speech_ms, min_silence_ms=s.min_silence_ms, max_turn_s=s.max_turn_s
    )
    if model is not None and not hasattr(model, "infer"):
        if early_pause_ms is not None:
            raise ConfigurationError("early_pause_ms needs a windowed VAD (Silero); a FastRTC chunk model decides per chunk")
        from flowrtc.models.protocol import DEFAULT_CHUNK_S, ChunkedPauseModel

        algo_chunk_s = getattr(algo_options, "audio_chunk_duration", DEFAULT_CHUNK_S)
        chunk_s = model.chunk_s if isinstance(model, ChunkedPauseModel) else algo_chunk_s
        inner = model.model if isinstance(model, ChunkedPauseModel) else model
        started_s = getattr(algo_options, "started_talking_threshold", 0.2)
        speech_s = getattr(algo_options, "speech_threshold", 0.1)
        detector = vad(
            model=ChunkedPauseModel(inner, model_options, chunk_s=chunk_s),
            threshold=min(1.0, started_s / chunk_s + 1e-9),
            neg_threshold=min(speech_s / chunk_s, started_s / chunk_s),
            min_speech_ms=0,
            min_silence_ms=0,
        )
        gate = pause_gate(speech_pad_ms=0, min_speech_ms=chunk_s * 1000, min_silence_ms=0, max_turn_s=s.max_turn_s)
        return detector | gate
    detector = vad(
        threshold=s.threshold,
        neg_threshold=s.neg_threshold,
        min_speech_ms=s.min_speech_ms,
        min_silence_ms=s.min_silence_ms,
        model=model,
        batched=batched,
        engine=engine,
        rise_db=rise_db,
        rise_hold_ms=rise_hold_ms,
        tail_db=tail_db,
        tail_ms=tail_ms,
        early_pause_ms=early_pause_ms,
    )
    return detector | gate


class _Turn:
    """The audio of the turn being collected."""

    __slots__ = ("pieces", "audio_start_s", "speech_start_s")

    def __init__(self, pieces: list[AudioChunk], audio_start_s: float, speech_start_s: float) -> None:
        self.pieces = pieces
        self.audio_start_s = audio_start_s
        self.speech_start_s = speech_start_s


#: How far behind the audio a ``SpeechStarted`` may arrive and still find its pre-roll, in s.
_EVENT_LAG_S = 0.5


def _clip(pieces: list[AudioChunk] | deque[AudioChunk], start_s: float, end_s: float) -> list[AudioChunk]:
    """The parts of ``pieces`` inside ``[start_s, end_s)``."""
    out = []
    rate = 0
    lo = hi = 0
    bounded = end_s != math.inf
    for chunk in pieces:
        if chunk.sample_rate != rate:
            rate = chunk.sample_rate
            lo = round(start_s * rate)
            hi = round(end_s * rate) if bounded else 0
        pts = chunk.pts
        n = chunk.samples.shape[1]
        first = lo - pts
        last = min(n, hi - pts) if bounded else n
        if first <= 0 and last == n:
            out.append(chunk)
        elif last > max(first, 0):
            out.append(chunk.slice(max(first, 0), last))
    return out


@operator
async def pause_gate(
    source: AsyncIterable[Any],
    *,
    speech_pad_ms: float = DEFAULT_SPEECH_PAD_MS,
    min_speech_ms: float = DEFAULT_MIN_SPEECH_MS,
    min_silence_ms: float = DEFAULT_MIN_SILENCE_MS,
    max_turn_s: float = math.inf,
    algo_options: Any = None,
    model_options: Any = None,
) -> AsyncIterator[Any]:
    """Turn audio plus ``vad`` events into one ``Utterance`` per user turn.

    Options:
        speech_pad_ms: audio kept before the speech starts and after it ends, in ms.
        min_speech_ms / min_silence_ms: the upstream ``vad``'s settings, in ms (its
            events come that long after the speech started / stopped; a
            ``SpeechStopped`` that carries ``speech_end_s`` is taken at its word).
        max_turn_s: cut a turn this many seconds long even while the user speaks;
            if they go on, the next turn starts at once.
        algo_options / model_options: FastRTC's ``AlgoOptions`` / ``SileroVadOptions``;
            when given they set the options above (see :func:`turn_settings`).

    A ``PauseDetected`` arriving from upstream (``trigger_response``) ends the
    turn now, with whatever audio it has (possibly none). Audio is not passed
    on; events are, with ``Log`` events ``started_talking`` and ``pause_detected``
    and a ``PauseDetected`` before each ``Utterance``.

    After a ``SpeechPaused`` (``vad(early_pause_ms=...)``) comes a
    ``PendingUtterance``: the ``Utterance`` this pause will give if it ends the
    turn, once its audio (``speech_pad_ms`` past the speech) has arrived.
    """
    if algo_options is not None or model_options is not None:
        s = turn_settings(algo_options, model_options)
        speech_pad_ms, min_speech_ms, min_silence_ms, max_turn_s = s.speech_pad_ms, s.min_speech_ms, s.min_silence_ms, s.max_turn_s
    pad_s = speech_pad_ms / 1000
    speech_s = min_speech_ms / 1000
    silence_s = min_silence_ms / 1000
    preroll_s = speech_s + pad_s
    recent: deque[AudioChunk] = deque()  # idle: the last preroll_s of audio
    turn: _Turn | None = None
    speaking = False
    now_s = 0.0
    rate = 0

    pending: tuple[float, float, float] | None = None  # a SpeechPaused's (speech end, audio end, time) awaiting its audio

    def pending_utterance() -> PendingUtterance:
        # decided when both the pause was announced and the audio it needs was in: media time, exact
        assert pending is not None
        said_s, audio_end_s, paused_s = pending
        decided_s = max(paused_s, audio_end_s)
        return PendingUtterance(utterance=turn_utterance(audio_end_s, said_s, decided_s), media_time_s=decided_s)

    def turn_utterance(end_s: float, speech_end_s: float, decided_s: float) -> Utterance:
        assert turn is not None
        pieces = _clip(turn.pieces, turn.audio_start_s, end_s)
        if pieces:
            audio = AudioChunk.concat(pieces)
        else:
            audio = AudioChunk.silence(0.0, rate or _FALLBACK_RATE, pts=round(turn.audio_start_s * (rate or _FALLBACK_RATE)))
        return Utterance(audio=audio, start_s=turn.speech_start_s, end_s=speech_end_s, media_time_s=decided_s)

    def utterance(end_s: float, speech_end_s: float, decided_s: float) -> list[Any]:
        return [
            PauseDetected(media_time_s=decided_s),
            Log(data="pause_detected", media_time_s=decided_s),
            turn_utterance(end_s, speech_end_s, decided_s),
        ]

    def speech_end(said_end_s: float | None, t: float) -> float:
        assert turn is not None
        return max(turn.speech_start_s, said_end_s if said_end_s is not None else t - silence_s)

    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                rate = item.sample_rate
                now_s = (item.pts + item.samples.shape[1]) / rate
                if turn is not None:
                    turn.pieces.append(item)
                    if pending is not None and now_s >= pending[1]:
                        yield pending_utterance()
                        pending = None
                    if now_s - turn.audio_start_s >= max_turn_s:
                        for event in utterance(now_s, now_s, now_s):
                            yield event
                        turn, pending = _Turn([], now_s, now_s), None
                        yield Log(data="started_talking", media_time_s=now_s)
                else:
                    recent.append(item)
                    # Events trail the audio (the VAD decides after the chunk; a session
                    # catching up gets chunks of several windows): keep a margin.
                    cutoff_s = now_s - preroll_s - _EVENT_LAG_S
                    oldest = recent[0]
                    while (oldest.pts + oldest.samples.shape[1]) / oldest.sample_rate <= cutoff_s:
                        recent.popleft()
                        if not recent:
                            break
                        oldest = recent[0]
                continue
            if isinstance(item, SpeechStarted):
                speaking = True
                yield item
                if turn is None:
                    t = item.media_time_s
                    turn = _Turn(_clip(recent, t - preroll_s, math.inf), t - preroll_s, t - speech_s)
                    recent.clear()
                    yield Log(data="started_talking", media_time_s=t)
            elif isinstance(item, SpeechPaused):
                yield item
                if turn is not None:
                    said_s = speech_end(item.speech_end_s, item.media_time_s)
                    pending = (said_s, said_s + pad_s, item.media_time_s)
                    if now_s >= pending[1]:
                        yield pending_utterance()
                        pending = None
            elif isinstance(item, SpeechResumed):
                pending = None
                yield item
            elif isinstance(item, SpeechStopped):
                speaking = False
                pending = None
                yield item
                if turn is not None:
                    t = item.media_time_s
                    speech_end_s = speech_end(item.speech_end_s, t)
                    end_s = min(t, speech_end_s + pad_s)
                    for event in utterance(end_s, speech_end_s, t):
                        yield event
                    recent.extend(_clip(turn.pieces, t - preroll_s, math.inf))  # the next turn's pre-roll
                    turn = None
            elif isinstance(item, PauseDetected):
                pending = None
                t = max(item.media_time_s, now_s)
                if turn is None:
                    turn = _Turn([], t, t)
                for event in utterance(t, t, t):
                    yield event
                turn = _Turn([], t, t) if speaking else None
            else:
                yield item
