"""The HTTP app: routes, bodies, errors, mounting in Litestar/Starlette/FastAPI, floods.

Every test runs a real uvicorn server on 127.0.0.1 and talks to it with httpx
(and aiortc peers where media must flow).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any, AsyncIterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from litestar import Litestar, get
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from flowrtc import AdditionalOutputs, AudioChunk, Graph, decode, encode, handler, operator, resample
from flowrtc.adapters.webrtc import WebRTCOptions, webrtc_transport
from flowrtc.errors import ConfigurationError
from flowrtc.inputs import Slider, Textbox
from flowrtc.operators.core import scoped
from flowrtc.stream import Stream
from conftest import HELLO, junk, load_clip
from rtc_support import ClientPeer, envelope, media_threads, open_peer_connections, running_server, wait_for

pytestmark = pytest.mark.anyio


def echo_graph() -> Graph:
    return Graph(audio=decode() | resample(48000, layout="mono") | handler(lambda audio: audio) | encode(sample_rate=48000))


def make_stream(graph: Graph | None = None, **options: Any) -> Stream:
    options.setdefault("server_rtc_configuration", {"iceServers": []})
    options.setdefault("concurrency_limit", None)
    options.setdefault("modality", "audio")
    return Stream(graph or echo_graph(), **options)


async def assert_all_closed(stream: Stream, timeout: float = 8) -> None:
    transport = webrtc_transport(stream)
    assert await wait_for(lambda: len(stream.hub) == 0 and not transport.peers, timeout), (stream.hub.ids(), list(transport.peers))
    assert await wait_for(lambda: not open_peer_connections(), timeout), open_peer_connections()
    assert await wait_for(lambda: not media_threads(), timeout), media_threads()


ROUTES_CYCLE = ["/webrtc/offer", "/webrtc/offer", "/telephone/incoming", "/webrtc/offer", "/webrtc/offer", "/input_hook", "/telephone/incoming", "/webrtc/offer"]


def socket_count() -> int:
    """Sockets this process has open (Linux)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return count


async def an_offer(**peer_options: Any) -> str:
    """A real browser-like offer SDP (from an aiortc peer that is closed again)."""
    peer = ClientPeer("http://unused", audio=load_clip(HELLO, 48000), **peer_options)
    sdp = await peer.offer_sdp()
    await peer.close()
    return sdp


# -- page, assets, config ---------------------------------------------------------------------
async def test_page_assets_and_config() -> None:
    async def credentials() -> dict[str, Any]:
        return {"iceServers": [{"url": "stun:stun.example.org:3478?transport=udp"}, {"urls": ["turn:t.example.org:53?transport=udp", "turn:t.example.org:3478"], "username": "u", "credential": "c"}]}

    stream = make_stream(
        rtc_configuration=credentials,
        additional_inputs=[Slider(minimum=0, maximum=1, value=0.5, step=0.05, label="Threshold"), Textbox(label="Name", value="x")],
        track_constraints={"audio": {"echoCancellation": True}},
        rtp_params={"degradationPreference": "maintain-resolution"},
        time_limit=90,
        ui_args={"title": "Echo"},
    )
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            page = await client.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert 'src="static/app.js"' in page.text and 'href="static/app.css"' in page.text  # relative: works under any prefix
            script = await client.get("/static/app.js")
            assert script.status_code == 200 and "javascript" in script.headers["content-type"] and "RTCPeerConnection" in script.text
            assert (await client.get("/static/app.css")).status_code == 200
            missing = await client.get("/static/secrets.py")
            assert missing.status_code == 404 and missing.json() == {"status": "failed", "meta": {"error": "not_found"}}
            config = (await client.get("/config")).json()
    assert config["modality"] == "audio" and config["mode"] == "send-receive"
    assert config["rtc_configuration"] == {
        "iceServers": [{"urls": ["stun:stun.example.org:3478?transport=udp"]}, {"urls": ["turn:t.example.org:3478"], "username": "u", "credential": "c"}]
    }
    assert config["additional_inputs"] == [
        {"type": "slider", "minimum": 0, "maximum": 1, "value": 0.5, "step": 0.05, "label": "Threshold"},
        {"type": "textbox", "value": "x", "label": "Name", "placeholder": None, "lines": 1},
    ]
    assert config["track_constraints"] == {"audio": {"echoCancellation": True}}
    assert config["rtp_params"] == {"degradationPreference": "maintain-resolution"}
    assert config["time_limit"] == 90 and config["ui_args"] == {"title": "Echo"}


