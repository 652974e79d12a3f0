"""Every file in examples/ works as its docstring says.

For each example, whoever wrote it:

* its docstring says how to run it (``python examples/x.py`` or ``flowrtc run examples/x.py``);
* importing it starts nothing (no server, no event loop left running): a subprocess imports it
  and must finish;
* it is exercised: its graph or stream is driven through ``flowrtc.testing.run``, or, for the
  server examples, it is started the way its docstring says, on 127.0.0.1, and a real client
  talks to it (httpx for HTTP, ``websockets`` for the WebSocket and Twilio Media Streams
  routes, playing a recording and checking the audio that comes back);
* every ``Stream`` it defines serves its ``/config``.

A new example without an entry in ``EXERCISES`` fails ``test_every_example_is_exercised``.
"""

from __future__ import annotations

import ast
import base64
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import types
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import anyio
import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from flowrtc import AdditionalOutputs, AudioChunk, CloseStream, Interrupt, PendingUtterance, ReplyStarted, SpeechResumed, Stream, Transcript, VideoFrame
from flowrtc.g711 import mulaw_to_pcm16
from flowrtc.loader import load_object
from flowrtc.testing import Recording, audio_frames, load_audio, run, save_audio

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
NAMES = sorted(path.stem for path in EXAMPLES.glob("*.py"))
HELLO = ROOT / "tests" / "media" / "asterisk_hello-world_8k.wav"  # "Hello world!", 1.40 s at 8 kHz
PYTHON = sys.executable
_SCRIPT = Path(PYTHON).with_name("flowrtc")
FLOWRTC = (str(_SCRIPT),) if _SCRIPT.exists() else (PYTHON, "-m", "flowrtc.cli")  # the `flowrtc` command


# ------------------------------------------------------------------------------------ helpers
_loaded: dict[str, types.ModuleType] = {}


def load(name: str) -> types.ModuleType:
    """Import ``examples/<name>.py`` once per test run (registered in sys.modules: Litestar needs that)."""
    if name not in _loaded:
        module_name = f"flowrtc_example_{name}"
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        _loaded[name] = module
    return _loaded[name]


def docstring(name: str) -> str:
    return ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text())) or ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(*command: str, port: int, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Run a server command (from the repository root) until it accepts connections on ``port``.

    Yields a function returning what the server printed so far. The server is
    stopped (by its pid) when the block ends.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("TWILIO_")}
    log = tmp_path / f"server-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    printed = lambda: log.read_text()  # noqa: E731
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, f"{' '.join(command)} exited:\n{printed()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"{' '.join(command)} did not listen on {port}:\n{printed()}"
                time.sleep(0.1)
        yield printed
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def speech_then_silence(silence_s: float = 1.2) -> AudioChunk:
    """'Hello world!' at 8 kHz and enough silence for the pause to be detected."""
    hello = load_audio(HELLO)
    return AudioChunk.concat([hello, AudioChunk.silence(silence_s, 8000)])


def mulaw_payloads(audio: AudioChunk) -> list[str]:
    return [base64.b64encode(frame.to_mulaw()).decode() for frame in audio_frames(audio)]


def pcm(payloads: list[str]) -> np.ndarray:
    """Decoded int16 samples of base64 µ-law payloads."""
    return mulaw_to_pcm16(np.frombuffer(b"".join(base64.b64decode(p) for p in payloads), np.uint8))


# --------------------------------------------------------------------------- every example
def test_every_example_is_exercised() -> None:
    assert NAMES, "examples/ is empty"
    assert set(NAMES) == set(EXERCISES), "add an exercise to EXERCISES for each new example (and drop removed ones)"


@pytest.mark.parametrize("name", NAMES)
def test_docstring_says_how_to_run_it(name: str) -> None:
    text = docstring(name)
    assert text, f"examples/{name}.py needs a module docstring saying what it shows and how to run it"
    assert f"python examples/{name}.py" in text or f"flowrtc run examples/{name}.py" in text


