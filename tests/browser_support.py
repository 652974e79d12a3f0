"""Headless Chromium with a fake microphone, driven over the DevTools protocol (a websocket).

Used by ``tests/test_browser.py`` and ``benchmarks/bench_browser.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import httpx
from websockets.asyncio.client import connect

CHROMIUM = next((path for path in (os.environ.get("CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium") if path and os.path.exists(path)), None)


class Chromium:
    """A headless Chromium and one page, over the DevTools protocol."""

    def __init__(self, process: subprocess.Popen[bytes], socket: Any) -> None:
        self.process = process
        self.socket = socket
        self._ids = itertools.count(1)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait(self, expression: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            await asyncio.sleep(0.1)


async def _until(ready: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := ready()):
        if time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)
    return value


@asynccontextmanager
async def launch_chromium(fake_audio: Path) -> AsyncIterator[Chromium]:
    """A headless Chromium whose microphone plays ``fake_audio`` (a WAV file, looped), with one blank page."""
    assert CHROMIUM is not None, "chromium is not installed (CI installs it, see .ci/run)"
    profile = tempfile.mkdtemp(prefix="flowrtc-chromium-")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    process = subprocess.Popen([CHROMIUM, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        assert await _until(lambda: port_file.exists() and port_file.read_text().strip(), 20), "chromium did not start its DevTools endpoint"
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(target for target in targets if target["type"] == "page")
        async with connect(page["webSocketDebuggerUrl"], max_size=None) as socket:
            chromium = Chromium(process, socket)
            await chromium.send("Runtime.enable")
            yield chromium
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        shutil.rmtree(profile, ignore_errors=True)
