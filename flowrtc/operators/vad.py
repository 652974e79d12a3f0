"""``vad``: streaming voice activity detection, in band and in media time.

Audio passes through unchanged; after each chunk come the events it caused:
``SpeechStarted`` once speech has lasted ``min_speech_ms`` and
``SpeechStopped`` once silence has lasted ``min_silence_ms``. Each event's
``media_time_s`` is the input media time at which it was decided (the end of
the deciding 32 ms window), so the speech itself started ``min_speech_ms``
earlier and stopped ``min_silence_ms`` earlier.

Scoring is Silero VAD v6 with its recurrent state carried from window to window
(never a fresh state per chunk). By default all sessions of the event loop share
one batching engine; ``batched=False`` scores each window inline instead. The
model scores at 8 kHz by default (``sample_rate=16000`` to change): 8 kHz input
is scored as is, multiples of it are low-passed and decimated, other rates
resampled, for the model only (the audio passed on is untouched).

A pause about to end the turn is held while the audio is getting louder again
(``rise_db`` over the quietest window of the pause, for at most
``rise_hold_ms``): Silero needs one to three windows to notice speech resuming,
and the window's level notices it at once.
"""

from __future__ import annotations

import math
from typing import Any, AsyncIterable, AsyncIterator, Protocol

import anyio.to_thread
import numpy as np

from flowrtc.errors import ConfigurationError
from flowrtc.events import Event, SpeechPaused, SpeechResumed, SpeechStarted, SpeechStopped
from flowrtc.media import AudioChunk
from flowrtc.models.protocol import ChunkedPauseModel
from flowrtc.models.silero import WINDOW_SAMPLES, VADStream, get_silero_vad
from flowrtc.models.vad_engine import get_vad_engine
from flowrtc.operators.core import operator, scoped
from flowrtc.operators.resample import Resampler

__all__ = [
    "vad",
    "SpeechDetector",
    "DEFAULT_THRESHOLD",
    "DEFAULT_MIN_SPEECH_MS",
    "DEFAULT_MIN_SILENCE_MS",
    "DEFAULT_RISE_DB",
    "DEFAULT_RISE_HOLD_MS",
    "DEFAULT_TAIL_DB",
    "DEFAULT_TAIL_MS",
    "QUIET_DBFS",
]

#: Speech probability at which speech starts.
DEFAULT_THRESHOLD = 0.5
#: Continuous speech needed before ``SpeechStarted`` (ms); measured, see docs/turn-taking.md.
DEFAULT_MIN_SPEECH_MS = 160.0
#: Silence needed before ``SpeechStopped`` (ms): the pause that ends a turn.
DEFAULT_MIN_SILENCE_MS = 450.0
#: A window this many dB louder than the quietest one of a pause holds the turn's end.
#: A steady noise floor varies by ~0.4 dB between 32 ms windows; see docs/turn-taking.md.
DEFAULT_RISE_DB = 3.0
#: The longest such a hold lasts (ms): Silero's lag in noticing resumed speech is 40-100 ms.
DEFAULT_RISE_HOLD_MS = 128.0
#: A pause is counted from where the audio fell this many dB under the turn's loudest window ...
DEFAULT_TAIL_DB = 40.0
#: ... when that is at most this long (ms) before Silero let go. See docs/turn-taking.md.
DEFAULT_TAIL_MS = 128.0
#: Window levels are floored here (about one int16 step of RMS), so digital silence has a level.
QUIET_DBFS = -90.0
_NEG_OFFSET = 0.15
_MIN_NEG = 0.01
_VAD_RATES = (8000, 16000)
#: Silero scores at 8 kHz unless told otherwise: on band-limited (telephone-like)
#: audio its 16 kHz mode is erratic (a monkey-screams clip is speech or not
#: depending on a few samples of alignment) while its 8 kHz mode is stable, and
#: 8 kHz windows cost ~40% less. See docs/turn-taking.md.
DEFAULT_SCORING_RATE = 8000

_IDLE, _CANDIDATE, _SPEECH = 0, 1, 2


