"""Mount a Stream into an existing FastAPI (or Starlette) app, under ``/rtc``.

``mount`` puts the stream's own app (the built-in page, WebRTC, WebSocket and
telephone routes, ``/input_hook``, ``/outputs``, ``/config``) under ``/rtc``. Your
routes stay yours, including the FastRTC-style ones written with the stream's
methods: ``POST /input_hook`` calls ``voice.set_input`` and ``GET /updates``
streams ``voice.output_stream`` as server-sent events.

Mount at a path such as ``/rtc``: mounted at ``""`` the stream's app would catch
every path, hiding the routes you add to ``app`` after it.

    python examples/mount_fastapi.py --port 8000    # open http://127.0.0.1:8000/
    flowrtc run examples/mount_fastapi.py           # the same (serves ``app``)

``starlette_app()`` below mounts the same stream on a plain Starlette app.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, AsyncIterator, Iterator

import numpy as np
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from flowrtc import AdditionalOutputs, ReplyOnPause, Slider, Stream


def echo(audio: tuple[int, np.ndarray], volume: float = 1.0) -> Iterator[Any]:
    """Echo the turn at ``volume``: a second parameter makes ReplyOnPause ask for the inputs each turn."""
    rate, samples = audio
    yield AdditionalOutputs(f"echoing {samples.shape[1] / rate:.1f} s at volume {volume:g}")
    yield rate, np.clip(samples * float(volume), -32768, 32767).astype(np.int16)


# Not called ``stream``: ``flowrtc run`` serves the first of stream, app, graph, handler it finds.
voice = Stream(
    ReplyOnPause(echo),
    modality="audio",
    mode="send-receive",
    additional_inputs=[Slider(minimum=0.0, maximum=2.0, step=0.1, value=1.0, label="Volume")],
)

app = FastAPI(title="My app")


class InputData(BaseModel):
    webrtc_id: str
    volume: float = Field(ge=0.0, le=2.0)


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return '<p>My app. <a href="/rtc/">Talk to the echo</a>.</p>'


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/input_hook")
async def input_hook(data: InputData) -> dict[str, str]:
    voice.set_input(data.webrtc_id, data.volume)  # the handler's next call gets echo(audio, volume)
    return {"status": "ok"}


@app.get("/updates")
async def updates(webrtc_id: str) -> StreamingResponse:
    async def events() -> AsyncIterator[str]:
        async for output in voice.output_stream(webrtc_id):  # ends when the session ends
            yield f"data: {json.dumps(output.args[0])}\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


voice.mount(app, path="/rtc")


def starlette_app() -> Starlette:
    """The same stream mounted on a plain Starlette app."""

    async def starlette_health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    plain = Starlette(routes=[Route("/health", starlette_health)])
    voice.mount(plain, path="/rtc")
    return plain


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the FastAPI app with the stream mounted at /rtc.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    uvicorn.run(app, host=options.host, port=options.port)
