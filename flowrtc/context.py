"""Which connection the running code serves: :func:`get_current_context`.

Handler code (``receive``, ``emit``, ``start_up``, video functions, generators,
in worker threads too) can ask which connection it is serving, FastRTC's way.
The answer comes from the running :class:`~flowrtc.session.Session`, so it is
right on every transport and inside ``emit`` as well (FastRTC raised there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowrtc.errors import GraphError
from flowrtc.session import current_session

__all__ = ["Context", "get_current_context"]


@dataclass(frozen=True, slots=True)
class Context:
    """The connection a piece of handler code is serving.

    Attributes:
        webrtc_id: the session id (``webrtc_id``, ``websocket_id`` or the phone call's id).
        websocket: the transport object the adapter gave the session (the WebSocket for
            WebSocket and phone sessions), or ``None``.
    """

    webrtc_id: str
    websocket: Any = None


def get_current_context() -> Context:
    """The :class:`Context` of the session running this code.

    Raises :class:`~flowrtc.errors.GraphError` outside a session.
    """
    session = current_session()
    if session is None:
        raise GraphError("no context: get_current_context() was called outside a flowrtc session")
    return Context(webrtc_id=session.id, websocket=session.transport)