class SpeechDetector:
    """Silero-style hysteresis over one stream of per-window speech probabilities.

    Speech starts when a window reaches ``threshold`` and the probability then
    stays at or above ``neg_threshold`` for ``min_speech_ms`` in all (a dip
    below it drops the candidate). Speech stops once the probability has been
    below ``neg_threshold`` — without climbing back to ``threshold`` — for
    ``min_silence_ms``. Durations round to the nearest whole window (at least one).

    When :meth:`feed` is also given each window's level (dBFS), the window
    that would end the speech is not taken while it is ``rise_db`` or more
    louder than the quietest window of the pause so far: speech may be
    resuming, and Silero's probability climbs a window or three after the
    sound does. Each later window is judged the same way, for at most
    ``rise_hold_ms``; a probability back at ``threshold`` makes it speech
    again, as always. ``rise_db=None`` turns the hold off.

    The levels also place the start of a pause. Silero's probability lingers
    for a window or three after a word's sound has died away; when the windows
    just before it let go were already ``tail_db`` or more under the loudest
    window since the speech began, the pause is counted from the first of them,
    at most ``tail_ms`` before Silero let go. Over a floor within ``tail_db`` of
    the speech this never happens, and Silero alone decides. ``tail_db=None``
    counts every pause from Silero's release.

    With ``early_pause_ms`` (shorter than ``min_silence_ms``) a pause that has
    lasted that long is announced with ``SpeechPaused`` (its ``speech_end_s`` is
    the one the ``SpeechStopped`` will carry), and, if speech comes back before
    the pause ends the turn, withdrawn with ``SpeechResumed``. A reply can then be
    started early and held until the turn is over.

    Event times are ``start_s + windows_seen * window_s``: media time, exact,
    whatever the speed the audio arrives at.
    """

    __slots__ = (
        "window_s",
        "threshold",
        "neg_threshold",
        "speech_windows",
        "silence_windows",
        "rise_db",
        "hold_windows",
        "tail_db",
        "tail_windows",
        "early_windows",
        "start_s",
        "windows",
        "state",
        "run",
        "_floor",
        "_held",
        "_paused",
        "_peak",
        "_quiet",
    )

    def __init__(
        self,
        *,
        window_s: float,
        threshold: float = DEFAULT_THRESHOLD,
        neg_threshold: float | None = None,
        min_speech_ms: float = DEFAULT_MIN_SPEECH_MS,
        min_silence_ms: float = DEFAULT_MIN_SILENCE_MS,
        rise_db: float | None = DEFAULT_RISE_DB,
        rise_hold_ms: float = DEFAULT_RISE_HOLD_MS,
        tail_db: float | None = DEFAULT_TAIL_DB,
        tail_ms: float = DEFAULT_TAIL_MS,
        early_pause_ms: float | None = None,
        start_s: float = 0.0,
    ) -> None:
        if neg_threshold is None:
            neg_threshold = max(_MIN_NEG, threshold - _NEG_OFFSET)
        if not 0 < threshold <= 1 or not 0 <= neg_threshold <= threshold:
            raise ConfigurationError(f"need 0 <= neg_threshold <= threshold <= 1, got {neg_threshold!r}, {threshold!r}")
        if min_speech_ms < 0 or min_silence_ms < 0:
            raise ConfigurationError("min_speech_ms and min_silence_ms must be >= 0")
        if (rise_db is not None and not rise_db > 0) or rise_hold_ms < 0:
            raise ConfigurationError(f"need rise_db > 0 (or None) and rise_hold_ms >= 0, got {rise_db!r}, {rise_hold_ms!r}")
        if (tail_db is not None and not tail_db > 0) or tail_ms < 0:
            raise ConfigurationError(f"need tail_db > 0 (or None) and tail_ms >= 0, got {tail_db!r}, {tail_ms!r}")
        self.window_s = window_s
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self.speech_windows = _windows(min_speech_ms, window_s)
        self.silence_windows = _windows(min_silence_ms, window_s)
        self.rise_db = rise_db
        self.hold_windows = round(rise_hold_ms / 1000 / window_s)
        self.tail_db = tail_db
        self.tail_windows = round(tail_ms / 1000 / window_s)
        self.early_windows = _early_windows(early_pause_ms, window_s, self.silence_windows)
        self.start_s = start_s
        self.windows = 0
        self.state = _IDLE
        self.run = 0
        self._floor: float | None = None  # the quietest level of the current pause (dBFS)
        self._held = 0  # windows the current pause's end has been held
        self._paused = False  # the current pause was announced (SpeechPaused)
        self._peak = QUIET_DBFS  # the loudest window since the speech (or its candidate) began
        self._quiet = 0  # windows in a row, up to the last one, tail_db or more under _peak

    @property
    def speaking(self) -> bool:
        """Whether speech has started and not yet stopped."""
        return self.state == _SPEECH

    @property
    def now_s(self) -> float:
        """Media time at the end of the last window scored."""
        return self._at(self.windows)

    def _at(self, windows: int) -> float:
        # one formula for every time, so two events about the same moment carry the same float
        return self.start_s + windows * self.window_s

    def feed(self, probabilities: Any, levels: Any = None) -> list[Event]:
        """Advance by one window per probability; return the events decided.

        ``levels``, if given, is each window's level in dBFS (a sequence as
        long as ``probabilities``); the resume hold and the tail read it. A
        ``SpeechStopped`` carries ``speech_end_s``, where its pause began.
        """
        events: list[Event] = []
        state, run = self.state, self.run
        threshold, neg = self.threshold, self.neg_threshold
        rise = self.rise_db if levels is not None else None
        tail = self.tail_db if levels is not None else None
        for i, p in enumerate(probabilities):
            self.windows += 1
            if state == _IDLE:
                if p >= threshold:
                    state, run = _CANDIDATE, 0
                    self._peak, self._quiet = QUIET_DBFS, 0
                else:
                    continue
            level = None if levels is None else levels[i]
            if tail is not None:
                if level > self._peak:  # type: ignore[operator]
                    self._peak = level  # type: ignore[assignment]
                self._quiet = self._quiet + 1 if level <= self._peak - tail else 0  # type: ignore[operator]
            if state == _CANDIDATE:
                if p < neg:
                    state = _IDLE
                    continue
                run += 1
                if run >= self.speech_windows:
                    state, run = _SPEECH, 0
                    events.append(SpeechStarted(media_time_s=self.now_s))
            elif p >= threshold:
                if self._paused:
                    self._paused = False
                    events.append(SpeechResumed(media_time_s=self.now_s))
                run = 0
            elif run or p < neg:
                if run == 0:  # a pause begins; where the sound died away, if Silero let go later
                    self._floor, self._held = None, 0
                    if self._quiet > 1:
                        run = min(self._quiet - 1, self.tail_windows)
                if rise is not None and (self._floor is None or level < self._floor):  # type: ignore[operator]
                    self._floor = level
                run += 1
                if self.early_windows and not self._paused and run >= self.early_windows:
                    self._paused = True
                    events.append(SpeechPaused(media_time_s=self.now_s, speech_end_s=self._at(self.windows - run)))
                if run >= self.silence_windows:
                    if rise is not None and self._held < self.hold_windows and level >= self._floor + rise:  # type: ignore[operator]
                        self._held += 1  # louder than the pause was: speech may be resuming
                        continue
                    events.append(SpeechStopped(media_time_s=self.now_s, speech_end_s=self._at(self.windows - run)))
                    state, run, self._paused = _IDLE, 0, False
        self.state, self.run = state, run
        return events

    def finish(self, end_s: float) -> list[Event]:
        """The input ended at ``end_s``: speech in progress stops there."""
        if self.state == _SPEECH:
            stop_s = max(end_s, self.now_s)
            speech_end_s = self._at(self.windows - self.run) if self.run else stop_s
            self.state, self.run, self._paused = _IDLE, 0, False
            return [SpeechStopped(media_time_s=stop_s, speech_end_s=speech_end_s)]
        self.state, self.run = _IDLE, 0
        return []