@pytest.mark.parametrize("name", NAMES)
def test_importing_starts_nothing(name: str) -> None:
    """An example imported by a tool (``flowrtc run``, pytest, this file) must not serve or block."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('imported_example', {str(EXAMPLES / f'{name}.py')!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "sys.modules['imported_example'] = module\n"
        "spec.loader.exec_module(module)\n"
        "print('imported')\n"
    )
    try:
        result = subprocess.run([PYTHON, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"importing examples/{name}.py did not return: guard serving with `if __name__ == \"__main__\":`")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("imported"), result.stdout
    assert "serving" not in result.stdout


@pytest.mark.parametrize("name", NAMES)
def test_flowrtc_run_finds_what_to_serve(name: str) -> None:
    """``flowrtc run examples/x.py`` (when the docstring offers it) loads a Stream or an ASGI app."""
    if f"flowrtc run examples/{name}.py" not in docstring(name):
        pytest.skip("the docstring does not offer `flowrtc run`")
    target = load_object(str(EXAMPLES / f"{name}.py"))
    assert isinstance(target, Stream) or callable(target)


@pytest.mark.parametrize("name", NAMES)
def test_streams_serve_their_config(name: str) -> None:
    """Every Stream an example defines builds its app and answers ``GET /config``."""
    streams = {attr: value for attr, value in vars(load(name)).items() if isinstance(value, Stream)}
    if not streams:
        pytest.skip("defines no Stream")

    async def check() -> None:
        for attr, stream in streams.items():
            transport = httpx.ASGITransport(app=stream.app())
            async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
                response = await client.get("/config")
                assert response.status_code == 200, attr
                assert response.json()["modality"] == stream.modality

    anyio.run(check)


@pytest.mark.parametrize("name", NAMES)
def test_example(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    EXERCISES[name](tmp_path, capsys)


# ------------------------------------------------------------------ exercises, one per example
def exercise_echo_reply_on_pause(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("echo_reply_on_pause")
    recording = module.main([str(HELLO), "--out", str(tmp_path / "echo.wav")])
    assert recording.log() == ["started_talking", "pause_detected", "response_starting"]
    (said,) = [o.args[0] for o in recording.of_type(AdditionalOutputs)]
    assert said == "you spoke for 1.5 s"
    echoed = sum(chunk.duration_s for chunk in recording.audio_chunks)
    assert echoed == pytest.approx(1.52, abs=0.05)
    assert load_audio(tmp_path / "echo.wav").duration_s == pytest.approx(recording.audio.duration_s, abs=0.001)
    # speech_pad_ms around the speech: from 0.024 s to 0.2 s after the pause began at 1.344 s,
    # where the sound of "world" died away: 1.52 s
    assert "echoed 1.52 s of audio at 24000 Hz" in capsys.readouterr().out
    # As a script, with the packaged recording.
    result = subprocess.run([PYTHON, "-W", "error", "examples/echo_reply_on_pause.py"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "response_starting" in result.stdout


def exercise_llm_voice_chat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("llm_voice_chat")
    # Two turns, in real time (as main plays them), with room for the first answer (4.2 s) to play.
    hello = load_audio(HELLO, sample_rate=16000)
    talk = save_audio(tmp_path / "talk.wav", AudioChunk.concat([hello, AudioChunk.silence(5.0, 16000), hello]))
    recording = module.main([str(talk)])
    history = recording.of_type(AdditionalOutputs)[-1].args[0]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert normalized(history[0]["content"]) == normalized(history[2]["content"]) == "hello world"
    assert history[1]["content"] == f"You said: {history[0]['content'].rstrip('.!')}. That was turn 1 of our chat."
    assert history[3]["content"].endswith("That was turn 2 of our chat.")  # the LLM got the history
    assert not recording.of_type(Interrupt)
    assert sum(chunk.duration_s for chunk in recording.audio_chunks) > 5.0  # two spoken answers
    assert "assistant: You said: Hello world" in capsys.readouterr().out

    # The LLM is pluggable: any (history, text) -> str; each connection has its own history.
    calls: list[tuple[list[dict[str, str]], str]] = []

    def scripted_llm(history: list[dict[str, str]], text: str) -> str:
        calls.append((history, text))
        return "Fine, thank you."

    chat = module.voice_chat(scripted_llm)
    first = run(chat.graph(), audio=hello, trailing_silence_s=1.5)
    run(chat.graph(), audio=hello, trailing_silence_s=1.5)  # another connection: a new history
    assert [(len(history), normalized(text)) for history, text in calls] == [(0, "hello world"), (0, "hello world")]
    (shown,) = first.of_type(AdditionalOutputs)
    assert shown.args[0][1] == {"role": "assistant", "content": "Fine, thank you."}
    # What was spoken is what the LLM answered (heard by the same STT model).
    spoken = AudioChunk.concat([chunk.to_int16() for chunk in first.audio_chunks])
    assert normalized(module.stt_model.stt(spoken.to_tuple())) == "fine thank you"

    # A pause inside a turn (0.37 s from the end of "world" to "hello", past early_pause_ms,
    # short of the 448 ms that ends a turn) starts respond early; the speaker goes
    # on, that call is closed at its first yield, and the turn is saved once, whole.
    calls.clear()
    chat = module.voice_chat(scripted_llm)
    gap = run(chat.graph(), audio=AudioChunk.concat([hello, AudioChunk.silence(0.25, 16000), hello]), trailing_silence_s=1.5, realtime=True)
    assert gap.of_type(PendingUtterance) and gap.of_type(SpeechResumed)  # the early call, withdrawn
    assert len(gap.of_type(ReplyStarted)) == 1
    (shown,) = gap.of_type(AdditionalOutputs)
    assert [m["role"] for m in shown.args[0]] == ["user", "assistant"]
    assert normalized(shown.args[0][0]["content"]) == "hello world hello world"
    assert 1 <= len(calls) <= 2 and normalized(calls[-1][1]) == "hello world hello world"


def normalized(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def exercise_twilio_phone_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("twilio_phone_agent")
    port = free_port()
    command = (*FLOWRTC, "run", "examples/twilio_phone_agent.py", "--port", str(port))
    with serving(*command, port=port, tmp_path=tmp_path) as printed:
        base = f"127.0.0.1:{port}"

        async def call() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=f"http://{base}") as client:
                webhook = await client.post(
                    "/telephone/incoming", data={"CallSid": "CA0001", "From": "+15550001111", "To": "+15550002222"}
                )
            assert webhook.status_code == 200 and webhook.headers["content-type"].startswith("application/xml")
            twiml = ET.fromstring(webhook.text)
            stream_element = twiml.find("./Connect/Stream")
            assert stream_element is not None
            assert stream_element.get("url") == f"wss://{base}/telephone/handler"
            parameters = {p.get("name"): p.get("value") for p in stream_element.findall("Parameter")}
            assert parameters["From"] == "+15550001111" and parameters["CallSid"] == "CA0001"

            # Twilio would now open the Media Stream at that URL (wss behind your proxy; ws here).
            sid = "MZ0001"
            media: list[str] = []
            marks: list[str] = []
            async with connect(f"ws://{base}/telephone/handler") as ws:
                await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                start = {
                    "accountSid": "AC0001", "streamSid": sid, "callSid": "CA0001", "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": parameters,
                }
                await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid, "start": start}))
                for n, payload in enumerate(mulaw_payloads(speech_then_silence()), start=2):
                    media_message = {"track": "inbound", "chunk": str(n), "timestamp": str(20 * n), "payload": payload}
                    await ws.send(json.dumps({"event": "media", "sequenceNumber": str(n), "streamSid": sid, "media": media_message}))
                with anyio.fail_after(30):
                    # Greeting chime (0.3 s), a beep (0.1 s), then the caller's turn (~1.5 s) echoed.
                    while len(pcm(media)) < 8000 * 1.9 or not marks:
                        message = json.loads(await ws.recv())
                        assert message.get("streamSid") == sid, message
                        if message["event"] == "media":
                            media.append(message["media"]["payload"])
                        elif message["event"] == "mark":
                            marks.append(message["mark"]["name"])
                            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": message["mark"]}))
                        else:
                            assert message["event"] != "clear", "nobody barged in"
                await ws.send(json.dumps({"event": "stop", "sequenceNumber": "999", "streamSid": sid}))
                with anyio.fail_after(10):
                    async for _ in ws:  # the server closes the socket after stop
                        pass
            return {"audio": pcm(media), "marks": marks}

        heard = anyio.run(call)
        output = printed()
    audio = heard["audio"].astype(np.float64)
    rate, greeting = module.chime(660, 880)
    assert rate == 8000
    first = audio[: greeting.shape[1]]
    assert np.corrcoef(first, greeting[0])[0, 1] > 0.95  # the chime came first, through µ-law
    hello = load_audio(HELLO).samples[0].astype(np.float64)
    echoed = audio[greeting.shape[1] + 800 :]
    assert np.sqrt(np.mean(echoed**2)) == pytest.approx(np.sqrt(np.mean(hello**2)), rel=0.3)
    assert heard["marks"] and all(name.startswith("flowrtc-") for name in heard["marks"])
    assert "call CA0001 from +15550001111" in output


async def fastrtc_websocket_turn(
    url: str, websocket_id: str, *, reply_s: float, on_message: Callable[[dict[str, Any]], Any] | None = None
) -> tuple[np.ndarray, int, list[dict[str, Any]]]:
    """Play 'Hello world!' over FastRTC's WebSocket protocol; return the reply audio, its rate and the messages."""
    messages: list[dict[str, Any]] = []
    media: list[str] = []
    async with connect(url) as ws:
        await ws.send(json.dumps({"event": "start", "websocket_id": websocket_id, "sample_rate": 8000}))
        started = json.loads(await ws.recv())
        assert started["event"] == "started" and started["sample_rate"] == 8000
        for payload in mulaw_payloads(speech_then_silence()):
            await ws.send(json.dumps({"event": "media", "media": {"payload": payload}}))
        with anyio.fail_after(30):
            while len(pcm(media)) < started["output_sample_rate"] * reply_s:
                message = json.loads(await ws.recv())
                if message.get("event") == "media":
                    media.append(message["media"]["payload"])
                    continue
                messages.append(message)
                if on_message is not None:
                    await on_message(message)
        await ws.send(json.dumps({"event": "stop"}))
    return pcm(media), started["output_sample_rate"], messages


