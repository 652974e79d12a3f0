"""Mount a Stream into an existing Litestar app, under ``/rtc``.

Your app keeps its own routes (here ``/`` and ``/health``); ``mount`` adds the
stream's under the prefix: the built-in page at ``/rtc/``, ``/rtc/webrtc/offer``,
``/rtc/websocket/offer``, ``/rtc/telephone/incoming`` and ``/rtc/telephone/handler``,
``/rtc/input_hook``, ``/rtc/outputs`` and ``/rtc/config`` (see docs/http-api.md).
On a Litestar app the routes are registered on the app itself, so they share its
middleware, OpenAPI schema and shutdown.

    python examples/mount_litestar.py --port 8000   # open http://127.0.0.1:8000/
    flowrtc run examples/mount_litestar.py          # the same (serves ``app``)
"""

from __future__ import annotations

import argparse
from typing import Any, Iterator

import numpy as np
from litestar import Litestar, MediaType, get

from flowrtc import ReplyOnPause, Stream


def echo(audio: tuple[int, np.ndarray]) -> Iterator[Any]:
    yield audio


# Not called ``stream``: ``flowrtc run`` serves the first of stream, app, graph, handler it finds.
voice = Stream(ReplyOnPause(echo), modality="audio", mode="send-receive", concurrency_limit=5)


@get("/", media_type=MediaType.HTML)
async def index() -> str:
    return '<p>My app. <a href="/rtc/">Talk to the echo</a>.</p>'


@get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app = Litestar(route_handlers=[index, health])
voice.mount(app, path="/rtc")


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the Litestar app with the stream mounted at /rtc.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    options = parser.parse_args()
    uvicorn.run(app, host=options.host, port=options.port)