def _windows(ms: float, window_s: float) -> int:
    return max(1, round(ms / 1000 / window_s))


_SILERO_WINDOW_S = WINDOW_SAMPLES[DEFAULT_SCORING_RATE] / DEFAULT_SCORING_RATE  # 32 ms, at 16 kHz too


def check_early_pause(early_pause_ms: float | None, min_silence_ms: float) -> None:
    """Raise ``ConfigurationError`` unless ``early_pause_ms`` is ``None`` or a pause, in whole Silero windows, shorter than ``min_silence_ms``."""
    _early_windows(early_pause_ms, _SILERO_WINDOW_S, _windows(min_silence_ms, _SILERO_WINDOW_S))


def _early_windows(early_pause_ms: float | None, window_s: float, silence_windows: int) -> int:
    """Windows of pause before ``SpeechPaused`` (0: never)."""
    if early_pause_ms is None:
        return 0
    if not early_pause_ms > 0:
        raise ConfigurationError(f"early_pause_ms must be > 0 (or None), got {early_pause_ms!r}")
    windows = _windows(early_pause_ms, window_s)
    if windows >= silence_windows:
        raise ConfigurationError(
            f"early_pause_ms ({early_pause_ms!r}) must be shorter than the pause that ends a turn "
            f"({silence_windows * window_s * 1000:.0f} ms)"
        )
    return windows


