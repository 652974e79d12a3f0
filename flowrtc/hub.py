"""``SessionHub``: what the sessions of one Stream share.

The hub is the in-process ``SessionBus`` of the architecture: it knows which
session ids are live (and so enforces ``concurrency_limit`` across every
transport), routes ``set_input`` to a session, and fans each session's
``AdditionalOutputs`` out to ``output_stream`` readers. All state for one id
lives in one process; run several workers only with sticky routing by id.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import anyio

from flowrtc.errors import LimitExceeded
from flowrtc.events import AdditionalOutputs
from flowrtc.session import Session

__all__ = ["SessionHub", "ConnectionExists", "ConcurrencyLimitReached"]

_OUTPUT_BACKLOG = 64


class ConcurrencyLimitReached(LimitExceeded):
    """Every session slot of the stream is taken (FastRTC's ``concurrency_limit_reached``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"concurrency limit of {limit} sessions reached")
        self.limit = limit


class ConnectionExists(LimitExceeded):
    """A session with this id is already live (FastRTC's ``connection_already_exists``)."""


@dataclass
class _Entry:
    session: Session | None = None
    transport: str = ""
    outputs: deque[AdditionalOutputs] = field(default_factory=lambda: deque(maxlen=_OUTPUT_BACKLOG))
    changed: anyio.Event = field(default_factory=anyio.Event)
    ended: bool = False


class SessionHub:
    """Live sessions of one Stream, by id.

    Args:
        concurrency_limit: most sessions at once, over all transports (``None``: unlimited).
    """

    def __init__(self, concurrency_limit: int | None = None) -> None:
        self.concurrency_limit = concurrency_limit
        self._entries: dict[str, _Entry] = {}
        self._pending_args: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return sum(1 for entry in self._entries.values() if not entry.ended)

    def __contains__(self, session_id: str) -> bool:
        entry = self._entries.get(session_id)
        return entry is not None and not entry.ended

    def ids(self) -> list[str]:
        return [key for key, entry in self._entries.items() if not entry.ended]

    def reserve(self, session_id: str, *, transport: str) -> None:
        """Take a slot for ``session_id`` or raise ConnectionExists / ConcurrencyLimitReached."""
        if session_id in self:
            raise ConnectionExists(f"a session with id {session_id!r} already exists")
        if self.concurrency_limit is not None and len(self) >= self.concurrency_limit:
            raise ConcurrencyLimitReached(self.concurrency_limit)
        self._entries[session_id] = _Entry(transport=transport)

    def attach(self, session_id: str, session: Session) -> None:
        entry = self._entries[session_id]
        entry.session = session
        pending = self._pending_args.pop(session_id, None)
        if pending is not None:
            session.set_input(*pending)

    def release(self, session_id: str) -> None:
        """Free the slot; output readers of this id finish."""
        entry = self._entries.pop(session_id, None)
        self._pending_args.pop(session_id, None)
        if entry is not None:
            entry.ended = True
            entry.changed.set()

    def session(self, session_id: str) -> Session | None:
        entry = self._entries.get(session_id)
        return entry.session if entry else None

    def transport(self, session_id: str) -> str | None:
        entry = self._entries.get(session_id)
        return entry.transport if entry else None

    def set_input(self, session_id: str, *args: Any) -> bool:
        """Give the session its handler's newest extra arguments.

        Inputs for an id whose session has not started yet are kept for it.
        Returns whether a live session received them.
        """
        entry = self._entries.get(session_id)
        if entry is None or entry.session is None:
            if entry is not None:
                self._pending_args[session_id] = list(args)
            return False
        entry.session.set_input(*args)
        return True

    def publish(self, session_id: str, outputs: AdditionalOutputs) -> None:
        """Queue additional outputs for readers of ``session_id`` (oldest dropped past the backlog)."""
        entry = self._entries.get(session_id)
        if entry is None:
            return
        entry.outputs.append(outputs)
        entry.changed.set()
        entry.changed = anyio.Event()

    async def output_stream(self, session_id: str) -> AsyncIterator[AdditionalOutputs]:
        """Additional outputs of one session as they come; ends when the session ends.

        An unknown id ends at once (nothing is created for it).
        """
        entry = self._entries.get(session_id)
        if entry is None:
            return
        while True:
            while entry.outputs:
                yield entry.outputs.popleft()
            if entry.ended:
                return
            await entry.changed.wait()

    async def fetch_latest_output(self, session_id: str, timeout_s: float = 10.0) -> AdditionalOutputs | None:
        """The next additional output of a session, waiting up to ``timeout_s``."""
        with anyio.move_on_after(timeout_s):
            async for outputs in self.output_stream(session_id):
                return outputs
        return None
