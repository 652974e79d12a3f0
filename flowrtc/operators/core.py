"""The operator algebra: async generators made pipeable.

An operator is an async generator function whose first argument is the source
stream. Decorating it with :func:`operator` lets a pipeline read left to right::

    out = source | decode() | resample(sample_rate=16000) | rechunk(duration_ms=20)

Calling an operator without a source gives a :class:`Pipe` (a callable
``source -> stream``); pipes compose with ``|`` into a longer pipe, which is how
a :class:`~flowrtc.graph.Graph` describes its per-session pipeline before any
media exists. This is the pipe protocol of aiostream, so aiostream's own
``aiostream.pipe.*`` operators mix in freely on either side.

Iterating a :class:`Flow` hands out the operator's own async generator, so the
algebra adds no per-item cost over a bare chain of async generators.
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from typing import Any, AsyncIterable, AsyncIterator, Callable, Generic, TypeVar

__all__ = ["operator", "Pipe", "Flow", "scoped", "identity"]

T = TypeVar("T")
Source = AsyncIterable[Any]
PipeFunction = Callable[[Source], AsyncIterable[Any]]


class Flow(Generic[T]):
    """An async stream that accepts ``| pipe`` on its right.

    ``aiter(flow)`` is the wrapped iterator itself: no extra hop per item.
    """

    __slots__ = ("_iterator",)

    def __init__(self, iterable: AsyncIterable[T]) -> None:
        self._iterator = iterable

    def __aiter__(self) -> AsyncIterator[T]:
        iterator = self._iterator.__aiter__()
        if hasattr(iterator, "__aenter__"):
            # An aiostream Streamer must be iterated inside its own context.
            return _entered(iterator)
        return iterator

    def __or__(self, pipe: PipeFunction) -> Flow[Any]:
        return Flow(pipe(self._iterator))

    async def aclose(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await aclose()


class Pipe:
    """A stream transformation not yet applied to a source.

    ``pipe(source)`` and ``source | pipe`` apply it; ``pipe_a | pipe_b`` composes.
    """

    __slots__ = ("stages", "name")

    def __init__(self, stages: tuple[PipeFunction, ...], name: str = "") -> None:
        self.stages = stages
        self.name = name or " | ".join(getattr(s, "__name__", repr(s)) for s in stages)

    def __call__(self, source: Source) -> Flow[Any]:
        stream: AsyncIterable[Any] = source._iterator if isinstance(source, Flow) else source
        for stage in self.stages:
            stream = stage(stream)
            if isinstance(stream, Flow):
                stream = stream._iterator
        return Flow(stream)

    def __ror__(self, source: Source) -> Flow[Any]:
        return self(source)

    def __or__(self, other: PipeFunction) -> Pipe:
        if isinstance(other, Pipe):
            return Pipe(self.stages + other.stages)
        if callable(other):
            return Pipe(self.stages + (other,))
        return NotImplemented

    def __repr__(self) -> str:
        return f"Pipe({self.name})"


def _is_source(value: Any) -> bool:
    return hasattr(value, "__aiter__")


def operator(function: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    """Make an async generator function ``f(source, **options)`` pipeable.

    ``f(source, **options)`` runs it on a source and returns a :class:`Flow`;
    ``f(**options)`` returns a :class:`Pipe` for later (``source | f(...)``).
    """

    @functools.wraps(function)
    def make(*args: Any, **options: Any) -> Any:
        if args and _is_source(args[0]):
            return Flow(function(*args, **options))
        return Pipe((_bind_after_source(function, args, options),), name=function.__name__)

    make.raw = function  # type: ignore[attr-defined]
    return make


def _bind_after_source(function: Callable[..., Any], args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    def stage(source: Source) -> AsyncIterator[Any]:
        return function(source, *args, **options)

    stage.__name__ = function.__name__
    return stage


@asynccontextmanager
async def scoped(source: AsyncIterable[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Enter an upstream for iteration and close it on the way out.

    Whoever opens a stream closes it: when an operator stops early (or is
    cancelled), its upstream generator is closed at once rather than whenever
    the garbage collector finds it.
    """
    iterator = source.__aiter__()
    if hasattr(iterator, "__aenter__"):
        # aiostream streamers and anyio streams close themselves on exit (and
        # aiostream warns when iterated outside that context).
        async with iterator as entered:
            yield entered
        return
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


async def _entered(iterator: Any) -> AsyncIterator[Any]:
    async with iterator as items:
        async for item in items:
            yield item


@operator
async def identity(source: AsyncIterable[T]) -> AsyncIterator[T]:
    """Pass every item through unchanged."""
    async with scoped(source) as items:
        async for item in items:
            yield item
