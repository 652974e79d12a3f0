"""The ``flowrtc`` command: process, run and demo, against real files and a real server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from flowrtc.testing import load_audio

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "flowrtc.cli"]

APP = """
from flowrtc import ReplyOnPause, Stream

def echo(audio):
    yield audio

stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive", concurrency_limit=2)
"""


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture
def app_file(tmp_path: Path) -> Path:
    path = tmp_path / "app.py"
    path.write_text(APP)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_process_writes_the_reply_audio_and_the_event_timeline(app_file: Path, tmp_path: Path, media_dir: Path) -> None:
    clip = media_dir / "asterisk_demo-thanks_8k.wav"
    out, events = tmp_path / "reply.wav", tmp_path / "events.jsonl"
    result = _cli("process", str(app_file), str(clip), "-o", str(out), "--events", str(events))
    assert result.returncode == 0, result.stderr
    timeline = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [entry["type"] for entry in timeline]
    assert kinds.count("ReplyStarted") == 1 and kinds.count("SpeechStarted") == 1 and kinds.count("Interrupt") == 0
    logs = [entry["data"] for entry in timeline if entry["type"] == "Log"]
    assert logs[:3] == ["started_talking", "pause_detected", "response_starting"]
    pause = next(entry["t"] for entry in timeline if entry["type"] == "PauseDetected")
    assert 5.37 < pause < 5.37 + 0.6  # end of speech (ground truth) + at most our latency bound
    # The reply is the echo of the utterance: as long as the speech, placed after the pause.
    reply = load_audio(out)
    heard = reply.samples[0, round(pause * reply.sample_rate) :].astype(np.float64)
    speech = load_audio(clip)
    # Same energy per second of audio: the whole utterance came back once.
    heard_energy = np.abs(heard).sum() / reply.sample_rate
    speech_energy = np.abs(speech.samples[0].astype(np.float64)).sum() / speech.sample_rate
    assert abs(heard_energy / speech_energy - 1) < 0.15
    assert "events" in result.stdout


def test_process_names_what_is_wrong(app_file: Path, tmp_path: Path, media_dir: Path) -> None:
    clip = str(media_dir / "asterisk_hello-world_8k.wav")
    missing = _cli("process", str(tmp_path / "nope.py"), clip)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    attribute = _cli("process", f"{app_file}:nothing_here", clip)
    assert attribute.returncode == 2 and "no attribute 'nothing_here'" in attribute.stderr and "stream" in attribute.stderr
    unreadable = tmp_path / "noise.wav"
    unreadable.write_bytes(b"not audio at all" * 10)
    bad = _cli("process", str(app_file), str(unreadable))
    assert bad.returncode == 2 and "PyAV cannot read" in bad.stderr
    assert "Traceback" not in missing.stderr + attribute.stderr + bad.stderr


def _wait_for_http(url: str, process: subprocess.Popen[str], timeout_s: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read() if process.stdout else ''}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_server_commands_serve_the_page_and_the_offer_route(command: str, app_file: Path) -> None:
    port = _free_port()
    args = ["run", str(app_file)] if command == "run" else ["demo"]
    server = subprocess.Popen([*CLI, *args, "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        page = _wait_for_http(f"http://127.0.0.1:{port}/", server)
        assert page.status_code == 200 and "<html" in page.text.lower()
        # A malformed offer gets FastRTC's failure shape, not a 500.
        answer = httpx.post(f"http://127.0.0.1:{port}/webrtc/offer", json={"type": "offer", "webrtc_id": "x", "sdp": "nonsense"}, timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "failed"
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in output


def test_offline_demo_prints_the_echo_timeline() -> None:
    result = _cli("demo", "--offline")
    assert result.returncode == 0, result.stderr
    assert "echoed 1.40 s of audio" in result.stdout


def test_run_reload_uses_an_import_string_factory(app_file: Path) -> None:
    # --workers/--reload start uvicorn from FLOWRTC_APP; the factory must build the same app.
    env = {**os.environ, "FLOWRTC_APP": f"{app_file}:stream"}
    code = "from flowrtc.cli import app_factory; app = app_factory(); print(type(app).__name__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Litestar"
