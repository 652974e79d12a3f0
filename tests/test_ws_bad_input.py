"""Bad input on the WebSocket and phone routes: each gets a typed error and a close code, nothing leaks."""

from __future__ import annotations

import base64
import json
from typing import Any, Awaitable, Callable

import anyio
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from conftest import junk
from ws_support import Received, collect, echo_graph, expected_reply_s, mulaw_frames, paced, resource_snapshot, serve, settle

from flowrtc import AudioChunk
from flowrtc.limits import Limits, RateLimiter
from flowrtc.stream import Stream
from flowrtc.testing import load_audio

pytestmark = pytest.mark.anyio

PATHS = {"websocket": "/websocket/offer", "phone": "/telephone/handler"}
ROUTES = pytest.mark.parametrize("route", ["websocket", "phone"])


def start(route: str, session_id: str, **extra: Any) -> str:
    if route == "websocket":
        return json.dumps({"event": "start", "websocket_id": session_id, **extra})
    return json.dumps({
        "event": "start", "sequenceNumber": "1", "streamSid": session_id,
        "start": {"streamSid": session_id, "callSid": "CA1", "accountSid": "AC1", "tracks": ["inbound"],
                  "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **extra},
                  "customParameters": {}},
    })


def media(route: str, payload: str) -> str:
    message: dict[str, Any] = {"event": "media", "media": {"payload": payload}}
    if route == "phone":
        message.update(streamSid="MZ1", sequenceNumber="2")
        message["media"].update(track="inbound", chunk="1", timestamp="0")
    return json.dumps(message)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def closed_with(ws: Any) -> Received:
    received = Received()
    with anyio.fail_after(5):
        await collect(ws, received)
    return received


def assert_error(received: Received, kind: str, code: int) -> None:
    errors = [m for _, m in received.messages if isinstance(m, dict) and m.get("event") == "error"]
    assert errors, f"no error message; got {received.messages[-3:]}, close {received.close_code}"
    assert errors[-1]["kind"] == kind and errors[-1]["type"] == "error" and errors[-1]["message"]
    assert (received.close_code, received.close_reason) == (code, kind)


@pytest.fixture
async def server() -> Any:
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=None, limits=Limits(start_timeout_s=1.0))
    async with serve(stream) as host:
        baseline = resource_snapshot()
        yield stream, host
        await settle(stream, baseline)


@ROUTES
@pytest.mark.parametrize("started", [False, True])
async def test_non_json(server: Any, route: str, started: bool) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        if started:
            await ws.send(start(route, "MZ1"))
        await ws.send("this is not json {")
        assert_error(await closed_with(ws), "bad_json", 1007)


