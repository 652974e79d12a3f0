"""Limits every network route of a Stream enforces, the tools that enforce them, and the errors they report.

One :class:`Limits` per :class:`~flowrtc.stream.Stream` (``Stream(limits=...)``) is read by
the WebSocket route, the phone route and (for its data channel) WebRTC, so a client meets
the same bounds whichever way it connects. ``concurrency_limit`` and ``time_limit`` stay
on the Stream itself (FastRTC's names); these are the bounds FastRTC never had.

A client that breaks a limit or the protocol gets one :class:`WireError`: the message
``{"event": "error", "type": "error", "kind": ..., "message": ...}`` and then the close
code of its kind (:data:`CLOSE_CODES`), the same on every route.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable

from flowrtc.errors import ConfigurationError, ProtocolError

__all__ = ["Limits", "RateLimiter", "ConnectionSlots", "CloseCode", "CLOSE_CODES", "WireError", "error_message"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client may send and hold.

    Attributes:
        max_message_bytes: largest WebSocket message accepted, text (as UTF-8) or
            binary. Default 65 536 (a 20 ms µ-law message at 48 kHz is ~1.3 kB).
        max_payload_bytes: largest decoded audio payload in one media message.
            Default 48 000 (0.5 s of 48 kHz PCM16, 1 s of 48 kHz µ-law, 6 s of phone audio).
        max_messages_per_s: sustained message rate per connection (20 ms media is 50/s).
            Default 200.
        message_burst: messages accepted at once above that rate (a client catching up
            after a stall). Default 400.
        max_connections: WebSocket connections (FastRTC protocol and phone) open at once
            per Stream, started or not; ``None``: unbounded. Default 1000.
            Sessions are bounded separately by the Stream's ``concurrency_limit``.
        start_timeout_s: seconds a new connection has to send its ``start``. Default 10.
        max_queued_output_s: seconds of reply audio held for one client while it is
            paced out in real time; past it the handler waits. Default 60.
    """

    max_message_bytes: int = 65_536
    max_payload_bytes: int = 48_000
    max_messages_per_s: float = 200.0
    message_burst: int = 400
    max_connections: int | None = 1000
    start_timeout_s: float = 10.0
    max_queued_output_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_payload_bytes", "max_messages_per_s", "message_burst", "start_timeout_s", "max_queued_output_s"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"Limits.{name} must be positive, got {getattr(self, name)!r}")
        if self.max_connections is not None and self.max_connections < 1:
            raise ConfigurationError(f"Limits.max_connections must be positive or None, got {self.max_connections!r}")


class RateLimiter:
    """A token bucket: ``burst`` events at once, ``rate_per_s`` sustained.

    ``clock`` is injectable so tests can move time instead of sleeping.
    """

    __slots__ = ("rate_per_s", "burst", "_tokens", "_last", "_clock")

    def __init__(self, rate_per_s: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        """Spend one token; ``False`` when the bucket is empty."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True


class ConnectionSlots:
    """Counts open connections against a limit (``None``: no limit)."""

    __slots__ = ("limit", "count")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0

    def take(self) -> bool:
        """Take a slot; ``False`` when all are taken."""
        if self.limit is not None and self.count >= self.limit:
            return False
        self.count += 1
        return True

    def release(self) -> None:
        self.count -= 1


class CloseCode(IntEnum):
    """WebSocket close codes (RFC 6455 §7.4.1) the audio routes use."""

    NORMAL = 1000
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


CLOSE_CODES: dict[str, CloseCode] = {
    "bad_json": CloseCode.INVALID_DATA,
    "bad_message": CloseCode.INVALID_DATA,
    "bad_base64": CloseCode.INVALID_DATA,
    "bad_payload": CloseCode.INVALID_DATA,
    "not_started": CloseCode.PROTOCOL_ERROR,
    "already_started": CloseCode.PROTOCOL_ERROR,
    "unsupported_data": CloseCode.UNSUPPORTED_DATA,
    "message_too_big": CloseCode.MESSAGE_TOO_BIG,
    "payload_too_large": CloseCode.MESSAGE_TOO_BIG,
    "rate_limited": CloseCode.POLICY_VIOLATION,
    "start_timeout": CloseCode.POLICY_VIOLATION,
    "invalid_signature": CloseCode.POLICY_VIOLATION,
    "too_many_connections": CloseCode.TRY_AGAIN_LATER,
    "concurrency_limit_reached": CloseCode.TRY_AGAIN_LATER,
    "connection_already_exists": CloseCode.POLICY_VIOLATION,
}


class WireError(ProtocolError):
    """A client broke the protocol or a limit: it is told ``kind`` and the socket closes with ``close_code``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.close_code = int(CLOSE_CODES.get(kind, CloseCode.PROTOCOL_ERROR))


def error_message(kind: str, message: str) -> dict[str, Any]:
    """The error every audio route sends (``data`` repeats ``message`` for FastRTC's clients)."""
    return {"event": "error", "type": "error", "kind": kind, "message": message, "data": message}