async def test_a_failing_configuration_callable_gives_json_not_a_traceback() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("provider down")

    stream = make_stream(rtc_configuration=broken)
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            reply = await client.get("/config")
    assert reply.status_code == 500
    assert reply.json()["meta"]["error"] == "internal_error"
    assert "Traceback" not in reply.text and "provider down" not in reply.text


# -- bad input ------------------------------------------------------------------------------
async def test_bad_offer_bodies_get_clear_errors() -> None:
    stream = make_stream()
    sdp = await an_offer()
    video_sdp = await an_offer(video=True)
    no_ice = "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(("a=ice-ufrag", "a=ice-pwd"))) 
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:

            async def post(body: Any, **kwargs: Any) -> httpx.Response:
                if isinstance(body, (bytes, str)):
                    return await client.post("/webrtc/offer", content=body, headers={"content-type": "application/json"}, **kwargs)
                return await client.post("/webrtc/offer", json=body, **kwargs)

            cases = [
                (b"{not json", 422, "invalid_json"),
                ({"sdp": sdp, "type": "offer"}, 422, "invalid_body"),  # no webrtc_id, like FastRTC
                ({"sdp": sdp, "type": "offer", "webrtc_id": 5}, 422, "invalid_body"),
                ({"sdp": 3, "type": "offer", "webrtc_id": "a"}, 422, "invalid_body"),
                ({"sdp": sdp, "type": "answer", "webrtc_id": "a"}, 422, "invalid_body"),
                ({"sdp": sdp, "type": "offer", "webrtc_id": ""}, 422, "invalid_body"),
                ([1, 2, 3], 422, "invalid_body"),
                ({"type": "offer", "webrtc_id": "a"}, 200, "invalid_sdp"),
                ({"sdp": "hello", "type": "offer", "webrtc_id": "a"}, 200, "invalid_sdp"),
                ({"sdp": "v=0\r\nm=audio x\r\n", "type": "offer", "webrtc_id": "a"}, 200, "invalid_sdp"),
                ({"sdp": no_ice, "type": "offer", "webrtc_id": "a"}, 200, "invalid_sdp"),
                ({"sdp": video_sdp, "type": "offer", "webrtc_id": "a"}, 200, "unsupported_track"),
                ({"type": "ice-candidate", "webrtc_id": "a"}, 200, "invalid_candidate_format"),
                ({"type": "ice-candidate", "webrtc_id": "a", "candidate": {"candidate": 7}}, 422, "invalid_body"),
                ({"type": "ice-candidate", "webrtc_id": "nobody", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"}}, 200, "unknown_connection"),
            ]
            for body, status, error in cases:
                reply = await post(body)
                assert (reply.status_code, reply.json()["status"], reply.json()["meta"]["error"]) == (status, "failed", error), (body, reply.text)
                assert "Traceback" not in reply.text

            oversized = await post({"sdp": "x" * 100_000, "type": "offer", "webrtc_id": "big"})
            assert oversized.status_code == 413 and oversized.json()["meta"] == {"error": "body_too_large", "limit": 65536}

            async def chunks() -> AsyncIterator[bytes]:  # no content-length: the limit holds while streaming
                yield b'{"sdp": "'
                for _ in range(100):
                    yield b"x" * 1000

            streamed = await client.post("/webrtc/offer", content=chunks(), headers={"content-type": "application/json"})
            assert streamed.status_code == 413

            # The server is fine afterwards: a real peer connects and gets its echo.
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            assert (await peer.connect(client))["type"] == "answer"
            await peer.wait_connected()
            assert await wait_for(lambda: envelope(peer.received_audio()).max(initial=0) > 500, 10)
            await peer.close()
        await assert_all_closed(stream)


async def test_input_hook() -> None:
    stream = make_stream()
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            await peer.connect(client)
            await peer.wait_connected()

            def latest() -> list[Any]:
                return server.call(lambda: stream.hub.session(peer.webrtc_id).latest_args)

            reply = await client.post("/input_hook", json={"webrtc_id": peer.webrtc_id, "args": [0.25, "voice", [1, 2]]})
            assert reply.status_code == 200 and reply.json() == {"status": "success"}
            assert latest() == [0.25, "voice", [1, 2]]
            # Named values are passed in the order they appear in the body.
            await client.post("/input_hook", json={"webrtc_id": peer.webrtc_id, "threshold": 0.75, "name": "x"})
            assert latest() == [0.75, "x"]

            unknown = await client.post("/input_hook", json={"webrtc_id": "nobody", "args": [1]})
            assert unknown.status_code == 404 and unknown.json() == {"status": "failed", "meta": {"error": "unknown_connection"}}
            for body in ({"args": [1]}, {"webrtc_id": 3}, {"webrtc_id": peer.webrtc_id, "args": 1}, {"webrtc_id": peer.webrtc_id, "args": [1], "x": 2}):
                bad = await client.post("/input_hook", json=body)
                assert bad.status_code == 422 and bad.json()["meta"]["error"] == "invalid_body", body
            garbage = await client.post("/input_hook", content=b"\xff\xfe", headers={"content-type": "application/json"})
            assert garbage.status_code == 422 and garbage.json()["meta"]["error"] == "invalid_json"
            too_big = await client.post("/input_hook", json={"webrtc_id": peer.webrtc_id, "args": ["x" * 70_000]})
            assert too_big.status_code == 413
            await peer.close()
        await assert_all_closed(stream)


async def test_outputs_event_stream() -> None:
    @operator
    async def report(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        count = 0
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    count += 1
                    if count % 25 == 0:
                        yield AdditionalOutputs(f"second {count // 50}", np.float32(count / 50), np.arange(3))
                yield item

    stream = make_stream(Graph(audio=decode() | report()), mode="send")
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            missing = await client.get("/outputs")
            assert missing.status_code == 422 and missing.json()["meta"]["error"] == "invalid_query"
            unknown = await client.get("/outputs", params={"webrtc_id": "nobody"})
            assert unknown.status_code == 404 and unknown.json()["meta"]["error"] == "unknown_connection"

            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000), send_only=True)
            await peer.connect(client)
            await peer.wait_connected()
            events: list[tuple[str, Any]] = []
            async with client.stream("GET", "/outputs", params={"webrtc_id": peer.webrtc_id}) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                kind = "message"
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.append((kind, json.loads(line[6:])))
                        if kind == "end":
                            break
                        if len(events) == 3:
                            await peer.close()  # the session ends, and so does the stream
    outputs = [data for kind, data in events if kind == "output"]
    assert outputs[0] == ["second 0", 0.5, [0, 1, 2]]
    assert len(outputs) >= 3 and events[-1] == ("end", {})
    await assert_all_closed(stream)


# -- mounting ------------------------------------------------------------------------------
async def exercise(base_url: str, prefix: str, stream: Stream) -> None:
    """Page, config and a real echo session under ``prefix``."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        page = await client.get(f"{prefix}/")
        assert page.status_code == 200 and "static/app.js" in page.text
        assert (await client.get(f"{prefix}/static/app.js")).status_code == 200
        assert (await client.get(f"{prefix}/config")).json()["modality"] == "audio"
        peer = ClientPeer(f"{base_url}{prefix}", audio=load_clip(HELLO, 48000))
        assert (await peer.connect(client))["type"] == "answer"
        await peer.wait_connected()
        assert await wait_for(lambda: envelope(peer.received_audio()).max(initial=0) > 500, 10)
        await peer.close()
    await assert_all_closed(stream)


async def test_mounted_in_a_litestar_app() -> None:
    @get("/hello")
    async def hello() -> str:
        return "hi"

    stream = make_stream()
    app = Litestar(route_handlers=[hello])
    stream.mount(app, path="/rtc")
    with running_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/hello")).text == "hi"
            redirect = await client.get("/rtc")
            assert redirect.status_code == 307 and redirect.headers["location"] == "rtc/"
        await exercise(server.url, "/rtc", stream)


async def test_routes_in_a_litestar_app_at_the_root() -> None:
    stream = make_stream()
    app = Litestar(route_handlers=stream.routes(), on_shutdown=[webrtc_transport(stream).aclose])
    with running_server(app) as server:
        await exercise(server.url, "", stream)


@pytest.mark.parametrize("framework", ["fastapi", "starlette"])
async def test_mounted_in_fastapi_and_starlette(framework: str) -> None:
    stream = make_stream()
    if framework == "fastapi":
        app: Any = FastAPI()

        @app.get("/hello")
        async def hello() -> dict[str, str]:
            return {"hello": "world"}

    else:
        app = Starlette(routes=[Route("/hello", lambda request: PlainTextResponse("world"))])
    stream.mount(app, "/rtc")
    with running_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert "world" in (await client.get("/hello")).text
            redirected = await client.get("/rtc", follow_redirects=True)
            assert redirected.status_code == 200 and "static/app.js" in redirected.text
        await exercise(server.url, "/rtc", stream)
        # A live peer when the host app shuts down: its lifespan closes the stream's peers.
        async with httpx.AsyncClient(base_url=server.url) as client:
            peer = ClientPeer(f"{server.url}/rtc", audio=load_clip(HELLO, 48000))
            await peer.connect(client)
            await peer.wait_connected()
    assert await wait_for(lambda: len(stream.hub) == 0, 5)
    await peer.close()
    await assert_all_closed(stream)


async def test_fastapi_mount_at_the_root_like_fastrtc() -> None:
    stream = make_stream()
    app = FastAPI()

    @app.get("/mine")
    async def mine() -> dict[str, str]:
        return {"route": "mine"}

    stream.mount(app)  # path="" as FastRTC's default: the app's own routes win

    # FastRTC's documented pattern: mount first, then add your own input hook.
    @app.post("/input_hook")
    async def my_input_hook(body: dict[str, Any]) -> dict[str, str]:
        return {"route": "my input hook", "webrtc_id": body["webrtc_id"]}

    with running_server(app) as server:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/mine")).json() == {"route": "mine"}
            hook = await client.post("/input_hook", json={"webrtc_id": "abc", "value": 1})
            assert hook.json() == {"route": "my input hook", "webrtc_id": "abc"}
            assert (await client.get("/config")).status_code == 200  # the stream's own route
            assert (await client.get("/not-a-route")).status_code == 404  # nothing else is claimed
        await exercise(server.url, "", stream)


async def test_app_under_any_asgi_router() -> None:
    stream = make_stream()
    app = Starlette(routes=[Mount("/voice", app=stream.app())])
    with running_server(app) as server:
        await exercise(server.url, "/voice", stream)


def test_mount_refuses_what_it_cannot_mount() -> None:
    stream = make_stream()
    with pytest.raises(ConfigurationError, match="Litestar, Starlette or FastAPI"):
        stream.mount(object())
    with pytest.raises(ConfigurationError, match="start with '/'"):
        stream.mount(Litestar(), path="rtc")


# -- a flood ------------------------------------------------------------------------------
async def test_flood_of_offers_and_garbage_leaves_nothing_behind() -> None:
    stream = make_stream(concurrency_limit=4)
    sdp = await an_offer()
    with running_server(stream.app(webrtc=WebRTCOptions(connect_timeout_s=1.5))) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=200)) as client:
            good = ClientPeer(server.url, audio=load_clip(HELLO, 48000), lead_silence_s=2.0)
            await good.connect(client)
            await good.wait_connected()

            async def offer(index: int) -> dict[str, Any]:
                return (await client.post("/webrtc/offer", json={"sdp": sdp, "type": "offer", "webrtc_id": f"flood-{index}"})).json()

            async def garbage(index: int) -> int:
                body = [b"{", b"[]", json.dumps({"webrtc_id": index}).encode(), b"x" * 70_000][index % 4]
                return (await client.post("/webrtc/offer", content=body, headers={"content-type": "application/json"})).status_code

            answers = await asyncio.gather(*(offer(i) for i in range(60)))
            statuses = await asyncio.gather(*(garbage(i) for i in range(60)))
            accepted = [a for a in answers if a.get("type") == "answer"]
            refused = [a for a in answers if a.get("status") == "failed"]
            assert len(accepted) == 3 and len(refused) == 57
            assert {r["meta"]["error"] for r in refused} == {"concurrency_limit_reached"}
            assert set(statuses) == {413, 422}
            # The connected session is untouched: its speech (after 2 s of silence) comes back.
            assert await wait_for(lambda: envelope(good.received_audio()).max(initial=0) > 500, 10)
            # The three accepted offers never connect; they are reaped.
            assert await wait_for(lambda: stream.hub.ids() == [good.webrtc_id], 5), stream.hub.ids()
            await good.close()
        await assert_all_closed(stream)
        assert server.task_count() <= server.baseline_tasks + 1, server.tasks()


async def test_fuzzed_bodies_get_json_errors_never_a_server_error() -> None:
    """300 seeded junk bodies on every JSON route (offer, candidate, input hook, Twilio's webhook,
    outputs): each is answered with flowrtc's JSON refusal or a normal answer, never a 5xx; a real
    peer connects afterwards."""
    rng = np.random.default_rng(20261129)
    stream = make_stream(additional_inputs=[Slider(minimum=0, maximum=1, value=0.5, label="x")])
    lines = (await an_offer()).split("\r\n")

    def mangled_sdp() -> str:
        """A real offer with lines dropped, repeated, cut short or with characters changed."""
        out = []
        for line in lines:
            roll = rng.random()
            if roll < 0.1:
                continue
            if roll < 0.15:
                out += [line, line]
            elif roll < 0.2:
                out.append(line[: int(rng.integers(0, len(line) + 1))])
            elif roll < 0.25 and line:
                at = int(rng.integers(0, len(line)))
                out.append(line[:at] + chr(int(rng.integers(33, 127))) + line[at + 1 :])
            else:
                out.append(line)
        return "\r\n".join(out)

    def body() -> Any:
        shape = int(rng.integers(0, 5))
        if shape == 0:
            return junk(rng)
        if shape == 4:
            return {"sdp": mangled_sdp(), "type": "offer", "webrtc_id": f"fuzz-{rng.integers(1 << 30)}"}
        if shape == 1:  # the right keys, junk values
            return {"sdp": junk(rng), "type": ["offer", "ice-candidate", junk(rng)][int(rng.integers(0, 3))], "webrtc_id": junk(rng), "candidate": junk(rng)}
        if shape == 2:
            return {"webrtc_id": junk(rng), "args": junk(rng), "inputs": junk(rng)}
        return rng.bytes(int(rng.integers(0, 400)))

    with running_server(stream.app(webrtc=WebRTCOptions(connect_timeout_s=1.5))) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            await client.get("/config")  # the client's connection is open before counting sockets
            sockets_before = socket_count()
            for index in range(300):
                # half offers (a mangled SDP reaches aiortc's parser), the rest hook and webhook
                route = ROUTES_CYCLE[index % len(ROUTES_CYCLE)]
                sent = body()
                if isinstance(sent, bytes):
                    reply = await client.post(route, content=sent, headers={"content-type": "application/json"})
                elif route == "/telephone/incoming" and index % 8 == 2:
                    form = {str(k)[:30]: str(v)[:100] for k, v in (sent.items() if isinstance(sent, dict) else [("Body", sent)])}
                    reply = await client.post(route, data=form)
                else:
                    reply = await client.post(route, json=sent)
                assert reply.status_code < 500, (route, sent, reply.status_code, reply.text[:300])
                assert "Traceback" not in reply.text
                if reply.status_code >= 400:
                    assert reply.json()["status"] == "failed" and reply.json()["meta"]["error"], (route, sent, reply.text[:300])
            outputs = await client.get("/outputs", params={"webrtc_id": "x" * 5000})
            assert outputs.status_code < 500
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            assert (await peer.connect(client))["type"] == "answer"
            await peer.wait_connected()
            await peer.close()
        # Nothing outlives the requests: no session or peer, no socket, and every peer connection
        # was closed (aiortc's own close() stops part-way on a few mangled offers; see webrtc.py).
        transport = webrtc_transport(stream)
        assert await wait_for(lambda: len(stream.hub) == 0 and not transport.peers, 8), (stream.hub.ids(), list(transport.peers))
        assert await wait_for(lambda: not [pc for pc in open_peer_connections() if pc.signalingState != "closed"], 8)
        assert await wait_for(lambda: socket_count() <= sockets_before, 8), (socket_count(), sockets_before)
        assert await wait_for(lambda: not media_threads(), 8), media_threads()


async def test_too_many_negotiating_peers_are_refused() -> None:
    stream = make_stream()
    sdp = await an_offer()
    with running_server(stream.app(webrtc=WebRTCOptions(connect_timeout_s=1.0, max_negotiating=5))) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            answers = [(await client.post("/webrtc/offer", json={"sdp": sdp, "type": "offer", "webrtc_id": f"n-{i}"})).json() for i in range(8)]
    assert sum(1 for a in answers if a.get("type") == "answer") == 5
    assert answers[-1] == {"status": "failed", "meta": {"error": "too_many_pending_connections", "limit": 5}}
    await assert_all_closed(stream)


def test_flowrtc_demo_serves_the_page() -> None:
    """`make demo` runs `flowrtc demo`: Stream.launch() with uvicorn, the page and its config."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "flowrtc.cli", "demo", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config").json()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read() if process.poll() is not None else "no answer"
                time.sleep(0.1)
        assert config["ui_args"] == {"title": "flowrtc echo"} and config["mode"] == "send-receive"
        assert "static/app.js" in httpx.get(f"http://127.0.0.1:{port}/").text
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in out
