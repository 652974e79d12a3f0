"""FastRTC's user documentation, run against flowrtc.

Every Python example of the FastRTC docs (/work/shared/reference/fastrtc-user-docs.md)
that needs neither Gradio nor the internet is here as written, with three mechanical
changes: ``from fastrtc import`` becomes ``from flowrtc import``, ``import gradio as gr``
and ``.ui.launch()`` lines are dropped (``gr.Slider``/``gr.Number`` are stand-ins
with a ``.value``, which is all ``Stream`` asks of an input), and names the
snippets use without defining (``process_frame``, ``cv2`` for a local capture, ...)
are given small stand-ins. Each is then driven through ``flowrtc.testing`` or
``Stream.session`` and checked against what the docs promise.

Left out (they need the internet or Gradio): the LLM/Sambanova and YOLO examples,
Kokoro and Moonshine model downloads, fastphone, TURN credential helpers, placing a
Twilio call (the outbound-call example's routes that answer it are here), and the
``WebRTC`` Gradio component examples (their handler
functions are covered below where they run on their own).

The runnable examples of docs/handlers.md (``examples/*.py``) are tested at the end.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest

import flowrtc
from flowrtc import AdditionalOutputs, AudioChunk, CloseStream, Error, Stream, VideoFrame
from flowrtc.events import ReplyStarted
from flowrtc.hub import ConcurrencyLimitReached
from flowrtc.testing import Recording, arun

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
GRADIO_ONLY = re.compile(r"^\s*(import gradio as gr|.*\.ui\.launch\(\)|demo\.launch\(\))\s*$")


# ---------------------------------------------------------------------------- harness
class _Component:
    """A stand-in for a Gradio component: flowrtc only reads ``.value`` (and a few display fields)."""

    def __init__(self, value: Any = None, **options: Any) -> None:
        self.value = value
        self.__dict__.update(options)


class _Slider(_Component):
    def __init__(self, minimum: float = 0, maximum: float = 100, value: Any = None, **options: Any) -> None:
        super().__init__(minimum if value is None else value, minimum=minimum, maximum=maximum, **options)


_Slider.__name__ = "Slider"
gr = types.SimpleNamespace(Slider=_Slider, Number=type("Number", (_Component,), {}), State=type("State", (_Component,), {}))


def docs(source: str, namespace: dict[str, Any] | None = None, **names: Any) -> dict[str, Any]:
    """Run one docs example: Gradio-only lines dropped, fastrtc imports pointed at flowrtc.

    ``namespace`` continues an earlier example (the docs build on previous snippets).
    """
    lines = [line.replace("from fastrtc import", "from flowrtc import") for line in textwrap.dedent(source).splitlines()]
    code = "\n".join(line for line in lines if not GRADIO_ONLY.match(line))
    if namespace is None:
        namespace = {"__name__": "fastrtc_docs_example", "gr": gr}
    namespace.update(names)
    exec(compile(code, "<fastrtc docs>", "exec"), namespace)
    return namespace


def picture(index: int = 0) -> np.ndarray:
    image = np.zeros((6, 8, 3), np.uint8)
    image[0] = 255  # a white top row shows which way up a frame is
    image[1:, :, 0] = index
    return image


def video(count: int, fps: float = 30) -> list[VideoFrame]:
    return [VideoFrame(picture(i), pts=round(i * 90000 / fps)) for i in range(count)]


def flipped(frame: VideoFrame, index: int) -> bool:
    return bool((frame.image[-1] == 255).all() and (frame.image[:-1, :, 0] == index).all())


async def run_video(stream: Stream, count: int = 5) -> Recording:
    return await arun(stream.graph(), video=video(count), video_buffer=count)


async def exchange(stream: Stream, items: list[Any], *, session_id: str = "docs", gap_s: float = 0.0) -> list[Any]:
    out: list[Any] = []
    async with stream.session(session_id, transport="test") as session:

        async def feed() -> None:
            for item in items:
                await session.send(item)
                if gap_s:
                    await anyio.sleep(gap_s)
            await session.end_input()

        async with anyio.create_task_group() as group:
            group.start_soon(feed)
            with anyio.fail_after(30):
                out = [item async for item in session]
            group.cancel_scope.cancel()
    return out


def echo(audio: tuple[int, np.ndarray]) -> Any:
    yield audio


def seconds(chunks: list[AudioChunk]) -> float:
    return sum(chunk.duration_s for chunk in chunks)


# ------------------------------------------------------------------------------ quickstart
async def test_quickstart_echo_replies_with_the_users_turn(hello: AudioChunk) -> None:
    ns = docs(
        """
        from fastrtc import Stream, ReplyOnPause
        import numpy as np

        def echo(audio: tuple[int, np.ndarray]):
            # The function will be passed the audio until the user pauses
            # Implement any iterator that yields audio
            # See "LLM Voice Chat" for a more complete example
            yield audio

        stream = Stream(
            handler=ReplyOnPause(echo),
            modality="audio",
            mode="send-receive",
        )
        """
    )
    recording = await arun(ns["stream"].graph(), audio=hello, trailing_silence_s=1.0)
    assert len(recording.of_type(ReplyStarted)) == 1
    assert 1.1 < seconds(recording.audio_chunks) < 1.9  # "Hello world." (1.2 s of speech, with its padding)
    # the message format the docs list for ReplyOnPause
    assert recording.log() == ["started_talking", "pause_detected", "response_starting"]


async def test_quickstart_flip_vertically() -> None:
    ns = docs(
        """
        from fastrtc import Stream
        import numpy as np


        def flip_vertically(image):
            return np.flip(image, axis=0)


        stream = Stream(
            handler=flip_vertically,
            modality="video",
            mode="send-receive",
        )
        """
    )
    recording = await run_video(ns["stream"])
    assert [flipped(frame, i) for i, frame in enumerate(recording.video)] == [True] * 5


# --------------------------------------------------------------------------- core concepts
async def test_core_concepts_stream_with_a_slider_input() -> None:
    ns = docs(
        """
        from fastrtc import Stream
        import gradio as gr
        import numpy as np

        def detection(image, slider):
            return np.flip(image, axis=0)

        stream = Stream(
            handler=detection, # (1)
            modality="video", # (2)
            mode="send-receive", # (3)
            additional_inputs=[
                gr.Slider(minimum=0, maximum=1, step=0.01, value=0.3) # (4)
            ],
            additional_outputs=None, # (5)
            additional_outputs_handler=None # (6)
        )
        """
    )
    stream = ns["stream"]
    assert stream.input_values() == [0.3] and stream.additional_inputs[0].to_dict()["maximum"] == 1
    recording = await run_video(stream)  # detection needs its slider argument: it gets the default
    assert all(flipped(frame, i) for i, frame in enumerate(recording.video))


def detection_stream() -> dict[str, Any]:
    def process_frame(image: np.ndarray, conf_threshold: float) -> tuple[np.ndarray, int]:
        return np.flip(image, axis=0), round(conf_threshold * 10)  # "detections": more at a higher threshold

    return docs(
        """
        from fastrtc import Stream, AdditionalOutputs
        import gradio as gr

        def detection(image, conf_threshold=0.3):
            processed_frame, n_objects = process_frame(image, conf_threshold)
            return processed_frame, AdditionalOutputs(n_objects)

        stream = Stream(
            handler=detection,
            modality="video",
            mode="send-receive",
            additional_inputs=[
                gr.Slider(minimum=0, maximum=1, step=0.01, value=0.3)
            ],
            additional_outputs=[gr.Number()], # (5)
            additional_outputs_handler=lambda component, n_objects: n_objects
        )
        """,
        process_frame=process_frame,
    )


async def test_additional_outputs_come_with_each_frame() -> None:
    stream = detection_stream()["stream"]
    recording = await run_video(stream, 3)
    assert [outputs.args for outputs in recording.of_type(AdditionalOutputs)] == [(3,), (3,), (3,)]
    assert all(flipped(frame, i) for i, frame in enumerate(recording.video))
    assert stream.additional_outputs_handler(None, 3) == 3 and len(stream.additional_output_components) == 1


async def test_input_hook_and_output_hook() -> None:
    stream = detection_stream()["stream"]
    hooks = docs(
        """
        from pydantic import BaseModel, Field
        from fastapi import FastAPI

        class InputData(BaseModel):
            webrtc_id: str
            conf_threshold: float = Field(ge=0, le=1)

        app = FastAPI()
        stream.mount(app)

        @app.post("/input_hook")
        async def _(data: InputData):
            stream.set_input(data.webrtc_id, data.conf_threshold)
        """,
        stream=stream,
    )
    updates = docs(
        """
        from fastapi.responses import StreamingResponse

        @app.get("/updates")
        async def stream_updates(webrtc_id: str):
            async def output_stream():
                async for output in stream.output_stream(webrtc_id):
                    # Output is the AdditionalOutputs instance
                    # Be sure to serialize it however you would like
                    yield f"data: {output.args[0]}\\n\\n"

            return StreamingResponse(
                output_stream(),
                media_type="text/event-stream"
            )
        """,
        stream=stream,
        app=hooks["app"],
    )
    events: list[str] = []
    async with stream.session("abc", transport="webrtc") as session:
        response = await updates["stream_updates"](webrtc_id="abc")

        async def follow() -> None:
            async for chunk in response.body_iterator:
                events.append(chunk)

        async with anyio.create_task_group() as group:
            group.start_soon(follow)
            group.start_soon(_drain, session)
            await session.send(video(1)[0])
            await _until(lambda: len(events) == 1)
            await hooks["_"](hooks["InputData"](webrtc_id="abc", conf_threshold=0.8))  # the next call gets 0.8
            await session.send(video(2)[1])
            await _until(lambda: len(events) == 2)
            group.cancel_scope.cancel()
    assert events == ["data: 3\n\n", "data: 8\n\n"]


async def _drain(session: Any) -> None:
    async for _ in session:
        pass


async def _until(condition: Any, timeout_s: float = 10) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.005)


def test_concurrency_and_time_limit_arguments() -> None:
    ns = docs(
        """
        stream = Stream(
            handler=handler,
            concurrency_limit=10,
            time_limit=3600
        )
        """,
        Stream=Stream,
        handler=lambda frame: frame,
    )
    assert (ns["stream"].concurrency_limit, ns["stream"].time_limit, ns["stream"].modality) == (10, 3600, "video")


async def test_handling_errors_concurrency_limit_reached() -> None:
    stream = Stream(lambda frame: frame, concurrency_limit=1)
    async with stream.session("first", transport="webrtc"):
        with pytest.raises(ConcurrencyLimitReached) as info:
            async with stream.session("second", transport="websocket"):
                pass  # pragma: no cover
    assert info.value.limit == 1  # the adapters answer {"status": "failed", "meta": {"error": "concurrency_limit_reached", "limit": 1}}


# ------------------------------------------------------------------------- audio: handlers
def reply_namespace() -> dict[str, Any]:
    def generate_response(sample_rate: int, audio_array: np.ndarray) -> Any:
        half = audio_array.shape[1] // 2
        yield audio_array[:, :half]
        yield audio_array[:, half:]

    return docs(
        """
        from fastrtc import ReplyOnPause, Stream

        def response(audio: tuple[int, np.ndarray]): # (1)
            sample_rate, audio_array = audio
            # Generate response
            for audio_chunk in generate_response(sample_rate, audio_array):
                yield (sample_rate, audio_chunk) # (2)

        stream = Stream(
            handler=ReplyOnPause(response),
            modality="audio",
            mode="send-receive"
        )
        """,
        np=np,
        generate_response=generate_response,
    )


async def test_reply_on_pause_calls_the_generator_with_the_whole_turn(hello: AudioChunk) -> None:
    ns = reply_namespace()
    recording = await arun(ns["stream"].graph(), audio=hello, trailing_silence_s=1.0)
    assert len(recording.of_type(ReplyStarted)) == 1
    assert 1.1 < seconds(recording.audio_chunks) < 1.9


async def test_reply_on_pause_parameters_and_interruptions(hello: AudioChunk) -> None:
    ns = reply_namespace()
    tuned = docs(
        """
        from fastrtc import AlgoOptions, SileroVadOptions

        stream = Stream(
            handler=ReplyOnPause(
                response,
                algo_options=AlgoOptions(
                    audio_chunk_duration=0.6,
                    started_talking_threshold=0.2,
                    speech_threshold=0.1
                ),
                model_options=SileroVadOptions(
                    threshold=0.5,
                    min_speech_duration_ms=250,
                    min_silence_duration_ms=100
                )
            )
        )
        """,
        **ns,
    )
    stream = tuned["stream"]
    assert stream.modality == "audio"  # the snippet leaves it out; a ReplyOnPause serves audio
    recording = await arun(stream.graph(), audio=hello, trailing_silence_s=1.0)
    assert len(recording.of_type(ReplyStarted)) == 1
    interrupting = docs(
        """
        from fastrtc import Stream, ReplyOnPause

        stream = Stream(
            handler=ReplyOnPause(
                response,
                can_interrupt=True,
            )
        )
        """,
        **ns,
    )
    assert interrupting["stream"].handler.can_interrupt is True


async def test_reply_on_pause_startup_function_speaks_first(hello: AudioChunk) -> None:
    ns = docs(
        """
        from fastrtc import get_tts_model, Stream, ReplyOnPause

        tts_client = get_tts_model()


        def echo(audio: tuple[int, np.ndarray]):
            # Implement any iterator that yields audio
            # See "LLM Voice Chat" for a more complete example
            yield audio


        def startup():
            for chunk in tts_client.stream_tts_sync("Welcome to the echo audio demo!"):
                yield chunk


        stream = Stream(
            handler=ReplyOnPause(echo, startup_fn=startup),
            modality="audio",
            mode="send-receive",
            ui_args={"title": "Echo Audio"},
        )
        """,
        np=np,
    )
    recording = await arun(ns["stream"].graph(), audio=AudioChunk.silence(1.0, 8000))
    assert recording.audio_chunks[0].pts == 0  # the welcome plays from the start, before any turn
    assert seconds(recording.audio_chunks) > 1.0 and ns["stream"].ui_args == {"title": "Echo Audio"}


async def test_reply_on_stopwords_waits_for_its_word(hello: AudioChunk) -> None:
    ns = docs(
        """
        from fastrtc import Stream, ReplyOnStopWords

        def response(audio: tuple[int, np.ndarray]):
            \"\"\"This function must yield audio frames\"\"\"
            ...
            for numpy_array in generated_audio:
                yield (sampling_rate, numpy_array, "mono")

        stream = Stream(
            handler=ReplyOnStopWords(generate,
                                    input_sample_rate=16000,
                                    stop_words=["computer"]), # (1)
            modality="audio",
            mode="send-receive"
        )
        """,
        np=np,
        generate=echo,  # the snippet passes `generate`, which it never defines
    )
    recording = await arun(ns["stream"].graph(), audio=hello, trailing_silence_s=1.0)
    assert recording.of_type(ReplyStarted) == []  # "Hello world." has no "computer" in it


def echo_handler_namespace() -> dict[str, Any]:
    return docs(
        """
        import gradio as gr
        from fastrtc import StreamHandler
        from queue import Queue

        class EchoHandler(StreamHandler):
            def __init__(self) -> None:
                super().__init__()
                self.queue = Queue()

            def receive(self, frame: tuple[int, np.ndarray]) -> None: # (1)
                self.queue.put(frame)

            def emit(self) -> None: # (2)
                return self.queue.get()

            def copy(self) -> StreamHandler:
                return EchoHandler()

            def shutdown(self) -> None: # (3)
                pass

            def start_up(self) -> None: # (4)
                pass

        stream = Stream(
            handler=EchoHandler(),
            modality="audio",
            mode="send-receive"
        )
        """,
        np=np,  # the snippet uses np and Stream without importing them
        Stream=Stream,
    )


async def test_stream_handler_echo(hello: AudioChunk) -> None:
    ns = echo_handler_namespace()
    recording = await arun(ns["stream"].graph(), audio=hello)  # 8 kHz in, (48000, (1, 960)) to receive
    assert {chunk.sample_rate for chunk in recording.audio_chunks} == {24000}  # output_sample_rate
    assert seconds(recording.audio_chunks) == pytest.approx(hello.duration_s, abs=0.03)


async def test_async_stream_handler_echo(hello: AudioChunk) -> None:
    ns = docs(
        """
        from fastrtc import AsyncStreamHandler, wait_for_item, Stream
        import asyncio
        import numpy as np

        class AsyncEchoHandler(AsyncStreamHandler):
            \"\"\"Simple Async Echo Handler\"\"\"

            def __init__(self) -> None:
                super().__init__(input_sample_rate=24000)
                self.queue = asyncio.Queue()

            async def receive(self, frame: tuple[int, np.ndarray]) -> None:
                await self.queue.put(frame)

            async def emit(self) -> None:
                return await wait_for_item(self.queue)

            def copy(self):
                return AsyncEchoHandler()

            async def shutdown(self):
                pass

            async def start_up(self) -> None:
                pass
        """
    )
    stream = Stream(ns["AsyncEchoHandler"](), modality="audio", mode="send-receive")
    voice = hello.to_int16()
    recording = await arun(stream.graph(), audio=voice)
    assert seconds(recording.audio_chunks) == pytest.approx(voice.duration_s, abs=0.03)


async def test_requesting_inputs_and_telephone_use() -> None:
    # The docs' snippet ("def emit(self): ... await self.wait_for_args()") is not valid Python;
    # the same logic as an async emit:
    ns = docs(
        """
        from fastrtc import AsyncStreamHandler

        class Handler(AsyncStreamHandler):
            async def receive(self, frame):
                pass

            async def emit(self):
                if self.phone_mode:
                    self.latest_args = [None]
                else:
                    await self.wait_for_args()
                return AdditionalOutputs(*self.latest_args)

            def copy(self):
                return Handler()
        """,
        AdditionalOutputs=AdditionalOutputs,
    )
    stream = Stream(ns["Handler"](), modality="audio")
    async with stream.session("phone", transport="telephone", phone_mode=True) as session:
        with anyio.fail_after(5):
            assert await session.receive() == AdditionalOutputs(None)  # never waits on the phone
    async with stream.session("web", transport="webrtc") as session:
        with anyio.fail_after(5):
            request = await session.receive()
        assert (request.type, request.data) == ("send_input", [])
        stream.set_input("web", 0.5)
        with anyio.fail_after(5):
            answer = await session.receive()
    assert answer == AdditionalOutputs("__webrtc_value__", 0.5)  # "The 0th index is the dummy string"


async def test_audio_video_handler_video_methods_reflect_the_webcam() -> None:
    methods = textwrap.indent(
        textwrap.dedent(
            """
            async def video_receive(self, frame: np.ndarray):
                \"\"\"Send video frames to the server\"\"\"
                if self.session:
                    # send image every 1 second
                    # otherwise we flood the API
                    if time.time() - self.last_frame_time > 1:
                        self.last_frame_time = time.time()
                        await self.session.send(encode_image(frame))
                        if self.latest_args[2] is not None:
                            await self.session.send(encode_image(self.latest_args[2]))
                self.video_queue.put_nowait(frame)

            async def video_emit(self) -> VideoEmitType:
                \"\"\"Return video frames to the client\"\"\"
                return await self.video_queue.get()
            """
        ),
        "    ",
    )
    ns = docs(
        "from fastrtc import AsyncAudioVideoStreamHandler\n\n"
        "class GeminiHandler(AsyncAudioVideoStreamHandler):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.session = None  # no Gemini connection: the feed is only reflected\n"
        "        self.last_frame_time = 0\n"
        "        self.video_queue = asyncio.Queue()\n"
        "    async def receive(self, frame):\n"
        "        pass\n"
        "    async def emit(self):\n"
        "        return None\n"
        "    def copy(self):\n"
        "        return GeminiHandler()\n" + methods,
        np=np,
        time=time,
        asyncio=asyncio,
        VideoEmitType=Any,
    )
    stream = Stream(ns["GeminiHandler"](), modality="audio-video")
    out = await exchange(stream, video(4), gap_s=0.01)
    frames = [item for item in out if isinstance(item, VideoFrame)]
    assert [int(frame.image[1, 0, 0]) for frame in frames] == [0, 1, 2, 3]


async def test_audio_stream_handler_input_and_output_rates(hello: AudioChunk) -> None:
    ns = docs(
        """
        from fastrtc import ReplyOnPause, Stream

        stream = Stream(
            handler=ReplyOnPause(..., output_sample_rate=16000),
            modality="audio",
            mode="send-receive"
        )
        """.replace("ReplyOnPause(...,", "ReplyOnPause(echo, input_sample_rate=24000,"),  # the docs' `...` and its typo `input_sampling_rate`
        echo=echo,
    )
    stream = ns["stream"]
    assert (stream.input_sample_rate, stream.output_sample_rate) == (24000, 16000)
    recording = await arun(stream.graph(), audio=hello, trailing_silence_s=1.0)
    assert {chunk.sample_rate for chunk in recording.audio_chunks} == {16000}


async def test_additional_outputs_of_a_send_only_reply(hello: AudioChunk) -> None:
    # The handler of the Gradio "Additional Outputs" example, served by a Stream instead of the component.
    model = types.SimpleNamespace(generate=lambda **kwargs: "Hello! How can I help?")
    ns = docs(
        """
        from fastrtc import AdditionalOutputs

        def transcribe(audio: tuple[int, np.ndarray],
                       transformers_convo: list[dict],
                       gradio_convo: list[dict]):
            response = model.generate(**inputs, max_length=256)
            transformers_convo.append({"role": "assistant", "content": response})
            gradio_convo.append({"role": "assistant", "content": response})
            yield AdditionalOutputs(transformers_convo, gradio_convo) # (1)
        """,
        np=np,
        model=model,
        inputs={},
    )
    stream = Stream(flowrtc.ReplyOnPause(ns["transcribe"]), modality="audio", mode="send", additional_inputs=[gr.State(value=[]), gr.State(value=[])])
    recording = await arun(stream.graph(), audio=hello, trailing_silence_s=1.0, inputs=[(0.0, ([], []))])
    (outputs,) = recording.of_type(AdditionalOutputs)
    assert outputs.args[1] == [{"role": "assistant", "content": "Hello! How can I help?"}]
    assert recording.audio_chunks == []  # mode="send": no audio goes back


def test_telephone_integration_mounts_on_fastapi() -> None:
    ns = docs(
        """
        from fastrtc import Stream, ReplyOnPause
        from fastapi import FastAPI

        def echo(audio):
            yield audio

        app = FastAPI()

        stream = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive")
        stream.mount(app)

        # run with `uvicorn main:app`
        """
    )
    assert ns["app"].routes and ns["stream"].modality == "audio"


# ------------------------------------------------------------------------------ video docs
async def test_video_input_output_streaming() -> None:
    def process_frame(image: np.ndarray, conf_threshold: float) -> np.ndarray:
        return np.flip(image, axis=0)

    ns = docs(
        """
        from fastrtc import Stream
        import gradio as gr

        def detection(image, conf_threshold=0.3): # (1)
            processed_frame = process_frame(image, conf_threshold)
            return processed_frame # (2)

        stream = Stream(
            handler=detection,
            modality="video",
            mode="send-receive", # (3)
            additional_inputs=[
                gr.Slider(minimum=0, maximum=1, step=0.01, value=0.3)
            ],
        )
        """,
        process_frame=process_frame,
    )
    recording = await run_video(ns["stream"])
    assert all(flipped(frame, i) for i, frame in enumerate(recording.video))


class _Capture:
    """A stand-in for ``cv2.VideoCapture(url)`` that plays local frames (no download)."""

    def __init__(self, url: str, frames: int = 90) -> None:
        self.url, self.left, self.index = url, frames, 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        self.index += 1
        return True, picture(self.index % 256)


async def test_server_to_client_generation() -> None:
    ns = docs(
        """
        from fastrtc import Stream

        def generation():
            url = "https://download.tsi.telecom-paristech.fr/gpac/dataset/dash/uhd/mux_sources/hevcds_720p30_2M.mp4"
            cap = cv2.VideoCapture(url)
            iterating = True
            while iterating:
                iterating, frame = cap.read()
                yield frame

        stream = Stream(
            handler=generation,
            modality="video",
            mode="receive"
        )
        """,
        cv2=types.SimpleNamespace(VideoCapture=lambda url: _Capture(url, frames=12)),
    )
    recording = await arun(ns["stream"].graph())
    assert len(recording.video) == 12  # the final (False, None) read yields nothing
    assert [round(frame.media_time_s, 3) for frame in recording.video[:3]] == [0.0, 0.033, 0.067]  # 30 fps


async def test_skipping_frames_keeps_a_slow_handler_current() -> None:
    ns = docs(
        """
        import time

        import numpy as np
        from fastrtc import Stream, VideoStreamHandler


        def process_image(image):
            time.sleep(
                0.2
            )  # Simulating 200ms processing time per frame; input arrives faster (30 FPS).
            return np.flip(image, axis=0)


        stream = Stream(
            handler=VideoStreamHandler(process_image, skip_frames=True),
            modality="video",
            mode="send-receive",
        )

        stream.ui.launch()
        """
    )
    out = await exchange(ns["stream"], video(36), gap_s=1 / 30)  # 1.2 s of 30 fps video
    frames = [item for item in out if isinstance(item, VideoFrame)]
    indices = [int(frame.image[0, 0, 0]) for frame in frames]
    assert 3 <= len(frames) <= 9 and indices == sorted(indices)  # ~6 calls of 200 ms, not 36
    assert indices[-1] >= 28  # the newest frames are the ones processed, so the feed stays current


async def test_setting_the_output_frame_rate() -> None:
    ns = docs(
        """
        def generation():
            url = "https://github.com/user-attachments/assets/9636dc97-4fee-46bb-abb8-b92e69c08c71"
            cap = cv2.VideoCapture(url)
            iterating = True

            # FPS calculation variables
            frame_count = 0
            start_time = time.time()
            fps = 0

            while iterating:
                iterating, frame = cap.read()

                # Calculate and print FPS
                frame_count += 1
                elapsed_time = time.time() - start_time
                if elapsed_time >= 1.0:  # Update FPS every second
                    fps = frame_count / elapsed_time
                    yield frame, AdditionalOutputs(fps)
                    frame_count = 0
                    start_time = time.time()
                else:
                    yield frame


        stream = Stream(
            handler=VideoStreamHandler(generation, fps=60),
            modality="video",
            mode="receive",
            additional_outputs=[gr.Number(label="FPS")],
            additional_outputs_handler=lambda prev, cur: cur,
        )

        stream.ui.launch()
        """,
        cv2=types.SimpleNamespace(VideoCapture=lambda url: _Capture(url, frames=80)),
        time=time,
        Stream=Stream,
        VideoStreamHandler=flowrtc.VideoStreamHandler,
        AdditionalOutputs=AdditionalOutputs,
    )
    recording = await arun(ns["stream"].graph())
    (measured,) = [outputs.args[0] for outputs in recording.of_type(AdditionalOutputs)]
    assert 45 < measured < 65  # the generator is pulled at the handler's 60 fps
    assert recording.video[1].media_time_s == pytest.approx(1 / 60, abs=1e-4)


async def test_webrtc_error_shows_in_the_ui() -> None:
    voice = (np.sin(np.arange(800) / 5) * 8000).astype(np.int16)
    segment = types.SimpleNamespace(frame_rate=8000, get_array_of_samples=lambda: voice)
    source = """
        def generation(num_steps):
            for _ in range(num_steps):
                segment = AudioSegment.from_file(
                    "/Users/freddy/sources/gradio/demo/audio_debugger/cantina.wav"
                )
                yield (
                    segment.frame_rate,
                    np.array(segment.get_array_of_samples()).reshape(1, -1),
                )
                time.sleep(3.5)
            raise WebRTCError("This is a test error")

        with gr.Blocks() as demo:
        """
    ns = docs(
        source[: source.index("with gr.Blocks()")],  # the rest builds the Gradio UI
        np=np,
        AudioSegment=types.SimpleNamespace(from_file=lambda path: segment),
        time=types.SimpleNamespace(sleep=lambda s: None),  # not 3.5 s per step in a test
        WebRTCError=flowrtc.WebRTCError,
    )
    stream = Stream(ns["generation"], modality="audio", mode="receive", additional_inputs=[gr.Slider(label="Number of Steps", minimum=1, maximum=10, step=1, value=5)])
    out = await exchange(stream, [])
    assert len([item for item in out if isinstance(item, AudioChunk)]) == 5
    assert out[-1] == Error(message="This is a test error", kind="webrtc_error")


# -------------------------------------------------------------------------- configuration
def test_track_constraints_rtp_params_and_rtc_configuration() -> None:
    # The snippets write ``handler=...`` (and the second none at all): a flip function stands in.
    ns = docs(
        """
        track_constraints = {
            "width": {"exact": 500},
            "height": {"exact": 500},
            "frameRate": {"ideal": 30},
        }
        webrtc = Stream(
            handler=...,
            track_constraints=track_constraints,
            modality="video",
            mode="send-receive")
        """.replace("handler=...", "handler=flip"),
        Stream=Stream,
        flip=lambda image: np.flip(image, axis=0),
    )
    docs(
        """
        image = Stream(
            modality="video",
            mode="send",
            track_constraints=track_constraints,
            rtp_params={"degradationPreference": "maintain-resolution"}
        )
        """.replace("image = Stream(", "image = Stream(handler=flip,"),
        namespace=ns,
    )
    docs(
        """
        from fastrtc import Stream
        rtc_configuration = {
            "iceServers": [
                {
                    "urls": "turn:35.173.254.80:80",
                    "username": "<my-username>",
                    "credential": "<my-password>"
                },
            ]
        }
        turn = Stream(
            handler=...,
            rtc_configuration=rtc_configuration,
            modality="audio",
            mode="send-receive"
        )
        """.replace("handler=...", "handler=ReplyOnPause(echo)"),
        namespace=ns,
        ReplyOnPause=flowrtc.ReplyOnPause,
        echo=echo,
    )
    assert ns["webrtc"].track_constraints == {"width": {"exact": 500}, "height": {"exact": 500}, "frameRate": {"ideal": 30}}
    assert ns["image"].rtp_params == {"degradationPreference": "maintain-resolution"} and ns["image"].mode == "send"
    assert ns["turn"].rtc_configuration["iceServers"][0]["urls"] == "turn:35.173.254.80:80"


def test_the_documented_signatures() -> None:
    with pytest.warns(DeprecationWarning):
        reply = flowrtc.ReplyOnPause(
            fn=echo,
            startup_fn=None,
            algo_options=None,
            model_options=None,
            can_interrupt=True,
            expected_layout="mono",
            output_sample_rate=24000,
            output_frame_size=480,  # Deprecated
            input_sample_rate=48000,
            model=None,
        )
    stream = Stream(
        handler=reply,
        additional_outputs_handler=None,
        mode="send-receive",
        modality="audio",
        concurrency_limit="default",
        time_limit=None,
        allow_extra_tracks=False,
        rtp_params=None,
        rtc_configuration=None,
        track_constraints=None,
        additional_inputs=None,
        additional_outputs=None,
        ui_args=None,
    )
    assert stream.event_handler is reply and stream.concurrency_limit == 1 and stream.allow_extra_tracks is False
    base = flowrtc.StreamHandlerBase(expected_layout="stereo", output_sample_rate=16000, input_sample_rate=24000)
    assert (base.expected_layout, base.output_sample_rate, base.output_frame_size, base.input_sample_rate) == ("stereo", 16000, 320, 24000)


# ------------------------------------------------------------------------------------ utils
async def test_utils_examples() -> None:
    ns = docs(
        """
        from fastrtc import audio_to_bytes, audio_to_file, aggregate_bytes_to_16bit, async_aggregate_bytes_to_16bit, wait_for_item
        import asyncio
        import numpy as np

        sample_rate = 44100
        audio_data = np.array([0.1, -0.2, 0.3])  # Example audio samples
        audio_tuple = (sample_rate, audio_data)
        audio_bytes = audio_to_bytes(audio_tuple)

        file_path = audio_to_file(audio_tuple)
        print(f"Audio saved to: {file_path}")

        chunks_iterator = [b'\\x00\\x01', b'\\x02\\x03', b'\\x04\\x05']
        chunks = []
        for chunk in aggregate_bytes_to_16bit(chunks_iterator):
            print(chunk)
            chunks.append(chunk)
        """
    )
    assert isinstance(ns["audio_bytes"], bytes) and Path(ns["file_path"]).exists()
    Path(ns["file_path"]).unlink()
    assert len(ns["chunks"]) == 3
    queue: asyncio.Queue[int] = asyncio.Queue()
    queue.put_nowait(1)
    assert await flowrtc.wait_for_item(queue) == 1


# ---------------------------------------------------------------- examples of docs/handlers.md
EXAMPLES = ["video_flip", "stream_handler_echo", "receive_generator"]


def load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs_as_a_script(name: str) -> None:
    result = subprocess.run([sys.executable, "-W", "error", str(ROOT / "examples" / f"{name}.py")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_example_video_flip() -> None:
    recording = load_example("video_flip").main()
    assert len(recording.video) == 10
    first = recording.video[0].image
    assert first[0, 0, 0] == 200 and first[-1, 0, 0] == 0  # bright row now on top
    assert len(recording.of_type(AdditionalOutputs)) == 10


def test_example_stream_handler_echo() -> None:
    recordings = load_example("stream_handler_echo").main()
    for recording in recordings.values():
        assert {chunk.sample_rate for chunk in recording.audio_chunks} == {24000}
        assert seconds(recording.audio_chunks) == pytest.approx(1.4, abs=0.03)


def test_example_receive_generator() -> None:
    recordings = load_example("receive_generator").main()
    assert [o.args[0] for o in recordings["audio"].of_type(AdditionalOutputs)] == ["beep 1 of 3", "beep 2 of 3", "beep 3 of 3"]
    assert seconds(recordings["audio"].audio_chunks) == pytest.approx(0.9)
    assert len(recordings["video"].video) == 15
    assert not recordings["audio"].of_type(CloseStream)


# ---------------------------------------------------------------------------- routes of your own
OUTBOUND_CALLS = '''
app = FastAPI()

@app.post("/call")
async def start_call(req: Request):
  body = await req.json()
  from_no = body.get("from")
  to_no = body.get("to")
  account_sid = os.getenv("TWILIO_ACCOUNT_SID")
  auth_token = os.getenv("TWILIO_AUTH_TOKEN")
  client = Client(account_sid, auth_token)

  # Use the public URL of your application
  # here we're using ngrok to expose an app
  # running locally
  call = client.calls.create(
    to=to_no,
    from_=from_no,
    url="https://[your_ngrok_subdomain].ngrok.app/incoming-call"
  )

  return {"sid": f"{call.sid}"}

@app.api_route("/incoming-call", methods=["GET", "POST"])
async def handle_incoming_call(req: Request):
  from twilio.twiml.voice_response import VoiceResponse, Connect
  response = VoiceResponse()
  response.say("Connecting to AI assistant")
  connect = Connect()
  connect.stream(url=f'wss://{req.url.hostname}/media-stream')
  response.append(connect)
  return HTMLResponse(content=str(response), media_type="application/xml")

@app.websocket("/media-stream")
async def handle_media_stream(websocket: WebSocket):
  # stream is a FastRTC stream defined elsewhere
  await stream.telephone_handler(websocket)
'''


def fastapi_names() -> dict[str, Any]:
    import os

    from fastapi import FastAPI, Request, WebSocket
    from fastapi.responses import HTMLResponse
    from twilio.rest import Client

    return {"os": os, "FastAPI": FastAPI, "Request": Request, "WebSocket": WebSocket, "HTMLResponse": HTMLResponse, "Client": Client}


async def test_outbound_calls_recipe_answers_the_call_on_the_apps_own_routes(media_dir: Path) -> None:
    """The "Outbound calls with Twilio" example (without its Gradio mount): the app's own
    TwiML route, and its own ``/media-stream`` route handing the socket to ``stream.telephone_handler``."""
    import httpx
    from websockets.asyncio.client import connect
    from ws_support import STREAM_SID, FakeTwilio, echo_graph, expected_reply_s, reply_audio, rms, serve

    from flowrtc.testing import load_audio

    stream = Stream(echo_graph(8000), modality="audio", concurrency_limit=1)
    example = docs(OUTBOUND_CALLS, stream=stream, **fastapi_names())
    clip = load_audio(media_dir / "asterisk_hello-world_8k.wav")
    async with serve(app=example["app"]) as host:
        async with httpx.AsyncClient() as http:
            twiml = await http.post(f"http://{host}/incoming-call", data={"CallSid": "CA" + "b" * 32})
        assert "<Connect><Stream url=\"wss://127.0.0.1/media-stream\" /></Connect>" in twiml.text
        async with connect(f"ws://{host}/media-stream") as ws:
            call = FakeTwilio(ws)
            async with anyio.create_task_group() as group:
                group.start_soon(call.run)
                await call.begin()
                await call.talk([clip, AudioChunk.silence(0.6, 8000)])
                assert stream.hub.transport(STREAM_SID) == "phone"
                await anyio.sleep(expected_reply_s(clip) + 0.3)
                await call.stop()
    replies = call.of("media")
    assert replies and all(m["streamSid"] == STREAM_SID for _, m in replies)
    audio = reply_audio(replies)
    assert abs(len(audio) / 8000 - expected_reply_s(clip)) < 0.1 and rms(audio) > 1000
    assert call.of("mark") and call.close_code == 1000
    assert len(stream.hub) == 0


STREAM_ROUTES = '''
app = FastAPI()

@app.post("/my/offer")
async def my_offer(request: Request):
    return await stream.offer(await request.json())

@app.websocket("/my/websocket")
async def my_websocket(websocket: WebSocket):
    await stream.websocket_offer(websocket)

@app.post("/my/incoming")
async def my_incoming(request: Request):
    return await stream.handle_incoming_call(request)
'''


async def test_stream_route_methods_serve_on_a_fastapi_apps_own_routes(media_dir: Path) -> None:
    """The Stream reference's ``offer``, ``websocket_offer`` and ``handle_incoming_call``, each
    called from a FastAPI route: a real aiortc offer is answered and connects, a FastRTC
    WebSocket client is echoed, and the webhook gets TwiML (or 403 without a valid signature)."""
    import json
    import xml.etree.ElementTree as ET

    import httpx
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from twilio.request_validator import RequestValidator
    from websockets.asyncio.client import connect
    from ws_support import b64, echo_graph, expected_reply_s, mulaw_frames, payload_samples, rms, serve

    from flowrtc.testing import load_audio

    stream = Stream(echo_graph(16000), modality="audio", concurrency_limit=None, twilio_auth_token="12345")
    example = docs(STREAM_ROUTES, stream=stream, **fastapi_names())
    clip = load_audio(media_dir / "asterisk_hello-world_8k.wav", sample_rate=16000)
    async with serve(app=example["app"]) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        # offer: malformed bodies are refused in FastRTC's shape; a real offer connects.
        bad = (await http.post("/my/offer", json={"type": "offer", "sdp": "v=0"})).json()
        assert bad["status"] == "failed" and bad["meta"]["error"] == "invalid_body"
        not_sdp = (await http.post("/my/offer", json={"webrtc_id": "x", "type": "offer", "sdp": "hello"})).json()
        assert not_sdp == {"status": "failed", "meta": {"error": "invalid_sdp", "detail": "the offer has no media sections"}}
        peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            peer.addTransceiver("audio", direction="recvonly")
            await peer.setLocalDescription(await peer.createOffer())
            body = {"webrtc_id": "own-rtc", "type": "offer", "sdp": peer.localDescription.sdp}
            answer = (await http.post("/my/offer", json=body, timeout=20)).json()
            assert answer["type"] == "answer"
            await peer.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            with anyio.fail_after(15):
                while peer.connectionState != "connected":
                    await anyio.sleep(0.05)
            assert stream.hub.transport("own-rtc") == "webrtc"
        finally:
            await peer.close()

        # websocket_offer: FastRTC's protocol, speech in, the echo out.
        reply = []
        async with connect(f"ws://{host}/my/websocket") as ws:
            await ws.send(json.dumps({"event": "start", "websocket_id": "own-ws", "sample_rate": 8000}))
            started = json.loads(await ws.recv())
            assert started["event"] == "started"
            said = load_audio(media_dir / "asterisk_hello-world_8k.wav")
            for frame in mulaw_frames(said) + mulaw_frames(AudioChunk.silence(0.6, 8000)):
                await ws.send(json.dumps({"event": "media", "media": {"payload": b64(frame)}}))
            with anyio.fail_after(15):
                while sum(len(r) for r in reply) < 0.9 * expected_reply_s(clip) * started["output_sample_rate"]:
                    message = json.loads(await ws.recv())
                    if message.get("event") == "media":
                        reply.append(payload_samples(message))
            await ws.send(json.dumps({"event": "stop"}))
        assert rms(np.concatenate(reply)) > 1000

        # handle_incoming_call: TwiML for a signed webhook, 403 otherwise, as a Starlette response.
        form = {"CallSid": "CA" + "b" * 32, "From": "+15551230000"}
        url = f"http://{host}/my/incoming"
        signed = {"X-Twilio-Signature": RequestValidator("12345").compute_signature(url, form)}
        ok = await http.post("/my/incoming", data=form, headers=signed)
        assert ok.status_code == 200 and ok.headers["content-type"].startswith("application/xml")
        stream_el = ET.fromstring(ok.text).find("./Connect/Stream")
        assert stream_el is not None and stream_el.get("url") == f"wss://{host}/telephone/handler"
        assert {p.get("name"): p.get("value") for p in stream_el.findall("Parameter")} == form
        assert (await http.post("/my/incoming", data=form)).status_code == 403
    with anyio.fail_after(10):
        while len(stream.hub):
            await anyio.sleep(0.05)


def test_stream_ui_launch_serves_the_built_in_page(tmp_path: Path) -> None:
    """The last line of most FastRTC apps, ``stream.ui.launch()``, runs unchanged: a real
    server process on Gradio's address options, answering with the page and its config."""
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            f"""
            from fastrtc import ReplyOnPause, Stream

            def echo(audio):
                yield audio

            stream = Stream(handler=ReplyOnPause(echo), modality="audio", mode="send-receive")
            stream.ui.launch(server_name="127.0.0.1", server_port={port}, share=True)
            """
        ).replace("from fastrtc import", "from flowrtc import")
    )
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, str(app)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert page.status_code == 200 and "<html" in page.text.lower()
        assert httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json()["modality"] == "audio"
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert "ignores Gradio's share" in log.read_text()


