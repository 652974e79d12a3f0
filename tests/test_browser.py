"""The built-in page in a real browser: headless Chromium with a fake microphone playing speech.

Chromium is driven over the Chrome DevTools Protocol (a websocket). The page
connects to a real uvicorn server by WebRTC; the test checks on the server
that the session was a WebRTC one and that the page's audio arrived (the graph
measures it), and in the page (``window.flowrtc``, read with
``Runtime.evaluate``) that reply audio and the graph's log messages came back.

Runs wherever Chromium is installed; skipped only when it is absent and the
``CI`` environment variable is not set (CI installs it, see .ci/run).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import httpx
import numpy as np
import pytest

from flowrtc import AudioChunk, Graph, Log, decode, encode, operator, resample
from flowrtc.adapters.webrtc import webrtc_transport
from flowrtc.operators.core import scoped
from flowrtc.stream import Stream
from flowrtc.testing import save_audio
from browser_support import CHROMIUM, Chromium, launch_chromium
from conftest import HELLO, load_clip
from rtc_support import running_server, wait_for

pytestmark = pytest.mark.anyio

if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("chromium is not installed (CI installs it and never skips)", allow_module_level=True)


@pytest.fixture
def speech_wav() -> Iterator[Path]:
    """The recorded utterance, as the fake microphone's input (48 kHz mono; Chromium loops it)."""
    with tempfile.TemporaryDirectory() as folder:
        clip = load_clip(HELLO, 48000)
        pause = AudioChunk(np.zeros((1, 48000), np.int16), 48000)  # 1 s: long enough to end a turn
        path = Path(folder) / "speech.wav"
        save_audio(path, AudioChunk.concat([clip, pause]))
        yield path


@pytest.fixture
async def browser(speech_wav: Path) -> AsyncIterator[Chromium]:
    assert CHROMIUM is not None, "chromium is required in CI (.ci/run installs it)"
    async with launch_chromium(speech_wav) as chromium:
        yield chromium


def listening_graph(heard: dict[str, float]) -> Graph:
    """Echo the page's audio back and say, on the data channel, when speech arrived."""

    @operator
    async def measure(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        told = False
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    rms = float(np.sqrt(np.mean(item.to_float32().samples ** 2)))
                    heard["frames"] = heard.get("frames", 0) + 1
                    heard["max_rms"] = max(heard.get("max_rms", 0.0), rms)
                    if rms > 0.02 and not told:
                        told = True
                        yield Log(data="server heard speech")
                yield item

    return Graph(audio=decode() | resample(48000, layout="mono") | measure() | encode(sample_rate=48000))


async def test_the_built_in_page_talks_to_the_server(browser: Chromium) -> None:
    heard: dict[str, float] = {}
    stream = Stream(listening_graph(heard), modality="audio", mode="send-receive", rtc_configuration={"iceServers": []}, server_rtc_configuration={"iceServers": []})
    with running_server(stream.app()) as server:
        await browser.send("Page.navigate", url=f"{server.url}/")
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15), await browser.evaluate("document.body.innerText")
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected'", 15), await browser.evaluate("JSON.stringify(window.flowrtc)")
        webrtc_id = await browser.evaluate("window.flowrtc.webrtcId")
        assert stream.hub.transport(webrtc_id) == "webrtc"

        # The page's microphone reached the graph, and the graph's log reached the page.
        assert await wait_for(lambda: heard.get("max_rms", 0) > 0.05, 10), heard
        assert await browser.wait("window.flowrtc.logs.some(entry => entry.text === 'server heard speech')", 10), await browser.evaluate("JSON.stringify(window.flowrtc.logs)")
        assert await browser.wait("window.flowrtc.logs.some(entry => entry.text === 'Server received: handshake')", 5)
        # The reply audio plays in the page (WebAudio level) and its packets are counted.
        assert await browser.wait("window.flowrtc.maxReplyRms > 0.02 && window.flowrtc.stats.packetsReceived > 50", 10), await browser.evaluate(
            "JSON.stringify({rms: window.flowrtc.maxReplyRms, stats: window.flowrtc.stats})"
        )
        # The server played echo frames (not just silence) on the page's connection.
        assert await wait_for(lambda: webrtc_transport(stream).statistics()[webrtc_id]["audio_played"] > 50, 5)
        assert webrtc_transport(stream).statistics()[webrtc_id]["state"] == "connected"
        assert await browser.wait("window.flowrtc.stats.packetsSent > 50", 5)
        assert await browser.evaluate("window.flowrtc.errors.length") == 0

        # Stop: the page closes its connection and the server lets the session go.
        await browser.evaluate("document.getElementById('stop').click()")
        assert await browser.wait("window.flowrtc.status === 'closed'", 5)
        assert await wait_for(lambda: len(stream.hub) == 0 and not webrtc_transport(stream).peers, 10), stream.hub.ids()


