"""``flowrtc.channel.Channel``: order, back-pressure, closing, and cancellation lose nothing."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from flowrtc.channel import Channel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_items_come_out_in_order_and_end_after_close_send() -> None:
    channel = Channel(4)
    for k in range(3):
        channel.put_nowait(k)
    channel.close_send()
    assert [item async for item in channel] == [0, 1, 2]
    with pytest.raises(anyio.EndOfStream):
        await channel.receive()
    with pytest.raises(anyio.ClosedResourceError):
        channel.put_nowait(9)


async def test_a_full_channel_blocks_the_sender_until_half_is_free() -> None:
    channel = Channel(4)
    for k in range(4):
        await channel.put(k)
    with pytest.raises(anyio.WouldBlock):
        channel.put_nowait(4)
    sent = asyncio.create_task(channel.put(4))
    await asyncio.sleep(0)
    assert not sent.done() and channel.queued == 4
    assert channel.receive_nowait() == 0  # 3 left: above the low-water mark, still waiting
    await asyncio.sleep(0)
    assert not sent.done()
    assert channel.receive_nowait() == 1  # 2 left: half free, the sender goes on
    await sent
    assert [channel.receive_nowait() for _ in range(3)] == [2, 3, 4]


async def test_every_waiting_sender_gets_in_while_there_is_room() -> None:
    channel = Channel(4)
    for k in range(4):
        channel.put_nowait(k)
    senders = [asyncio.create_task(channel.put(10 + k)) for k in range(3)]
    await asyncio.sleep(0)
    for _ in range(4):
        channel.receive_nowait()
    await asyncio.gather(*senders)
    assert [channel.receive_nowait() for _ in range(3)] == [10, 11, 12]


async def test_a_receiver_waits_and_wakes_on_put() -> None:
    channel = Channel(2)
    got = asyncio.create_task(channel.receive())
    await asyncio.sleep(0)
    assert channel.receivers_waiting == 1
    channel.put_nowait("x")
    assert await got == "x"


async def test_a_cancelled_receive_loses_no_item() -> None:
    channel = Channel(2)
    waiting = asyncio.create_task(channel.receive())
    await asyncio.sleep(0)
    channel.put_nowait("kept")
    waiting.cancel()  # woken and cancelled before it ran: the item stays queued
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await channel.receive() == "kept"


async def test_a_cancelled_sender_hands_its_wakeup_on() -> None:
    channel = Channel(2)
    channel.put_nowait(0)
    channel.put_nowait(1)
    first = asyncio.create_task(channel.put("first"))
    second = asyncio.create_task(channel.put("second"))
    await asyncio.sleep(0)
    channel.receive_nowait()  # 1 left of 2: half free, wakes "first"
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert [channel.receive_nowait() for _ in range(2)] == [1, "second"]


async def test_close_receive_breaks_senders_and_drops_the_queue() -> None:
    channel = Channel(1)
    channel.put_nowait(0)
    blocked = asyncio.create_task(channel.put(1))
    await asyncio.sleep(0)
    channel.close_receive()
    with pytest.raises(anyio.BrokenResourceError):
        await blocked
    assert channel.queued == 0
    with pytest.raises(anyio.BrokenResourceError):
        channel.put_nowait(2)


async def test_drop_oldest_keeps_the_newest_items() -> None:
    channel = Channel(2, drop_oldest=True)
    for k in range(5):
        await channel.put(k)
    assert channel.dropped == 3
    assert [channel.receive_nowait(), channel.receive_nowait()] == [3, 4]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Channel(0)