@ROUTES
async def test_json_without_event(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send('["start"]')
        assert_error(await closed_with(ws), "bad_message", 1007)


async def test_unknown_event_websocket(server: Any) -> None:
    """FastRTC's route answers an unknown event with a non-fatal error and carries on."""
    stream, host = server
    async with connect(f"ws://{host}/websocket/offer") as ws:
        await ws.send(start("websocket", "u1"))
        await ws.send('{"event":"dance"}')
        error = json.loads(await ws.recv())
        assert error["kind"] == "unknown_event" and "dance" in error["message"]
        await ws.send('{"event":"ping"}')
        assert json.loads(await ws.recv()) == {"event": "pong"}


async def test_unknown_event_phone(server: Any) -> None:
    """Twilio may add events: the phone route ignores unknown ones (and never sends Twilio foreign messages)."""
    stream, host = server
    async with connect(f"ws://{host}/telephone/handler") as ws:
        await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send('{"event":"transcription","streamSid":"MZ1"}')
        await ws.send(start("phone", "MZ1"))
        await ws.send('{"event":"futureThing","streamSid":"MZ1"}')
        await ws.send(media("phone", b64(b"\xff" * 161)))  # odd lengths are fine in µ-law
        await anyio.sleep(0.1)
        assert stream.hub.transport("MZ1") == "phone"
        await ws.send('{"event":"stop","streamSid":"MZ1"}')
        received = await closed_with(ws)
    assert received.messages == [] and received.close_code == 1000


@ROUTES
async def test_media_before_start(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(media(route, b64(b"\xff" * 160)))
        assert_error(await closed_with(ws), "not_started", 1002)


@ROUTES
async def test_second_start(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(start(route, "MZ1"))
        await ws.send(start(route, "MZ1"))
        assert_error(await closed_with(ws), "already_started", 1002)


@ROUTES
@pytest.mark.parametrize("payload", ["!!!not base64!!!", "AAA", 12345])
async def test_bad_base64(server: Any, route: str, payload: Any) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(start(route, "MZ1"))
        await ws.send(media(route, payload))
        kind = "bad_message" if isinstance(payload, int) else "bad_base64"
        assert_error(await closed_with(ws), kind, 1007)


@pytest.mark.parametrize("framing", ["binary", "json"])
async def test_odd_pcm16_payload(server: Any, framing: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}/websocket/offer") as ws:
        await ws.send(start("websocket", "odd", format="pcm16", sample_rate=16000))
        await ws.recv()  # the ack
        await ws.send(b"\x00" * 641 if framing == "binary" else media("websocket", b64(b"\x00" * 641)))
        assert_error(await closed_with(ws), "bad_payload", 1007)


@ROUTES
async def test_binary_frame_without_pcm16(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(start(route, "MZ1"))
        await ws.send(b"\x00" * 640)
        assert_error(await closed_with(ws), "unsupported_data", 1003)


@pytest.mark.parametrize(
    "message, error",
    [
        ({"event": "start"}, "bad_message"),
        ({"event": "start", "websocket_id": ""}, "bad_message"),
        ({"event": "start", "websocket_id": "x" * 300}, "bad_message"),
        ({"event": "start", "websocket_id": "a", "format": "opus"}, "bad_message"),
        ({"event": "start", "websocket_id": "a", "sample_rate": 7}, "bad_message"),
        ({"event": "start", "websocket_id": "a", "sample_rate": "16000"}, "bad_message"),
        ({"event": "start", "websocket_id": "a", "output_sample_rate": 10**6}, "bad_message"),
    ],
)
async def test_bad_start_websocket(server: Any, message: dict[str, Any], error: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}/websocket/offer") as ws:
        await ws.send(json.dumps(message))
        assert_error(await closed_with(ws), error, 1007)


@pytest.mark.parametrize("extra", [{"encoding": "audio/L16"}, {"sampleRate": 16000}, {"channels": 2}])
async def test_bad_start_phone(server: Any, extra: dict[str, Any]) -> None:
    stream, host = server
    async with connect(f"ws://{host}/telephone/handler") as ws:
        await ws.send(start("phone", "MZ1", **extra))
        assert_error(await closed_with(ws), "bad_message", 1007)


@ROUTES
async def test_oversized_message(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}", max_size=None) as ws:
        await ws.send(start(route, "MZ1"))
        await ws.send(media(route, b64(b"\xff" * 60_000)))  # 80 kB of JSON
        assert_error(await closed_with(ws), "message_too_big", 1009)


@ROUTES
async def test_oversized_payload(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(start(route, "MZ1"))
        await ws.send(media(route, b64(b"\xff" * 48_002)))  # a 64 kB message, over max_payload_bytes
        assert_error(await closed_with(ws), "payload_too_large", 1009)


@ROUTES
async def test_message_flood(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        await ws.send(start(route, "MZ1"))
        flood = media(route, b64(b"\xff" * 8))
        for _ in range(600):
            try:
                await ws.send(flood)
            except Exception:
                break
        assert_error(await closed_with(ws), "rate_limited", 1008)


@ROUTES
async def test_no_start_in_time(server: Any, route: str) -> None:
    stream, host = server
    async with connect(f"ws://{host}{PATHS[route]}") as ws:
        if route == "phone":
            await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        assert_error(await closed_with(ws), "start_timeout", 1008)


def test_rate_limiter_bucket() -> None:
    now = [0.0]
    bucket = RateLimiter(50.0, 5, clock=lambda: now[0])
    assert [bucket.allow() for _ in range(6)] == [True] * 5 + [False]
    now[0] += 0.02  # one token back
    assert bucket.allow() and not bucket.allow()
    now[0] += 10.0  # refills only up to the burst
    assert sum(bucket.allow() for _ in range(10)) == 5


async def healthy_echo(host: str, media_dir: Any, session_id: str) -> float:
    """A well-behaved client: speech in, the whole reply back; returns the reply's length in seconds."""
    clip = load_audio(media_dir / "asterisk_hello-world_8k.wav", sample_rate=16000)
    silence = AudioChunk(np.zeros((1, 9600), np.int16), 16000)
    async with connect(f"ws://{host}/websocket/offer") as ws:
        await ws.send(start("websocket", session_id, sample_rate=16000))
        received = Received()
        async with anyio.create_task_group() as group:
            group.start_soon(collect, ws, received)
            frames = mulaw_frames(clip) + mulaw_frames(silence)
            async for _, frame in paced(frames):
                await ws.send(media("websocket", b64(frame)))
            await anyio.sleep(expected_reply_s(clip) + 0.2)
            await ws.send('{"event":"stop"}')
    return sum(len(base64.b64decode(m["media"]["payload"])) for _, m in received.of("media")) / 24000


async def beside_a_good_session(stream: Stream, media_dir: Any, crowd: Callable[[str], Awaitable[None]]) -> float:
    """Serve ``stream``, run ``crowd(host)`` while one good session talks; the seconds of reply it
    got. Afterwards no session, task or thread may be left."""
    async with serve(stream) as host:
        baseline = resource_snapshot()
        results: list[float] = []

        async def good() -> None:
            results.append(await healthy_echo(host, media_dir, "good"))

        async with anyio.create_task_group() as group:
            group.start_soon(good)
            await crowd(host)
        await settle(stream, baseline)
    assert results, "the good session did not finish"
    return results[0]


async def test_connection_flood_and_bad_clients_leave_others_working(media_dir: Any) -> None:
    """60 connections at once over both routes, plus every kind of bad client, while one good session talks."""
    limits = Limits(max_connections=20, start_timeout_s=2.0)
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=6, limits=limits)
    clip_reply_s = expected_reply_s(load_audio(media_dir / "asterisk_hello-world_8k.wav", sample_rate=16000))
    outcomes: list[tuple[str, Any]] = []

    async def flooder(index: int, host: str) -> None:
        route = "websocket" if index % 2 else "phone"
        try:
            async with connect(f"ws://{host}{PATHS[route]}") as ws:
                try:
                    await ws.send(start(route, f"flood-{index}"))
                except ConnectionClosed:  # refused before start; its error message is still queued
                    pass
                received = Received()
                with anyio.move_on_after(1.5):
                    await collect(ws, received)
                await ws.close()
        except Exception as exc:  # refused outright
            outcomes.append(("refused", type(exc).__name__))
            return
        failed = [m for _, m in received.messages if isinstance(m, dict) and (m.get("status") == "failed" or m.get("event") == "error")]
        if failed:
            outcomes.append(("failed", failed[0].get("kind") or failed[0]["meta"]["error"]))
        else:
            outcomes.append(("served", route))

    bad_messages = ["nope", '{"event":"media","media":{"payload":"AAAA"}}', "x" * 70_000]

    async def bad_client(message: str, host: str) -> None:
        async with connect(f"ws://{host}/websocket/offer", max_size=None) as ws:
            try:
                await ws.send(message)
            except ConnectionClosed:  # already refused: too many connections
                return
            with anyio.move_on_after(3):
                await collect(ws, Received())

    async def crowd(host: str) -> None:
        await anyio.sleep(0.3)
        async with anyio.create_task_group() as group:
            for index in range(60):
                group.start_soon(flooder, index, host)
            for message in bad_messages:
                group.start_soon(bad_client, message, host)

    reply_s = await beside_a_good_session(stream, media_dir, crowd)
    assert abs(reply_s - clip_reply_s) < 0.1, "the good session got its whole reply"
    kinds = [detail for outcome, detail in outcomes if outcome == "failed"]
    served = [detail for outcome, detail in outcomes if outcome == "served"]
    assert len(served) == 5, outcomes  # 6 sessions, one of them the good client
    assert kinds.count("concurrency_limit_reached") >= 1 and kinds.count("too_many_connections") >= 30, outcomes
    assert set(kinds) <= {"concurrency_limit_reached", "too_many_connections"}


# -- fuzz: many kinds of malformed clients, seeded ------------------------------------------

DOCUMENTED = {  # kind -> close code (docs/websocket-and-phone.md)
    "bad_json": 1007, "bad_message": 1007, "bad_base64": 1007, "bad_payload": 1007, "not_started": 1002,
    "already_started": 1002, "unsupported_data": 1003, "message_too_big": 1009, "payload_too_large": 1009,
    "rate_limited": 1008, "start_timeout": 1008,
}


def fuzz_messages(rng: np.random.Generator, route: str, index: int) -> list[str | bytes]:
    """A short script of messages, most of them malformed in some way."""
    session = f"fuzz-{index}"
    good_start = start(route, session)
    kind = int(rng.integers(0, 9))
    if kind == 0:  # random bytes, as a binary frame, before or after start
        return ([good_start] if rng.integers(0, 2) else []) + [rng.bytes(int(rng.integers(0, 2000)))]
    if kind == 1:  # any JSON value as the first message
        return [json.dumps(junk(rng))]
    if kind == 2:  # a start whose fields have the wrong types or values
        message = json.loads(good_start)
        if route == "websocket":
            field = ["websocket_id", "sample_rate", "output_sample_rate", "format"][int(rng.integers(0, 4))]
            message[field] = junk(rng)
        else:
            field = ["encoding", "sampleRate", "channels"][int(rng.integers(0, 3))]
            message["start"]["mediaFormat"][field] = junk(rng)
        return [json.dumps(message)]
    if kind == 3:  # a start, then media whose payload is anything
        return [good_start, json.dumps({"event": "media", "media": {"payload": junk(rng)}, "streamSid": session})]
    if kind == 4:  # a start, then audio of any length (odd lengths too): µ-law, or PCM16 in binary frames
        if route == "websocket" and rng.integers(0, 2):
            return [start(route, session, format="pcm16", sample_rate=16000)] + [rng.bytes(int(rng.integers(0, 700))) for _ in range(int(rng.integers(1, 5)))]
        return [good_start] + [media(route, b64(rng.bytes(int(rng.integers(0, 700))))) for _ in range(int(rng.integers(1, 5)))]
    if kind == 5:  # a start, then known events with junk bodies
        event = ["mark", "dtmf", "media", "stop", "ping", "start"][int(rng.integers(0, 6))]
        return [good_start, json.dumps({"event": event, event: junk(rng), "streamSid": session})]
    if kind == 6:  # events of any name, before and after start
        return [json.dumps({"event": str(junk(rng))[:40]}), good_start, json.dumps({"event": junk(rng)})]
    if kind == 7:  # text that is not JSON at all
        return [good_start, "".join(chr(int(c)) for c in rng.integers(32, 0x2FFF, int(rng.integers(1, 200))))]
    return [good_start, json.dumps({"event": "media", "media": junk(rng)})]  # media without a payload object


async def test_fuzzed_clients_get_documented_errors_and_leave_the_server_whole(media_dir: Any) -> None:
    """200 seeded malformed clients on both routes while a good session talks: every one ends with a
    documented error kind and close code (or stays open, for an ignored event), nothing leaks."""
    rng = np.random.default_rng(20261129)
    stream = Stream(echo_graph(), modality="audio", concurrency_limit=None, limits=Limits(start_timeout_s=1.0))
    scripts = [("websocket" if i % 2 else "phone", fuzz_messages(rng, "websocket" if i % 2 else "phone", i)) for i in range(200)]
    outcomes: list[tuple[str, int | None, str | None]] = []

    async def fuzz_client(route: str, script: list[str | bytes], host: str) -> None:
        async with connect(f"ws://{host}{PATHS[route]}", max_size=None) as ws:
            try:
                for message in script:
                    await ws.send(message)
            except ConnectionClosed:
                pass
            received = Received()
            with anyio.move_on_after(1.5):
                await collect(ws, received)
            if received.close_code is None:  # still open: it said nothing fatal; end it properly
                await ws.close()
                outcomes.append((route, None, None))
                return
        errors = [m for _, m in received.messages if isinstance(m, dict) and m.get("event") == "error"]
        outcomes.append((route, received.close_code, errors[-1]["kind"] if errors else None))

    async def crowd(host: str) -> None:
        for batch in range(0, len(scripts), 25):
            async with anyio.create_task_group() as wave:
                for route, script in scripts[batch : batch + 25]:
                    wave.start_soon(fuzz_client, route, script, host)

    reply_s = await beside_a_good_session(stream, media_dir, crowd)
    clip_reply_s = expected_reply_s(load_audio(media_dir / "asterisk_hello-world_8k.wav", sample_rate=16000))
    assert abs(reply_s - clip_reply_s) < 0.1, "the good session got its whole reply"
    for route, code, kind in outcomes:
        if code is None or code == 1000:
            continue  # open after an ignored event, or ended normally (a fuzzed "stop")
        assert kind in DOCUMENTED and code == DOCUMENTED[kind], (route, code, kind)
    assert len(outcomes) == len(scripts)
    kinds = {kind for _, _, kind in outcomes}
    assert {"bad_json", "bad_message", "bad_base64", "bad_payload", "not_started", "already_started", "unsupported_data"} <= kinds, kinds
