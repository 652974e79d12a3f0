"""``Channel``: the bounded queue between a session's transport, graph and consumer.

One item per 20 ms frame crosses two channels in every session, so their cost
is paid tens of thousands of times a second on a busy server. This queue is a
deque plus at most one asyncio future per waiting task: taking a queued item
or a free slot never yields to the event loop, and a task that must wait is
woken by a single ``set_result``. (anyio's memory streams yield to the loop on
every call and allocate an event per wait; on a 500-session phone graph that
was a third of the event loop's time.)

Errors follow anyio's memory streams, so callers can treat either alike:
``anyio.WouldBlock`` from the ``*_nowait`` calls, ``anyio.EndOfStream`` once
the sending side closed and the queue is drained, ``anyio.ClosedResourceError``
to a sender after :meth:`Channel.close_send`, and ``anyio.BrokenResourceError``
to a sender once nobody receives (:meth:`Channel.close_receive`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable

import anyio

__all__ = ["Channel"]


def _wake(waiters: deque[asyncio.Future[None]]) -> None:
    """Wake the first waiter still waiting."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


async def _wait_turn(waiters: deque[asyncio.Future[None]], still_ready: Callable[[], bool]) -> None:
    """Wait in ``waiters`` until woken; if cancelled just after being woken while
    ``still_ready()`` holds, pass the wake-up on so the free slot or queued item is not lost."""
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except BaseException:
        if waiter.done() and not waiter.cancelled() and still_ready():
            _wake(waiters)
        raise


def _wake_all(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)


class Channel:
    """A bounded FIFO of items for one event loop, with a full-buffer policy.

    Args:
        size: items held before ``put`` waits (or, with ``drop_oldest``, drops).
        drop_oldest: when full, drop the oldest queued item instead of waiting
            (for video: a slow reader always gets the newest frame).

    Async iteration yields items until the sending side is closed and the queue
    is drained. Cancelling a waiting ``receive`` or ``put`` loses nothing: an
    item is taken from the queue only by the call that returns it.
    """

    __slots__ = ("size", "drop_oldest", "_low_water", "_items", "_getters", "_putters", "_send_closed", "_receive_closed", "dropped")

    def __init__(self, size: int, *, drop_oldest: bool = False) -> None:
        if size < 1:
            raise ValueError(f"channel size must be >= 1, not {size!r}")
        self.size = size
        self.drop_oldest = drop_oldest
        # A full channel wakes a waiting sender once half of it is free, not at every
        # item taken: a fast sender then refills it in one go instead of one item per
        # trip through the loop.
        self._low_water = size // 2
        self._items: deque[Any] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._send_closed = False
        self._receive_closed = False
        #: Items dropped by the ``drop_oldest`` policy so far.
        self.dropped = 0

    # -- state -------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Items waiting to be received."""
        return len(self._items)

    @property
    def receivers_waiting(self) -> int:
        """Tasks blocked in :meth:`receive` right now."""
        return sum(1 for waiter in self._getters if not waiter.done())

    @property
    def send_closed(self) -> bool:
        """No more items will be put."""
        return self._send_closed

    @property
    def receive_closed(self) -> bool:
        """Nobody receives any more; puts fail."""
        return self._receive_closed

    # -- sending -----------------------------------------------------------------
    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` now, or raise ``anyio.WouldBlock`` when full (never with ``drop_oldest``)."""
        if self._receive_closed:
            raise anyio.BrokenResourceError
        if self._send_closed:
            raise anyio.ClosedResourceError
        items = self._items
        if len(items) >= self.size:
            if not self.drop_oldest:
                raise anyio.WouldBlock
            items.popleft()
            self.dropped += 1
        items.append(item)
        if self._getters:
            _wake(self._getters)

    async def put(self, item: Any) -> None:
        """Queue ``item``, waiting while the channel is full (unless ``drop_oldest``)."""
        while True:
            try:
                self.put_nowait(item)
            except anyio.WouldBlock:
                pass
            else:
                if self._putters and len(self._items) < self.size:
                    _wake(self._putters)  # room for the next waiting sender too
                return
            await _wait_turn(self._putters, lambda: len(self._items) < self.size)

    def close_send(self) -> None:
        """No more items: receivers get what is queued, then ``anyio.EndOfStream``."""
        self._send_closed = True
        _wake_all(self._getters)
        _wake_all(self._putters)

    # -- receiving -----------------------------------------------------------------
    def peek_nowait(self) -> Any:
        """The oldest queued item, left in the channel; ``anyio.WouldBlock`` if none is queued."""
        if not self._items:
            raise anyio.WouldBlock
        return self._items[0]

    def receive_nowait(self) -> Any:
        """The oldest queued item; ``anyio.WouldBlock`` if none, ``anyio.EndOfStream`` if none will come."""
        items = self._items
        if items:
            item = items.popleft()
            if self._putters and len(items) <= self._low_water:
                _wake(self._putters)
            return item
        if self._send_closed or self._receive_closed:
            raise anyio.EndOfStream
        raise anyio.WouldBlock

    async def receive(self) -> Any:
        """The oldest item, waiting for one; raises ``anyio.EndOfStream`` at the end."""
        while True:
            try:
                return self.receive_nowait()
            except anyio.WouldBlock:
                pass
            await _wait_turn(self._getters, lambda: bool(self._items))

    def close_receive(self) -> None:
        """Nobody will receive: queued items are dropped and senders get ``anyio.BrokenResourceError``."""
        self._receive_closed = True
        self._items.clear()
        _wake_all(self._putters)
        _wake_all(self._getters)

    def close(self) -> None:
        """Close both sides."""
        self.close_send()
        self.close_receive()

    def __aiter__(self) -> Channel:
        return self

    async def __anext__(self) -> Any:
        if self._items:  # the common case on a busy loop: no await at all
            return self.receive_nowait()
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        state = "closed" if self._send_closed else "open"
        return f"Channel({len(self._items)}/{self.size}, {state}{', drop_oldest' if self.drop_oldest else ''})"
