"""Events: the non-media items that flow in band with the media they describe.

Every event carries ``media_time_s``, the position in the *input* media (seconds,
derived from sample counts) at which it was decided, so the same recording gives
the same timeline on every run and at any speed.

Events are msgspec Structs (cheap to build, compare and encode). The two names
FastRTC users construct positionally, ``AdditionalOutputs(*args)`` and
``CloseStream(msg)``, keep those signatures.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowrtc.media import AudioChunk

__all__ = [
    "Event",
    "SpeechStarted",
    "SpeechStopped",
    "SpeechPaused",
    "SpeechResumed",
    "PauseDetected",
    "Utterance",
    "PendingUtterance",
    "Interrupt",
    "ReplyStarted",
    "ReplyEnded",
    "AdditionalOutputs",
    "CloseStream",
    "Log",
    "Error",
    "Warning",
    "Message",
    "ClientMessage",
    "Transcript",
    "StopWord",
    "Dtmf",
    "PlaybackMark",
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of all events. ``media_time_s``: input media time when it was decided."""

    media_time_s: float = 0.0


class SpeechStarted(Event, frozen=True, kw_only=True):
    """The VAD decided that speech began at ``media_time_s`` (padding included)."""


class SpeechStopped(Event, frozen=True, kw_only=True):
    """The VAD decided at ``media_time_s`` that speech had stopped.

    ``speech_end_s``: when it stopped, the start of the pause that ended it
    (``None`` when the detector does not say).
    """

    speech_end_s: float | None = None


class SpeechPaused(Event, frozen=True, kw_only=True):
    """Speech has been silent since ``speech_end_s``, long enough to start a reply early but
    not yet long enough to end the turn (``vad(early_pause_ms=...)``).

    A ``SpeechStopped`` with the same ``speech_end_s`` follows if the pause ends the turn,
    a ``SpeechResumed`` if the user goes on.
    """

    speech_end_s: float


class SpeechResumed(Event, frozen=True, kw_only=True):
    """Speech came back in the pause that a ``SpeechPaused`` announced: the turn goes on."""


class PauseDetected(Event, frozen=True, kw_only=True):
    """The pause gate decided that the user's turn is over."""


class Utterance(Event, frozen=True, kw_only=True):
    """One user turn: the audio from speech start (with pre-roll) to the pause.

    ``start_s``/``end_s`` are the speech bounds in input media time; the audio is
    at the rate the pause gate received.
    """

    audio: AudioChunk
    start_s: float
    end_s: float


class PendingUtterance(Event, frozen=True, kw_only=True):
    """The turn as it will be if the pause going on now ends it (``pause_gate`` after a ``SpeechPaused``).

    ``utterance`` is exactly the ``Utterance`` that would then follow, apart from its
    ``media_time_s``; ``reply`` and ``stt`` start their slow work on it early. A
    ``SpeechResumed`` withdraws it.
    """

    utterance: Utterance

    def foresees(self, utterance: Utterance) -> bool:
        """Whether ``utterance`` is the turn this one announced: the same speech bounds and the same audio span."""
        mine = self.utterance
        return (
            mine.start_s == utterance.start_s
            and mine.end_s == utterance.end_s
            and mine.audio.sample_rate == utterance.audio.sample_rate
            and mine.audio.pts == utterance.audio.pts
            and mine.audio.n_samples == utterance.audio.n_samples
        )


class Interrupt(Event, frozen=True, kw_only=True):
    """The running reply was cut off: drop every queued, unplayed audio sample."""


class ReplyStarted(Event, frozen=True, kw_only=True):
    """A reply to the user began (its audio is placed from ``media_time_s`` on)."""


class ReplyEnded(Event, frozen=True, kw_only=True):
    """A reply finished (``interrupted`` when it was cut off)."""

    interrupted: bool = False


class CloseStream(Event, frozen=True):
    """Returned or yielded by a handler to end its session after what was queued plays."""

    msg: str = "Stream closed"


class Log(Event, frozen=True, kw_only=True):
    """A ``log`` message for the client, e.g. ``started_talking``."""

    data: str


class Error(Event, frozen=True, kw_only=True):
    """An error the client can read; ``kind`` is a stable machine-readable name."""

    message: str
    kind: str = "error"


class Warning(Event, frozen=True, kw_only=True):  # noqa: A001 - FastRTC's name
    """A ``warning`` message for the client."""

    message: str


class Message(Event, frozen=True, kw_only=True):
    """A raw ``{"type": ..., "data": ...}`` message for the client (send_input, stopword, ...)."""

    type: str
    data: Any = ""


class ClientMessage(Event, frozen=True, kw_only=True):
    """Something the client sent on its message channel."""

    data: Any


class Transcript(Event, frozen=True, kw_only=True):
    """Text recognised from the user's speech."""

    text: str
    final: bool = True


class StopWord(Event, frozen=True, kw_only=True):
    """A stop word or phrase was heard."""

    word: str


class Dtmf(Event, frozen=True, kw_only=True):
    """A telephone keypad digit pressed by the caller."""

    digit: str


class PlaybackMark(Event, frozen=True, kw_only=True):
    """The client reports that audio up to a named mark has been played."""

    name: str


class AdditionalOutputs:
    """Extra values a handler sends beside its media (FastRTC's ``AdditionalOutputs(*args)``)."""

    __slots__ = ("args", "media_time_s")

    def __init__(self, *args: Any, media_time_s: float = 0.0) -> None:
        self.args = args
        self.media_time_s = media_time_s

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AdditionalOutputs) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)

    def __repr__(self) -> str:
        return f"AdditionalOutputs{self.args!r}"