class _Scorer(Protocol):
    """Speech probabilities for one stream: window length and an async ``score``."""

    window_s: float
    #: The rows the last ``score`` scored (float32, context first), or ``None`` (chunk models).
    last_windows: np.ndarray | None

    async def score(self, samples: np.ndarray) -> list[float]:
        """The probabilities of the windows these samples complete."""
        ...

    def close(self) -> None:
        pass


class _EngineScorer(_Scorer):
    def __init__(self, engine: Any, rate: int) -> None:
        self._stream = engine.stream(rate)
        self.window_s = WINDOW_SAMPLES[rate] / rate
        self.score = self._stream.push  # type: ignore[method-assign]

    @property
    def last_windows(self) -> np.ndarray:  # type: ignore[override]
        return self._stream.last_windows

    def close(self) -> None:
        self._stream.close()


class _InlineScorer(_Scorer):
    def __init__(self, model: Any, rate: int) -> None:
        self._stream = VADStream(rate, model)
        self.window_s = self._stream.window / rate

    async def score(self, samples: np.ndarray) -> list[float]:
        return self._stream.push(samples)

    @property
    def last_windows(self) -> np.ndarray:  # type: ignore[override]
        return self._stream.last_windows


class _ChunkScorer(_Scorer):
    """A FastRTC chunk model, one "window" per chunk; gets int16 at the input rate, as FastRTC gave it."""

    last_windows = None

    def __init__(self, adapter: ChunkedPauseModel, rate: int) -> None:
        # One adapter per stream: it buffers this stream's partial chunk.
        self._adapter = ChunkedPauseModel(adapter.model, adapter.options, chunk_s=adapter.chunk_s)
        self._rate = rate
        self.window_s = self._adapter.window_s(rate)

    async def score(self, samples: np.ndarray) -> list[float]:
        probabilities = []
        for chunk in self._adapter.cut(samples, self._rate):
            probabilities.append(await anyio.to_thread.run_sync(self._adapter.probability, chunk, self._rate))
        return probabilities


def _make_scorer(model: Any, engine: Any, batched: bool, rate: int) -> _Scorer:
    if isinstance(model, ChunkedPauseModel):
        return _ChunkScorer(model, rate)
    if model is not None and not hasattr(model, "infer"):
        return _ChunkScorer(ChunkedPauseModel(model), rate)
    if batched or engine is not None:
        if engine is None:
            engine = get_vad_engine(None if model is None else model.model_path)
        return _EngineScorer(engine, rate)
    if model is None:
        model = get_silero_vad()
    return _InlineScorer(model, rate)


