"""Which graph a handler becomes, by modality and mode.

``graph_factory(handler, modality=..., mode=...)`` validates the modality ×
mode × handler table once, at ``Stream`` construction, and returns a function
that builds a fresh graph per session.
"""

from __future__ import annotations

from typing import Any, Callable

from flowrtc.errors import ConfigurationError
from flowrtc.graph import Graph

__all__ = ["graph_factory"]


def graph_factory(handler: Any, *, modality: str, mode: str, stream: Any = None) -> Callable[[], Graph]:
    """Return a per-session graph builder for ``handler``, or raise ConfigurationError."""
    if isinstance(handler, Graph):
        return lambda: handler
    if hasattr(handler, "graph") and callable(handler.graph):
        copy = getattr(handler, "copy", None)
        return lambda: (copy() if callable(copy) else handler).graph()
    raise ConfigurationError(
        f"cannot serve a {type(handler).__name__} handler with modality={modality!r}, mode={mode!r}"
    )