def exercise_mount_litestar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    with serving(PYTHON, "examples/mount_litestar.py", "--port", str(port), port=port, tmp_path=tmp_path):
        base = f"127.0.0.1:{port}"

        async def check() -> tuple[np.ndarray, int, list[dict[str, Any]]]:
            async with httpx.AsyncClient(base_url=f"http://{base}") as client:
                assert (await client.get("/health")).json() == {"status": "ok"}
                assert 'href="/rtc/"' in (await client.get("/")).text
                config = (await client.get("/rtc/config")).json()
                assert (config["modality"], config["mode"], config["concurrency_limit"]) == ("audio", "send-receive", 5)
                page = await client.get("/rtc/")
                assert page.status_code == 200 and "<html" in page.text.lower()
                assert (await client.get("/rtc/outputs", params={"webrtc_id": "nobody"})).status_code == 404
            return await fastrtc_websocket_turn(f"ws://{base}/rtc/websocket/offer", "litestar-1", reply_s=1.5)

        reply, rate, messages = anyio.run(check)
    assert rate == 24000
    logs = [m["data"] for m in messages if m.get("type") == "log"]
    assert logs[:3] == ["started_talking", "pause_detected", "response_starting"]
    assert np.abs(reply).max() > 3000  # the echo is the voice, not silence


