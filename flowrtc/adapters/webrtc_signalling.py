"""Signalling for the WebRTC transport: FastRTC's failure JSON, offers and trickled candidates."""

from __future__ import annotations

from typing import Any

from aiortc import RTCIceCandidate
from aiortc.sdp import SessionDescription, candidate_from_sdp

__all__ = ["SignallingError", "declares_stereo", "first_audio_codec", "offered_kinds", "parse_candidate", "prefers_stereo"]


class SignallingError(Exception):
    """An offer or candidate refused; ``meta`` is FastRTC's failure ``meta`` object."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.meta = {"error": error, **extra}

    def response(self) -> dict[str, Any]:
        return {"status": "failed", "meta": self.meta}


def offered_kinds(sdp: str) -> list[str]:
    """The media kinds of an offer's m= sections; :class:`SignallingError` if it is not SDP."""
    if not isinstance(sdp, str) or "m=" not in sdp:
        raise SignallingError("invalid_sdp", detail="the offer has no media sections")
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser raises whatever the text trips
        raise SignallingError("invalid_sdp", detail=str(exc) or type(exc).__name__) from None
    if not description.media:
        raise SignallingError("invalid_sdp", detail="the offer has no media sections")
    return [media.kind for media in description.media]


def first_audio_codec(sdp: str) -> str | None:
    """The mime type of the codec an answer's first audio section sends with (``"audio/opus"``, ...)."""
    for media in SessionDescription.parse(sdp).media:
        if media.kind == "audio" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.lower()
    return None


def declares_stereo(sdp: str) -> bool:
    """Whether the offer says its Opus audio is stereo (``sprop-stereo=1``, RFC 7587).

    Browsers send mono unless told otherwise; aiortc decodes Opus to two channels anyway.
    """
    return "1" in _opus_parameter(sdp, "sprop-stereo")


def prefers_stereo(sdp: str) -> bool:
    """Whether the offerer asks to receive stereo Opus (``stereo=1``, RFC 7587; mono otherwise)."""
    return "1" in _opus_parameter(sdp, "stereo")


def _opus_parameter(sdp: str, name: str) -> set[str]:
    """The values an Opus format parameter has in ``sdp`` (one per Opus payload type that sets it)."""
    opus = {line.split()[0].split(":")[1] for line in sdp.splitlines() if line.startswith("a=rtpmap:") and "opus/" in line.lower()}
    values = set()
    for line in sdp.splitlines():
        if line.startswith("a=fmtp:") and line.split()[0].split(":")[1] in opus:
            parameters = {part.strip().split("=")[0]: part.strip().partition("=")[2] for part in line.split(" ", 1)[-1].split(";")}
            if name in parameters:
                values.add(parameters[name])
    return values


def parse_candidate(candidate: dict[str, Any] | None) -> RTCIceCandidate | None:
    """A browser's ``RTCIceCandidate.toJSON()`` as aiortc's candidate; ``None`` = end-of-candidates."""
    if candidate is None:
        return None
    text = candidate.get("candidate")
    if not isinstance(text, str):
        raise SignallingError("invalid_candidate_format", detail="candidate.candidate must be a string")
    text = text.strip()
    if not text:
        return None
    if text.startswith("a="):
        text = text[2:]
    if not text.startswith("candidate:"):
        raise SignallingError("invalid_candidate_format", detail="a candidate line starts with 'candidate:'")
    fields = text.split(":", 1)[1].split()
    # foundation component transport priority address port "typ" type [extensions]
    if len(fields) < 8 or fields[6] != "typ" or not (fields[1].isdigit() and fields[3].isdigit() and fields[5].isdigit()):
        raise SignallingError("invalid_candidate_format", detail="expected 'candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> ...'")
    try:
        parsed = candidate_from_sdp(" ".join(fields))
    except (ValueError, IndexError, AssertionError) as exc:
        raise SignallingError("invalid_candidate_format", detail=str(exc) or "unreadable candidate") from None
    mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
    if mid is None and index is None:
        raise SignallingError("invalid_candidate_format", detail="a candidate needs sdpMid or sdpMLineIndex")
    if (mid is not None and not isinstance(mid, str)) or (index is not None and (not isinstance(index, int) or isinstance(index, bool))):
        raise SignallingError("invalid_candidate_format", detail="sdpMid is a string and sdpMLineIndex an integer")
    parsed.sdpMid = mid
    parsed.sdpMLineIndex = index
    return parsed
