"""FastRTC's turn-taking options, and how they map onto flowrtc's streaming detector.

FastRTC scored a fresh 0.6 s chunk at a time; flowrtc scores every 32 ms Silero
window with the model state carried over, and decides with Silero's hysteresis.
The two FastRTC option classes keep their names, fields and documented meanings;
:func:`flowrtc.operators.pause_gate.turn_settings` turns them into the few numbers
the streaming detector uses:

* the turn **starts** once there has been continuous speech for
  ``max(min_speech_duration_ms, started_talking_threshold)``;
* the turn **ends** after a silence of
  ``max(min_silence_duration_ms, audio_chunk_duration - speech_threshold)``
  (the longest silence that still leaves ``speech_threshold`` of speech in the last
  ``audio_chunk_duration``, FastRTC's pause rule, evaluated on a sliding chunk);
* a turn longer than ``min(max_continuous_speech_s, max_speech_duration_s)`` is cut.

The defaults were chosen by measurement on real recordings (see
``docs/turn-taking.md`` and ``benchmarks/bench_turns.py``); where they differ from
FastRTC's, the docstrings say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flowrtc.errors import ConfigurationError

__all__ = ["AlgoOptions", "SileroVadOptions", "ModelOptions"]


@dataclass(frozen=True)
class AlgoOptions:
    """When a turn starts and ends (FastRTC's ``AlgoOptions``).

    Attributes:
        audio_chunk_duration: seconds of audio over which speech is measured
            (a sliding chunk in flowrtc, re-evaluated every 32 ms window).
            Default 0.55 (FastRTC: 0.6). With ``speech_threshold`` it sets the
            pause that ends a turn: ``audio_chunk_duration - speech_threshold``
            seconds of silence (0.45 s by default: pauses inside sentences of up
            to 0.25 s never end a turn, and turns end 0.39 s after the speech, median).
        started_talking_threshold: seconds of speech after which the user has
            started talking (``log: started_talking``; a reply being played is
            interrupted here). Default 0.16 (FastRTC: 0.2, which counted its
            400 ms of padding as speech).
        speech_threshold: once talking, a chunk with less than this many seconds
            of speech is a pause. Default 0.1 (as FastRTC).
        max_continuous_speech_s: cut a turn after this many seconds even if the
            user is still talking (the reply then starts). Default ``inf``.
    """

    audio_chunk_duration: float = 0.55
    started_talking_threshold: float = 0.16
    speech_threshold: float = 0.1
    max_continuous_speech_s: float = math.inf

    def __post_init__(self) -> None:
        if not self.audio_chunk_duration > 0:
            raise ConfigurationError(f"audio_chunk_duration must be > 0 s, got {self.audio_chunk_duration!r}")
        if self.started_talking_threshold < 0 or self.speech_threshold < 0:
            raise ConfigurationError("started_talking_threshold and speech_threshold must be >= 0 s")
        if not self.max_continuous_speech_s > 0:
            raise ConfigurationError(f"max_continuous_speech_s must be > 0 s, got {self.max_continuous_speech_s!r}")


@dataclass(frozen=True)
class SileroVadOptions:
    """How Silero's probabilities become speech (FastRTC's ``SileroVadOptions``).

    Attributes:
        threshold: a window with speech probability >= this is speech (0..1).
            Speech then lasts until the probability falls below
            ``threshold - 0.15``. Default 0.5 (as FastRTC and Silero).
        min_speech_duration_ms: continuous speech shorter than this is ignored,
            in ms. Default 160 (FastRTC: 250); a 128 ms burst of monkey screams
            is the longest non-speech we measured above the threshold.
        max_speech_duration_s: a turn is cut after this many seconds. Default ``inf``.
        min_silence_duration_ms: a pause shorter than this never ends a turn, in ms.
            Default 100 (as Silero; FastRTC: 2000, which only worked because its
            chunks were shorter). The pause that ends a turn is the larger of this
            and ``audio_chunk_duration - speech_threshold``.
        window_size_samples: accepted for compatibility and ignored: Silero v6
            scores fixed 32 ms windows (512 samples at 16 kHz, 256 at 8 kHz).
        speech_pad_ms: audio kept before the speech starts and after it ends
            in the utterance handed to the reply function, in ms.
            Default 200 (FastRTC: 400; Silero: 30).
    """

    threshold: float = 0.5
    min_speech_duration_ms: int = 160
    max_speech_duration_s: float = math.inf
    min_silence_duration_ms: int = 100
    window_size_samples: int = 1024
    speech_pad_ms: int = 200

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ConfigurationError(f"threshold must be between 0 and 1, got {self.threshold!r}")
        if self.min_speech_duration_ms < 0 or self.min_silence_duration_ms < 0 or self.speech_pad_ms < 0:
            raise ConfigurationError("durations in SileroVadOptions must be >= 0 ms")
        if not self.max_speech_duration_s > 0:
            raise ConfigurationError(f"max_speech_duration_s must be > 0 s, got {self.max_speech_duration_s!r}")


#: FastRTC's name for "the options of whatever VAD model is used".
ModelOptions = SileroVadOptions
