"""``ReplyOnStopWords``: FastRTC's wake-word handler, as a prebuilt graph.

::

    decode | resample(layout) | vad | stopword_gate(stop_words) | pause_gate | reply(fn) | interrupt | encode

It is :class:`~flowrtc.handlers.reply_on_pause.ReplyOnPause` with one stage
more: ``stopword_gate`` transcribes what the VAD calls speech, and only after a
stop phrase does it let the next turn through to ``pause_gate``. So ``fn`` is
called with the audio *after* the stop word, up to the pause, once per stop
word. The client gets ``{"type": "stopword", "data": ""}`` when it is heard.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Literal

from flowrtc.errors import ConfigurationError, MissingExtraError
from flowrtc.events import StopWord
from flowrtc.graph import Graph
from flowrtc.handlers.options import AlgoOptions, SileroVadOptions
from flowrtc.handlers.reply_on_pause import CATCH_UP_MS, ReplyOnPause
from flowrtc.operators.codec import decode
from flowrtc.operators.core import Pipe
from flowrtc.operators.pause_gate import turn_settings, turn_taking
from flowrtc.operators.resample import resample
from flowrtc.operators.stopwords import (
    DEFAULT_CHECK_EVERY_S,
    DEFAULT_WINDOW_S,
    find_stop_word,
    normalize_words,
    stopword_gate,
)

__all__ = ["ReplyOnStopWords"]


def _load_stt() -> Any:
    from flowrtc.models.stt import get_stt_model

    try:
        return get_stt_model()
    except MissingExtraError as exc:
        raise MissingExtraError(extra="stopword", package=exc.package, what="ReplyOnStopWords") from exc


class ReplyOnStopWords(ReplyOnPause):
    """Call ``fn`` with what the user says after a stop word, once they pause.

    Args:
        fn: as for :class:`~flowrtc.handlers.reply_on_pause.ReplyOnPause`.
        stop_words: words or phrases to listen for, e.g. ``["computer"]`` or
            ``["hey flow", "hey flo"]``. Case and punctuation are ignored;
            phrases match as consecutive words. List common mis-hearings too.
        startup_fn, algo_options, model_options, can_interrupt, expected_layout,
        output_sample_rate, output_frame_size, input_sample_rate, model, needs_args:
            as for ``ReplyOnPause`` (``model`` is the VAD).
        stt_model: the speech-to-text model that listens for the stop words
            (FastRTC's ``stt((rate, audio)) -> str``). Default: the shared Whisper
            tiny.en, loaded now (needs ``pip install 'flowrtc[stopword]'``).
        window_s: seconds of speech transcribed at each check.
        check_every_s: during long speech, check again after this many seconds
            (and always when the VAD says the speech stopped).
        early_pause_ms: as for ``ReplyOnPause``: start ``fn`` once a pause in the
            turn after the stop word has lasted this long. Pauses in speech that
            was not addressed start nothing.

    Speech without the stop word is neither answered nor interrupts a reply; the
    stop word itself cuts a reply when the speech after it starts.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        stop_words: Iterable[str],
        startup_fn: Callable[..., Any] | None = None,
        algo_options: AlgoOptions | None = None,
        model_options: SileroVadOptions | None = None,
        can_interrupt: bool = True,
        expected_layout: Literal["mono", "stereo"] = "mono",
        output_sample_rate: int = 24000,
        output_frame_size: int | None = None,
        input_sample_rate: int = 48000,
        model: Any = None,
        needs_args: bool = False,
        *,
        stt_model: Any = None,
        window_s: float = DEFAULT_WINDOW_S,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
        early_pause_ms: float | None = None,
    ) -> None:
        phrases = [stop_words] if isinstance(stop_words, str) else list(stop_words)
        if not phrases or not all(isinstance(p, str) and normalize_words(p) for p in phrases):
            raise ConfigurationError(f"stop_words must be a list of words or phrases, got {stop_words!r}")
        if window_s <= 0 or check_every_s <= 0:
            raise ConfigurationError("window_s and check_every_s must be > 0 s")
        super().__init__(
            fn,
            startup_fn=startup_fn,
            algo_options=algo_options,
            model_options=model_options,
            can_interrupt=can_interrupt,
            expected_layout=expected_layout,
            output_sample_rate=output_sample_rate,
            output_frame_size=output_frame_size,
            input_sample_rate=input_sample_rate,
            model=model,
            needs_args=needs_args,
            early_pause_ms=early_pause_ms,
        )
        self.stop_words = phrases
        self.stt_model = stt_model if stt_model is not None else _load_stt()
        self.window_s = window_s
        self.check_every_s = check_every_s

    def graph(self, *, startup: bool = True) -> Graph:
        """``decode | resample | vad | stopword_gate | pause_gate | reply | interrupt | encode``."""
        detector, gate = _split_turn_taking(
            turn_taking(self.algo_options, self.model_options, model=self.model, early_pause_ms=self.early_pause_ms)
        )
        settings = turn_settings(self.algo_options, self.model_options)
        pipe = (
            decode(catch_up_ms=CATCH_UP_MS)
            | resample(layout=self.expected_layout)
            | detector
            | stopword_gate(
                self.stop_words,
                model=self.stt_model,
                window_s=self.window_s,
                check_every_s=self.check_every_s,
                min_speech_ms=settings.min_speech_ms,
                min_silence_ms=settings.min_silence_ms,
                speech_pad_ms=settings.speech_pad_ms,
            )
            | gate
            | self._answer(startup=startup)
        )
        return Graph(audio=pipe, name=type(self).__name__, modality="audio")

    # -- FastRTC methods ------------------------------------------------------------
    def stop_word_detected(self, text: str) -> bool:
        """Whether ``text`` contains one of the stop words (case and punctuation ignored)."""
        return find_stop_word(text, self.stop_words) is not None

    def send_stopword(self) -> None:
        """Send the client a ``stopword`` message now (from code running in the session)."""
        session = self._session()
        if session is not None:
            session.emit_nowait(StopWord(word=""))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", self.fn)
        return f"{type(self).__name__}({name!r}, stop_words={self.stop_words!r}, can_interrupt={self.can_interrupt})"


def _split_turn_taking(pipe: Pipe) -> tuple[Pipe, Pipe]:
    """``vad | pause_gate`` as its two halves, to put the stop-word stage between them."""
    stages = pipe.stages
    if len(stages) < 2 or getattr(stages[-1], "__name__", "") != "pause_gate":
        raise ConfigurationError(f"expected turn_taking() to end with pause_gate, got {pipe!r}")
    return Pipe(stages[:-1]), Pipe(stages[-1:])