async def test_the_built_in_page_talks_over_the_websocket_route(browser: Chromium) -> None:
    """The page's WebSocket mode: a browser's microphone as PCM16 at its own rate, the reply
    played on its AudioContext, and the server's `clear` obeyed when the user talks over it."""
    from flowrtc import ReplyOnPause

    def echo(audio: tuple[int, np.ndarray]) -> Any:
        yield audio

    stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")
    with running_server(stream.app()) as server:
        await browser.send("Page.navigate", url=f"{server.url}/?transport=websocket")
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
        assert await browser.evaluate("document.getElementById('transport').value") == "websocket"
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected'", 15), await browser.evaluate("JSON.stringify(window.flowrtc)")
        websocket_id = await browser.evaluate("window.flowrtc.webrtcId")
        assert stream.hub.transport(websocket_id) == "websocket"
        # The server adapted to the browser's rate (no resampling in the page).
        rate = await browser.evaluate("window.flowrtc.outputRate")
        assert 8000 <= rate <= 96000 and rate == await browser.evaluate("new AudioContext().sampleRate"), rate
        # ReplyOnPause heard a turn, answered it, and the echo played in the page.
        for log in ("started_talking", "pause_detected", "response_starting"):
            assert await browser.wait(f"window.flowrtc.logs.some(entry => entry.text === '{log}')", 20), await browser.evaluate("JSON.stringify(window.flowrtc)")
        stats = await browser.evaluate("window.flowrtc.stats")  # one read: the counters keep moving
        assert stats["captured"] >= stats["packetsSent"] > 25, stats
        assert await browser.wait("window.flowrtc.maxReplyRms > 0.02 && window.flowrtc.stats.packetsReceived > 25", 10), await browser.evaluate(
            "JSON.stringify({rms: window.flowrtc.maxReplyRms, stats: window.flowrtc.stats})"
        )
        # The fake microphone loops "hello world" with 1 s of silence: the next "hello" starts
        # while the 1.6 s echo still plays, and the server tells the page to drop the rest.
        assert await browser.wait("window.flowrtc.clears > 0", 20), await browser.evaluate("JSON.stringify(window.flowrtc.logs)")
        # The page timed its answers: end of speech to the first reply frame, never sooner
        # than the pause that ends a turn (448 ms).
        answers = await browser.evaluate("window.flowrtc.answerMs")
        assert answers and all(400 < ms < 3000 for ms in answers), await browser.evaluate("JSON.stringify(window.flowrtc)")
        assert await browser.evaluate("window.flowrtc.errors.length") == 0, await browser.evaluate("JSON.stringify(window.flowrtc.errors)")
        await browser.evaluate("document.getElementById('stop').click()")
        assert await browser.wait("window.flowrtc.status === 'closed'", 5)
        assert await wait_for(lambda: len(stream.hub) == 0, 10), stream.hub.ids()
        # Start again on the same page: a new session, the same microphone path.
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected' && window.flowrtc.stats.packetsSent > 10", 15), await browser.evaluate("JSON.stringify(window.flowrtc.errors)")
        assert await browser.evaluate("window.flowrtc.webrtcId") != websocket_id
        await browser.evaluate("document.getElementById('stop').click()")
        assert await wait_for(lambda: len(stream.hub) == 0, 10), stream.hub.ids()


async def test_over_websocket_the_page_ends_with_the_time_limit(browser: Chromium) -> None:
    stream = Stream(listening_graph({}), modality="audio", mode="send-receive", time_limit=2)
    with running_server(stream.app()) as server:
        await browser.send("Page.navigate", url=f"{server.url}/?transport=websocket")
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected'", 15)
        assert await browser.evaluate("document.getElementById('timer').textContent") in ("2 s left", "1 s left")
        # The server ends the session at 2 s (end_stream, then a normal close): the page stops, no error.
        assert await browser.wait("window.flowrtc.status === 'closed'", 10), await browser.evaluate("JSON.stringify(window.flowrtc.logs)")
        assert await browser.evaluate("window.flowrtc.logs.some(entry => entry.type === 'end_stream')")
        assert await browser.evaluate("window.flowrtc.errors") == []
        assert await wait_for(lambda: len(stream.hub) == 0, 10), stream.hub.ids()


async def test_over_websocket_the_page_shows_the_error_of_a_failing_graph(browser: Chromium) -> None:
    @operator
    async def fail_on_speech(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk) and np.abs(item.to_float32().samples).max() > 0.05:
                    raise ValueError("the handler broke on purpose")
                yield item

    stream = Stream(Graph(audio=decode() | fail_on_speech() | encode()), modality="audio", mode="send-receive")
    with running_server(stream.app()) as server:
        await browser.send("Page.navigate", url=f"{server.url}/?transport=websocket")
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'failed'", 15), await browser.evaluate("JSON.stringify(window.flowrtc)")
        errors = await browser.evaluate("window.flowrtc.errors")
        assert any("the handler broke on purpose" in error for error in errors), errors
        assert await wait_for(lambda: len(stream.hub) == 0, 10), stream.hub.ids()