class _Decimator:
    """Low-pass and keep every ``factor``-th sample: cheap, streaming, for the VAD only.

    A Kaiser-windowed sinc FIR of ``16 * factor`` taps: relative to the output
    rate, within 0.2 dB up to 0.35 of it (2.8 kHz at 8 kHz), -6 dB at 0.45,
    below -70 dB from 0.6 on. Evaluated polyphase (the input as rows of
    ``factor`` samples times a ``(factor, 16)`` matrix, then a sum along
    diagonals), it costs about a third of PyAV's resampler per call.
    """

    __slots__ = ("factor", "taps", "_phases", "_history")

    _BLOCKS = 16

    def __init__(self, factor: int) -> None:
        self.factor = factor
        size = self._BLOCKS * factor
        t = np.arange(size) - (size - 1) / 2
        taps = np.sinc(0.9 / factor * t) * np.kaiser(size, 7.0)  # cut a little below the output Nyquist
        self.taps = (taps / taps.sum()).astype(np.float32)
        self._phases = np.ascontiguousarray(self.taps.reshape(self._BLOCKS, factor).T)
        self._history = np.zeros((self._BLOCKS - 1) * factor, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Filter float32 ``samples`` (any length); return the decimated ones now known."""
        factor, blocks = self.factor, self._BLOCKS
        buf = np.concatenate((self._history, samples))
        rows = buf.shape[0] // factor
        count = rows - blocks + 1
        if count <= 0:
            self._history = buf
            return np.empty(0, np.float32)
        products = buf[: rows * factor].reshape(rows, factor) @ self._phases  # (rows, blocks)
        # output k = sum over b of products[k + b, b]: a diagonal of the matrix
        out = np.ndarray((count, blocks), np.float32, products, strides=(blocks * 4, (blocks + 1) * 4)).sum(axis=1)
        self._history = buf[count * factor :]
        return out


def _scoring_rate(input_rate: int, sample_rate: int | None) -> int:
    if sample_rate is None:
        return DEFAULT_SCORING_RATE
    if sample_rate not in _VAD_RATES:
        raise ConfigurationError(f"vad sample_rate must be 8000 or 16000 Hz, got {sample_rate!r}")
    return sample_rate


class _ToScoringRate:
    """Mono float32 samples at the rate the scorer wants, from frames at the input rate."""

    __slots__ = ("_decimator", "_resampler")

    def __init__(self, input_rate: int, rate: int) -> None:
        self._decimator = _Decimator(input_rate // rate) if input_rate % rate == 0 and input_rate != rate else None
        self._resampler = Resampler(rate, "mono") if input_rate % rate else None

    def push(self, frames: list[np.ndarray], input_rate: int) -> np.ndarray:
        samples = frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1)
        if self._decimator is None and self._resampler is None and samples.shape[0] == 1:
            return samples[0]  # the scorer converts int16 itself, in one step with its buffering
        if samples.dtype == np.int16:
            mono = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0].astype(np.float32)
            mono *= np.float32(1 / 32768)
        else:
            mono = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
        if self._decimator is not None:
            return self._decimator.push(mono)
        if self._resampler is not None:
            pieces = self._resampler.push(AudioChunk(mono[None, :], input_rate))
            return np.concatenate([p.samples[0] for p in pieces]) if pieces else np.empty(0, np.float32)
        return mono


class _Levels:
    """The level (dBFS, floored at ``QUIET_DBFS``) of each window the model scored, computed when read.

    Built on the scorer's own rows, so the levels are of exactly the windows the
    probabilities are of; the detector reads only the windows from the start of speech on.
    """

    __slots__ = ("_rows", "_window", "_scale")

    def __init__(self, rows: np.ndarray, window: int) -> None:
        self._rows = rows  # float32 in [-1, 1], each row's context first
        self._window = window
        self._scale = 1.0 / window

    def __len__(self) -> int:
        return self._rows.shape[0]

    def __getitem__(self, i: int) -> float:
        samples = self._rows[i, -self._window :]
        return 10 * math.log10(max(float(samples @ samples) * self._scale, _QUIET_POWER))


_QUIET_POWER = 10 ** (QUIET_DBFS / 10)


@operator
async def vad(
    source: AsyncIterable[Any],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    neg_threshold: float | None = None,
    min_speech_ms: float = DEFAULT_MIN_SPEECH_MS,
    min_silence_ms: float = DEFAULT_MIN_SILENCE_MS,
    rise_db: float | None = DEFAULT_RISE_DB,
    rise_hold_ms: float = DEFAULT_RISE_HOLD_MS,
    tail_db: float | None = DEFAULT_TAIL_DB,
    tail_ms: float = DEFAULT_TAIL_MS,
    early_pause_ms: float | None = None,
    batched: bool = True,
    engine: Any = None,
    model: Any = None,
    sample_rate: int | None = None,
) -> AsyncIterator[Any]:
    """Pass audio through and emit ``SpeechStarted``/``SpeechStopped`` after the chunk that decided them.

    Options:
        threshold: speech probability (0..1) at which speech starts.
        neg_threshold: probability below which speech stops (default ``threshold - 0.15``).
        min_speech_ms: continuous speech needed before ``SpeechStarted``, in ms.
        min_silence_ms: silence needed before ``SpeechStopped``, in ms.
        rise_db: a window this many dB louder than the quietest window of the
            pause holds the ``SpeechStopped`` it would have decided (speech may
            be resuming); ``None`` turns the hold off. Not used with a
            FastRTC-style chunk model.
        rise_hold_ms: the longest such a hold lasts, in ms.
        tail_db: a pause is counted from where the audio fell this many dB
            under the loudest window of the speech, when Silero let go of it
            later (its probability lingers after the sound has died away);
            ``None``: from where Silero let go. Not used with a FastRTC-style
            chunk model.
        tail_ms: how much earlier than Silero's release a pause may be counted from, in ms.
        early_pause_ms: announce a pause this long (shorter than ``min_silence_ms``)
            with ``SpeechPaused``, and withdraw it with ``SpeechResumed`` if speech
            comes back before ``SpeechStopped``. ``None`` (default): no announcements.
            Not used with a FastRTC-style chunk model.
        batched: score on the event loop's shared batching engine (default), or
            inline, one window at a time (``False``; blocks the loop ~0.2 ms per window).
        engine: a specific :class:`~flowrtc.models.vad_engine.VADEngine` to use.
        model: ``None`` (Silero v6, shared), a :class:`~flowrtc.models.silero.SileroVAD`,
            or a FastRTC-style :class:`~flowrtc.models.protocol.PauseDetectionModel`
            (scored on chunks by :class:`~flowrtc.models.protocol.ChunkedPauseModel`).
        sample_rate: rate Silero scores at, 8000 (default) or 16000 Hz.

    Speech in progress when the input ends stops at the end of the input.
    """
    detector: SpeechDetector | None = None
    scorer: _Scorer | None = None
    convert: _ToScoringRate | None = None
    window_in = 0  # input samples per scoring window
    pending: list[np.ndarray] = []  # input frames not yet scored
    pending_count = 0
    input_rate = 0
    end_s = 0.0
    chunked = False  # a FastRTC chunk model
    with_levels = rise_db is not None or tail_db is not None  # the detector reads window levels
    try:
        async with scoped(source) as items:
            async for item in items:
                if not isinstance(item, AudioChunk):
                    yield item
                    continue
                yield item
                if scorer is None:
                    input_rate = item.sample_rate
                    chunked = model is not None and not hasattr(model, "infer")
                    rate = input_rate if chunked else _scoring_rate(input_rate, sample_rate)
                    scorer = _make_scorer(model, engine, batched, rate)
                    if not chunked:
                        convert = _ToScoringRate(input_rate, rate)
                    window_in = max(1, round(scorer.window_s * input_rate))
                    detector = SpeechDetector(
                        window_s=scorer.window_s,
                        threshold=threshold,
                        neg_threshold=neg_threshold,
                        min_speech_ms=min_speech_ms,
                        min_silence_ms=min_silence_ms,
                        rise_db=rise_db,
                        rise_hold_ms=rise_hold_ms,
                        tail_db=tail_db,
                        tail_ms=tail_ms,
                        early_pause_ms=None if chunked else early_pause_ms,
                        start_s=item.pts / item.sample_rate,
                    )
                elif item.sample_rate != input_rate:
                    raise ConfigurationError(
                        f"vad got {item.sample_rate} Hz audio after {input_rate} Hz; resample to one rate before it"
                    )
                end_s = item.end_pts / input_rate
                # Convert and score once a whole window has arrived: most 20 ms
                # frames then cost a list append, and each call does a window's work.
                pending.append(item.samples)
                pending_count += item.samples.shape[1]
                if pending_count < window_in:
                    continue
                if convert is not None:
                    samples = convert.push(pending, input_rate)
                else:
                    samples = _mono_int16(pending)
                pending = []
                pending_count %= window_in
                probabilities = await scorer.score(samples)
                if probabilities:
                    rows = scorer.last_windows if with_levels else None  # type: ignore[union-attr]
                    levels = None if rows is None else _Levels(rows, WINDOW_SAMPLES[rate])
                    for event in detector.feed(probabilities, levels):  # type: ignore[union-attr]
                        yield _fastrtc_end(event) if chunked else event
        if detector is not None:
            for event in detector.finish(end_s):
                yield _fastrtc_end(event) if chunked else event
    finally:
        if scorer is not None:
            scorer.close()


def _fastrtc_end(event: Event) -> Event:
    """With a FastRTC chunk model the turn runs to the end of the chunk that ended it, as
    FastRTC handed it over: its ``SpeechStopped`` does not say the speech ended earlier."""
    return SpeechStopped(media_time_s=event.media_time_s) if isinstance(event, SpeechStopped) else event


def _mono_int16(frames: list[np.ndarray]) -> np.ndarray:
    samples = frames[0] if len(frames) == 1 else np.concatenate(frames, axis=1)
    if samples.dtype != np.int16:
        samples = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
    return samples[0] if samples.shape[0] == 1 else np.rint(samples.mean(axis=0)).astype(np.int16)