def exercise_mount_fastapi(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("mount_fastapi")
    port = free_port()
    with serving(*FLOWRTC, "run", "examples/mount_fastapi.py", "--port", str(port), port=port, tmp_path=tmp_path):
        base = f"127.0.0.1:{port}"

        async def check() -> dict[str, Any]:
            updates: list[str] = []
            async with httpx.AsyncClient(base_url=f"http://{base}", timeout=30) as client:
                assert (await client.get("/health")).json() == {"status": "ok"}
                config = (await client.get("/rtc/config")).json()
                assert config["additional_inputs"][0]["type"] == "slider"
                assert (await client.get("/rtc/")).status_code == 200
                invalid = await client.post("/input_hook", json={"webrtc_id": "x", "volume": 7})
                assert invalid.status_code == 422  # pydantic checks the body

                async def read_updates() -> None:
                    async with client.stream("GET", "/updates", params={"webrtc_id": "fastapi-1"}) as response:
                        async for line in response.aiter_lines():
                            if line.startswith("data: "):
                                updates.append(json.loads(line[len("data: ") :]))

                async def answer_send_input(message: dict[str, Any]) -> None:
                    if message.get("type") == "send_input":  # ReplyOnPause asks before each turn
                        response = await client.post("/input_hook", json={"webrtc_id": "fastapi-1", "volume": 0.5})
                        assert response.json() == {"status": "ok"}
                        # The session exists now: follow its outputs from here on.
                        group.start_soon(read_updates)

                async with anyio.create_task_group() as group:
                    reply, rate, messages = await fastrtc_websocket_turn(
                        f"ws://{base}/rtc/websocket/offer", "fastapi-1", reply_s=1.5, on_message=answer_send_input
                    )
                    with anyio.move_on_after(10):
                        while not updates:
                            await anyio.sleep(0.05)
                    group.cancel_scope.cancel()
            return {"reply": reply, "rate": rate, "messages": messages, "updates": updates}

        result = anyio.run(check)
    types_seen = [m.get("type") for m in result["messages"]]
    assert "send_input" in types_seen and "fetch_output" in types_seen
    assert result["updates"] == ["echoing 1.5 s at volume 0.5"]
    # Half volume: the reply's loud samples are half the input's (same clip, resampled, through µ-law).
    hello = load_audio(HELLO, sample_rate=result["rate"]).samples[0].astype(np.float64)
    ratio = np.percentile(np.abs(result["reply"]), 99.5) / np.percentile(np.abs(hello), 99.5)
    assert ratio == pytest.approx(0.5, abs=0.1)

    # The same stream on a plain Starlette app.
    async def starlette() -> None:
        transport = httpx.ASGITransport(app=module.starlette_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://example") as client:
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert (await client.get("/rtc/config")).json()["modality"] == "audio"

    anyio.run(starlette)


def exercise_video_flip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("video_flip")
    frames = [VideoFrame(module.gradient(i), pts=3000 * i) for i in range(6)]
    recording = run(module.stream.graph(), video=frames, video_buffer=len(frames), inputs=[(0.1, [0.5])])
    flipped = recording.video
    assert len(flipped) == 6 and [f.pts for f in flipped] == [f.pts for f in frames]
    assert np.array_equal(flipped[0].image, frames[0].image[::-1])  # brightness 1.0: only flipped
    assert [o.args[0] for o in recording.of_type(AdditionalOutputs)][-1] < frames[-1].image.mean() * 0.6  # set_input(0.5)


def exercise_stream_handler_echo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recordings = load("stream_handler_echo").main()
    for name, recording in recordings.items():
        assert {chunk.sample_rate for chunk in recording.audio_chunks} == {24000}, name
        assert sum(chunk.duration_s for chunk in recording.audio_chunks) == pytest.approx(1.4, abs=0.03), name
    assert "AsyncEchoHandler" in capsys.readouterr().out


def exercise_receive_generator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("receive_generator")
    recording = run(module.audio_stream.graph(), initial_args=[2])  # as if the client set Beeps to 2
    assert [o.args[0] for o in recording.of_type(AdditionalOutputs)] == ["beep 1 of 2", "beep 2 of 2"]
    assert sum(chunk.duration_s for chunk in recording.audio_chunks) == pytest.approx(0.6)
    video = run(module.video_stream.graph())
    assert len(video.video) == 15
    assert video.video[-1].media_time_s == pytest.approx(14 / 15)
    assert not recording.of_type(CloseStream)


def exercise_unit_test_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("unit_test_operator")
    tests = [value for key, value in vars(module).items() if key.startswith("test_") and callable(value)]
    assert len(tests) >= 3
    for test in tests:
        test()


def exercise_voice_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = load("voice_pipeline")
    recording: Recording = run(module.voice_graph(), audio=module.default_input(), trailing_silence_s=2.0)
    heard = [t.text for t in recording.of_type(Transcript)]
    assert heard[0] == "Hello world!" and heard[1].startswith("Goodbye.")
    assert recording.audio is not None and recording.audio.sample_rate == 24000
    assert sum(chunk.duration_s for chunk in recording.audio_chunks) > 5.0


EXERCISES: dict[str, Callable[[Path, pytest.CaptureFixture[str]], None]] = {
    "echo_reply_on_pause": exercise_echo_reply_on_pause,
    "llm_voice_chat": exercise_llm_voice_chat,
    "mount_fastapi": exercise_mount_fastapi,
    "mount_litestar": exercise_mount_litestar,
    "receive_generator": exercise_receive_generator,
    "stream_handler_echo": exercise_stream_handler_echo,
    "twilio_phone_agent": exercise_twilio_phone_agent,
    "unit_test_operator": exercise_unit_test_operator,
    "video_flip": exercise_video_flip,
    "voice_pipeline": exercise_voice_pipeline,
}