@pytest.mark.parametrize("transport", ["webrtc", "websocket"])
async def test_the_page_shows_a_refusal(browser: Chromium, transport: str) -> None:
    stream = Stream(listening_graph({}), modality="audio", concurrency_limit=1, rtc_configuration={"iceServers": []}, server_rtc_configuration={"iceServers": []})
    with running_server(stream.app()) as server:
        async with stream.session("someone-else", transport="webrtc"):  # takes the only slot
            await browser.send("Page.navigate", url=f"{server.url}/?transport={transport}")
            assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
            await browser.evaluate("document.getElementById('start').click()")
            assert await browser.wait("window.flowrtc.status === 'failed'", 15)
            errors = await browser.evaluate("window.flowrtc.errors")
            assert errors and "Too many concurrent connections (limit 1)" in errors[0]
            assert "Too many concurrent connections" in await browser.evaluate("document.getElementById('error').textContent")


async def test_the_page_renders_inputs_and_shows_outputs(browser: Chromium) -> None:
    from flowrtc import AdditionalOutputs
    from flowrtc.inputs import Slider, Textbox
    from flowrtc.session import current_session

    @operator
    async def report_inputs(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        count = 0
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk):
                    count += 1
                    session = current_session()
                    if count % 10 == 0 and session is not None and session.latest_args:
                        yield AdditionalOutputs(*session.latest_args)

    stream = Stream(
        Graph(audio=decode() | report_inputs()),
        modality="audio",
        mode="send",
        additional_inputs=[Slider(minimum=0, maximum=10, value=3, step=1, label="Gain"), Textbox(label="Name", value="ada")],
        rtc_configuration={"iceServers": []},
        server_rtc_configuration={"iceServers": []},
    )
    with running_server(stream.app()) as server:
        await browser.send("Page.navigate", url=f"{server.url}/")
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
        assert await browser.evaluate("document.querySelectorAll('#inputs input').length") == 2
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected'", 15)
        # The page sent the inputs' values on connecting; the graph reports them back as outputs.
        assert await browser.wait("window.flowrtc.outputs.some(args => args[0] === 3 && args[1] === 'ada')", 10), await browser.evaluate("JSON.stringify(window.flowrtc.outputs)")
        await browser.evaluate(
            "(() => { const box = document.querySelector('#inputs input[type=text]'); box.value = 'grace'; box.dispatchEvent(new Event('change')); })()"
        )
        assert await browser.wait("window.flowrtc.outputs.some(args => args[1] === 'grace')", 10)
        assert "grace" in await browser.evaluate("document.getElementById('outputs').textContent")
        await browser.evaluate("document.getElementById('stop').click()")
        assert await wait_for(lambda: len(stream.hub) == 0, 10)


async def test_the_demo_that_make_demo_serves_answers_a_browser(browser: Chromium) -> None:
    """`make demo` runs `flowrtc demo`: the page loads, the user speaks, pauses, and hears the echo."""
    import socket
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    server = subprocess.Popen([sys.executable, "-m", "flowrtc.cli", "demo", "--port", str(port)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        async with httpx.AsyncClient() as client:

            async def answers() -> bool:
                try:
                    return (await client.get(url)).status_code == 200
                except httpx.TransportError:
                    return False

            deadline = time.monotonic() + 30
            while not await answers():
                assert server.poll() is None and time.monotonic() < deadline, "the demo server did not start"
                await asyncio.sleep(0.2)
        await browser.send("Page.navigate", url=url)
        assert await browser.wait("window.flowrtc && window.flowrtc.status === 'ready'", 15)
        await browser.evaluate("document.getElementById('start').click()")
        assert await browser.wait("window.flowrtc.status === 'connected'", 15), await browser.evaluate("JSON.stringify(window.flowrtc)")
        # ReplyOnPause's turn events reach the page, then the echo plays and its length is shown.
        for log in ("started_talking", "pause_detected", "response_starting"):
            assert await browser.wait(f"window.flowrtc.logs.some(entry => entry.text === '{log}')", 20), await browser.evaluate("JSON.stringify(window.flowrtc.logs)")
        assert await browser.wait("window.flowrtc.maxReplyRms > 0.02", 10)
        assert await browser.wait("document.body.innerText.includes('you spoke for')", 10), await browser.evaluate("document.body.innerText")
        # Over WebRTC too the page times its answers, from the levels it hears: end of speech
        # to the first reply audio, never sooner than the pause that ends a turn (448 ms).
        assert await browser.wait("window.flowrtc.answerMs.length > 0", 10), await browser.evaluate("JSON.stringify(window.flowrtc)")
        answers, shown = await browser.evaluate("[window.flowrtc.answerMs, document.getElementById('stat-answer').textContent]")
        assert all(400 < ms < 3000 for ms in answers), answers
        assert shown == f"{round(answers[-1])} ms"
        # ... and shows how long Chromium holds the reply audio before playing it (getStats).
        assert await browser.wait("window.flowrtc.stats.jitterBufferMs > 0", 5), await browser.evaluate("JSON.stringify(window.flowrtc.stats)")
        assert (await browser.evaluate("document.getElementById('stat-jitter').textContent")).endswith(" ms")
        assert await browser.evaluate("window.flowrtc.errors.length") == 0
    finally:
        server.terminate()
        server.communicate(timeout=20)