def test_fastphone_says_what_to_do_instead() -> None:
    from flowrtc.errors import ConfigurationError

    stream = Stream(handler=flowrtc.ReplyOnPause(lambda audio: audio), modality="audio", mode="send-receive")
    with pytest.raises(ConfigurationError, match="/telephone/incoming"):
        stream.fastphone(token="hf_x", host="127.0.0.1", port=8000)


async def test_route_methods_refuse_what_is_not_a_request_or_an_offer() -> None:
    from flowrtc.errors import ConfigurationError

    stream = Stream(handler=flowrtc.ReplyOnPause(lambda audio: audio), modality="audio", mode="send-receive")
    with pytest.raises(ConfigurationError, match="Starlette/FastAPI Request, got dict"):
        await stream.handle_incoming_call({"From": "+15551230000"})
    for body in (None, [], "sdp", {"webrtc_id": 5, "type": "offer", "sdp": "v=0"}, {"webrtc_id": "x", "type": "answer"}):
        answer = await stream.offer(body)
        assert answer["status"] == "failed" and answer["meta"]["error"] == "invalid_body", body
    assert (await stream.offer({"webrtc_id": "x" * 257, "type": "offer", "sdp": "v=0"}))["meta"]["error"] == "invalid_body"
    unknown = await stream.offer({"webrtc_id": "nobody", "type": "ice-candidate", "candidate": {"candidate": ""}})
    assert unknown == {"status": "failed", "meta": {"error": "unknown_connection"}}
