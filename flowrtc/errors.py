"""The one exception hierarchy of flowrtc.

Every error flowrtc raises on purpose derives from :class:`FlowRTCError`, so an
application can catch ours without catching its own bugs.
"""

from __future__ import annotations

__all__ = [
    "FlowRTCError",
    "MediaError",
    "GraphError",
    "ConfigurationError",
    "LimitExceeded",
    "ProtocolError",
    "MissingExtraError",
    "WebRTCError",
    "SessionClosed",
]


class FlowRTCError(Exception):
    """Base class of every error flowrtc raises deliberately."""


class MediaError(FlowRTCError, ValueError):
    """Audio or video that does not have the shape, dtype or rate asked for."""


class GraphError(FlowRTCError):
    """A graph or operator was wired or used wrongly."""


class ConfigurationError(FlowRTCError, ValueError):
    """An option or a combination of options that flowrtc cannot honour."""


class LimitExceeded(FlowRTCError):
    """A size, rate, time or concurrency limit was reached."""


class ProtocolError(FlowRTCError, ValueError):
    """A peer sent a message that does not follow the wire protocol."""


class MissingExtraError(FlowRTCError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, extra: str, package: str, what: str) -> None:
        super().__init__(
            f"{what} needs the '{package}' package: install it with "
            f"pip install 'flowrtc[{extra}]'"
        )
        self.extra = extra
        self.package = package


class WebRTCError(FlowRTCError):
    """Raised by user code to send an ``error`` message to its client.

    The session that raised it ends cleanly; every other session goes on.
    """


class SessionClosed(FlowRTCError):
    """Input was sent to a session that has already ended."""
