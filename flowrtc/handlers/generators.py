"""Receive-mode generators: the server streams what a generator function yields.

``fn(*inputs)`` (sync or async generator function) is called once per session
with the stream's extra inputs: the client's values if it has set them, else the
additional inputs' defaults; a function that needs arguments and has neither
asks the client (``send_input``) and waits. It yields audio (``(rate, array)``
in any FastRTC shape), video frames (BGR arrays), ``AdditionalOutputs``, pairs of
them, or ``CloseStream``. The session ends when the generator does.

Audio goes out as a continuous stream at the rate it was yielded at; video
frames are stamped and released at ``frames_per_s``.
"""

from __future__ import annotations

from typing import Any, AsyncIterable, AsyncIterator, Callable, Sequence

import anyio

from flowrtc.events import CloseStream
from flowrtc.graph import Graph, Ports
from flowrtc.handlers.base import resolve_args
from flowrtc.handlers.driver import _AudioPlacer, _quietly
from flowrtc.handlers.video import required_parameters
from flowrtc.operators.core import scoped
from flowrtc.operators.handler import iterate_call
from flowrtc.operators.video import fps
from flowrtc.session import current_session

__all__ = ["receive_graph"]


class _Lifetime:
    """Ends the helper pipelines of a graph when its main one ends."""

    def __init__(self) -> None:
        self.over = False
        self.scope: anyio.CancelScope | None = None

    def end(self) -> None:
        self.over = True
        if self.scope is not None:
            self.scope.cancel()


async def _generate(fn: Callable[..., Any], defaults: Sequence[Any], lifetime: _Lifetime) -> AsyncIterator[Any]:
    session = current_session()
    try:
        args = resolve_args(session, defaults)
        if session is not None and required_parameters(fn) > len(args):
            await session.wait_for_args()
            args = resolve_args(session, defaults)
        placer = _AudioPlacer(None)  # audio keeps the rate it was yielded at
        limiter = anyio.CapacityLimiter(1)
        async with scoped(iterate_call(fn, *args, limiter=limiter)) as values:
            async for value in values:
                for item in placer.place(value, placer.position_s):
                    yield item
                    if isinstance(item, CloseStream):
                        return
        for item in placer.flush():
            yield item
    finally:
        lifetime.end()


async def _drain(lifetime: _Lifetime, source: AsyncIterable[Any]) -> None:
    # Client messages have no reader in receive mode; read them so the channel never fills.
    with anyio.CancelScope() as scope:
        lifetime.scope = scope
        if lifetime.over:
            scope.cancel()
        async with scoped(source) as items:
            async for _ in items:
                pass


def receive_graph(
    fn: Callable[..., Any], *, modality: str, frames_per_s: float = 30, defaults: Sequence[Any] = ()
) -> Graph:
    """The graph of a receive-mode generator (``modality`` ``"audio"`` or ``"video"``)."""
    defaults = list(defaults)

    def build(ports: Ports) -> list[AsyncIterable[Any]]:
        lifetime = _Lifetime()
        output: AsyncIterable[Any] = _generate(fn, defaults, lifetime)
        if modality == "video":
            output = fps.raw(output, frames_per_s)
        return [output, _quietly(_drain, lifetime, ports.messages)]

    return Graph(build=build, name=getattr(fn, "__name__", "generator"), modality=modality)  # type: ignore[arg-type]

