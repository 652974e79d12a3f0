"""Events ⇄ FastRTC's JSON messages, shared by every transport.

Server → client messages are ``{"type": T, "data": D}``; errors and warnings
carry ``message`` (what FastRTC's clients read) and, for clients that read
``data``, the same text there too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from flowrtc.events import (
    AdditionalOutputs,
    CloseStream,
    Error,
    Log,
    Message,
    StopWord,
    Warning,
)

__all__ = ["to_wire", "encode_message", "json_encoder"]

json_encoder = msgspec.json.Encoder()


def to_wire(item: Any) -> dict[str, Any] | None:
    """The client message for an output event, or ``None`` if it has none."""
    if isinstance(item, Log):
        return {"type": "log", "data": item.data}
    if isinstance(item, Message):
        return {"type": item.type, "data": item.data}
    if isinstance(item, Error):
        return {"type": "error", "message": item.message, "data": item.message, "kind": item.kind}
    if isinstance(item, Warning):
        return {"type": "warning", "message": item.message, "data": item.message}
    if isinstance(item, AdditionalOutputs):
        return {"type": "fetch_output", "data": []}
    if isinstance(item, StopWord):
        return {"type": "stopword", "data": ""}
    if isinstance(item, CloseStream):
        return {"type": "end_stream", "data": item.msg}
    return None


def encode_message(message: dict[str, Any]) -> str:
    """Serialise a client message as JSON text."""
    return json_encoder.encode(message).decode()
