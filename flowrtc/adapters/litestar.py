"""The HTTP face of a Stream: Litestar routes, a ready app, and mounting.

Routes (relative to the mount path; bodies are documented in docs/http-api.md):

=========  ==================  ===============================================
POST       ``/webrtc/offer``   an SDP offer → answer; a trickled ICE candidate
POST       ``/input_hook``     ``{"webrtc_id", "args": [...]}`` → ``set_input``
GET        ``/outputs``        ``?webrtc_id=``: additional outputs (SSE)
GET        ``/config``         what the page needs: ICE servers, inputs, mode
GET        ``/``               the built-in page (+ ``/static/app.js|css``)
=========  ==================  ===============================================

plus the WebSocket and telephone routes of :mod:`flowrtc.adapters.websocket`
when that module is installed. Every error is JSON: FastRTC's
``{"status": "failed", "meta": {"error": ...}}``, with HTTP 200 for refusals
on the offer route (as FastRTC clients expect), 422 for bodies that do not
match the schema, 404 for unknown ids, 413 past the body size limit.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

import anyio
import msgspec
import numpy as np
from litestar import Litestar, Request, Response, Router, get, post
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Stream as StreamingResponse

from flowrtc.adapters.webrtc import SignallingError, WebRTCOptions, webrtc_transport
from flowrtc.errors import ConfigurationError
from flowrtc.ice import aiortc_configuration, clean_ice_servers
from flowrtc.media import AudioChunk, VideoFrame

__all__ = ["HTTPOptions", "OfferBody", "CandidateBody", "answer_offer", "stream_routes", "build_app", "mount", "serve"]

logger = logging.getLogger("flowrtc.http")

_STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class HTTPOptions:
    """HTTP settings.

    Attributes:
        max_body_bytes: largest request body accepted (an SDP offer is 2-10 KiB).
        sse_keepalive_s: seconds between keep-alive comments on ``/outputs``
            (proxies drop idle connections).
        page: serve the built-in page at ``/``.
    """

    max_body_bytes: int = 64 * 1024
    sse_keepalive_s: float = 15.0
    page: bool = True


class CandidateBody(msgspec.Struct):
    """A browser's ``RTCIceCandidate.toJSON()``; an empty ``candidate`` means end-of-candidates."""

    candidate: str
    sdpMid: str | None = None
    sdpMLineIndex: int | None = None
    usernameFragment: str | None = None


class OfferBody(msgspec.Struct):
    """``POST /webrtc/offer``: an offer (``type="offer"``, ``sdp``) or a candidate (``type="ice-candidate"``)."""

    webrtc_id: str
    type: Literal["offer", "ice-candidate"]
    sdp: str | None = None
    candidate: CandidateBody | None = None


async def _signal(transport: Any, body: OfferBody) -> dict[str, Any]:
    """An offer's answer or a candidate's acknowledgement; FastRTC's failure object when refused."""
    try:
        if body.type == "ice-candidate":
            if body.candidate is None:
                raise SignallingError("invalid_candidate_format", detail="an ice-candidate body needs a candidate")
            candidate = {"candidate": body.candidate.candidate, "sdpMid": body.candidate.sdpMid, "sdpMLineIndex": body.candidate.sdpMLineIndex}
            return await transport.add_candidate(body.webrtc_id, candidate)
        if not body.sdp:
            raise SignallingError("invalid_sdp", detail="an offer needs sdp")
        return await transport.offer(body.webrtc_id, body.sdp)
    except SignallingError as refusal:
        return refusal.response()


def _fields(body: Any) -> Any:
    """A body object's fields: a mapping as it is, else a pydantic model, a msgspec struct, a dataclass or plain attributes."""
    if isinstance(body, Mapping):
        return body
    if hasattr(body, "model_dump"):
        return body.model_dump()
    if isinstance(body, msgspec.Struct):
        return msgspec.structs.asdict(body)
    if dataclasses.is_dataclass(body) and not isinstance(body, type):
        return dataclasses.asdict(body)
    return getattr(body, "__dict__", body)


async def answer_offer(stream: Any, body: Any) -> dict[str, Any]:
    """``POST /webrtc/offer`` for a body your own route has read (what :meth:`Stream.offer` does).

    ``body`` is the JSON object as a dict, or a pydantic model, msgspec struct or dataclass
    with its fields (``webrtc_id``, ``type``, ``sdp``, ``candidate``). Returns the SDP answer
    (``{"sdp", "type": "answer"}``), a candidate's acknowledgement, or FastRTC's
    ``{"status": "failed", "meta": {"error": ...}}`` for a body or offer that is refused.
    """
    try:
        offer = msgspec.convert(_fields(body), OfferBody)
    except msgspec.ValidationError as exc:
        return {"status": "failed", "meta": {"error": "invalid_body", "detail": str(exc)}}
    if not offer.webrtc_id or len(offer.webrtc_id) > 256:
        return {"status": "failed", "meta": {"error": "invalid_body", "detail": "webrtc_id must be 1 to 256 characters"}}
    return await _signal(webrtc_transport(stream), offer)


class _Failure(Exception):
    def __init__(self, status_code: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.meta = {"error": error, **extra}


def _failed(status_code: int, error: str, **extra: Any) -> Response[Any]:
    return Response({"status": "failed", "meta": {"error": error, **extra}}, status_code=status_code, media_type="application/json")


def _guard(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Turn every failure of a route into JSON; never a traceback."""

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except _Failure as failure:
            return Response({"status": "failed", "meta": failure.meta}, status_code=failure.status_code, media_type="application/json")
        except Exception:
            logger.exception("%s failed", handler.__name__)
            return _failed(500, "internal_error", detail="the server failed to handle this request; see its log")

    return guarded


async def _read_json(request: Request[Any, Any, Any], limit: int, type: Any) -> Any:
    chunks = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Failure(413, "body_too_large", limit=limit)
            chunks.append(chunk)
    except RequestEntityTooLarge:
        raise _Failure(413, "body_too_large", limit=limit) from None
    try:
        return msgspec.json.decode(b"".join(chunks), type=type)
    except msgspec.ValidationError as exc:
        raise _Failure(422, "invalid_body", detail=str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _Failure(422, "invalid_json", detail=str(exc)) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, AudioChunk):
        return {"sample_rate": value.sample_rate, "duration_s": value.duration_s}
    if isinstance(value, VideoFrame):
        return {"width": value.width, "height": value.height}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


_output_encoder = msgspec.json.Encoder(enc_hook=_json_default)


def encode_outputs(args: Any) -> bytes:
    """JSON text of an AdditionalOutputs' args (arrays become lists, unknown objects their str)."""
    return _output_encoder.encode(list(args))


def _input_spec(spec: Any) -> Any:
    to_dict = getattr(spec, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(spec, dict):
        return spec
    return {"type": "textbox", "label": str(spec), "value": None}


async def _resolve(value: Any) -> Any:
    """A value, or what a sync/async callable returns (credentials are fetched per page load)."""
    if callable(value):
        if inspect.iscoroutinefunction(value):
            return await value()
        value = await anyio.to_thread.run_sync(value)
    if inspect.isawaitable(value):
        value = await value
    return value


def stream_routes(
    stream: Any,
    *,
    http: HTTPOptions | None = None,
    webrtc: WebRTCOptions | None = None,
    tags: list[str] | None = None,
) -> list[Any]:
    """Litestar route handlers for ``stream`` (what :meth:`Stream.routes` returns)."""
    http = http or HTTPOptions()
    aiortc_configuration(stream.server_rtc_configuration)  # a bad server config fails here, not per offer
    transport = webrtc_transport(stream, webrtc)
    limit = http.max_body_bytes
    common: dict[str, Any] = {"tags": tags, "request_max_body_size": limit}

    @post("/webrtc/offer", status_code=200, **common)
    @_guard
    async def webrtc_offer(request: Request[Any, Any, Any]) -> Any:
        body = await _read_json(request, limit, OfferBody)
        if not body.webrtc_id or len(body.webrtc_id) > 256:
            raise _Failure(422, "invalid_body", detail="webrtc_id must be 1 to 256 characters")
        return await _signal(transport, body)

    @post("/input_hook", status_code=200, **common)
    @_guard
    async def input_hook(request: Request[Any, Any, Any]) -> Any:
        body = await _read_json(request, limit, dict[str, Any])
        webrtc_id = body.pop("webrtc_id", None)
        if not isinstance(webrtc_id, str) or not webrtc_id:
            raise _Failure(422, "invalid_body", detail="webrtc_id (a non-empty string) is required")
        if "args" in body:
            args = body.pop("args")
            if not isinstance(args, list) or body:
                raise _Failure(422, "invalid_body", detail="give either 'args' (a list) or named values, not both")
        else:
            args = list(body.values())
        if webrtc_id not in stream.hub:
            raise _Failure(404, "unknown_connection")
        stream.set_input(webrtc_id, *args)
        return {"status": "success"}

    # Litestar lets the route's media type override a streaming response's own.
    @get("/outputs", tags=tags, media_type="text/event-stream")
    @_guard
    async def outputs(request: Request[Any, Any, Any]) -> Any:
        webrtc_id = request.query_params.get("webrtc_id")
        if not webrtc_id:
            raise _Failure(422, "invalid_query", detail="webrtc_id query parameter is required")
        if webrtc_id not in stream.hub:
            raise _Failure(404, "unknown_connection")
        return StreamingResponse(_sse(stream, webrtc_id, http.sse_keepalive_s), media_type="text/event-stream", headers=_SSE_HEADERS)

    @get("/config", tags=tags)
    @_guard
    async def config() -> Any:
        rtc = await _resolve(stream.rtc_configuration)
        if rtc is not None:
            rtc = dict(rtc) if isinstance(rtc, dict) else {"iceServers": rtc}
            rtc["iceServers"] = clean_ice_servers(rtc)
        return {
            "modality": stream.modality,
            "mode": stream.mode,
            "rtc_configuration": rtc,
            "track_constraints": stream.track_constraints,
            "rtp_params": stream.rtp_params,
            "additional_inputs": [_input_spec(spec) for spec in stream.additional_inputs],
            "additional_outputs": [_input_spec(spec) for spec in stream.additional_outputs],
            "time_limit": stream.time_limit,
            "concurrency_limit": stream.concurrency_limit,
            "ui_args": stream.ui_args,
        }

    handlers: list[Any] = [webrtc_offer, input_hook, outputs, config]
    if http.page:
        handlers.extend(_page_routes(tags))
    handlers.extend(_websocket_routes(stream))
    return handlers


def _page_routes(tags: list[str] | None) -> list[Any]:
    files = resources.files("flowrtc.static")
    index_html = (files / "index.html").read_bytes()
    assets = {name: (files / name).read_bytes() for name in _STATIC}

    @get("/", tags=tags, include_in_schema=False)
    async def page(request: Request[Any, Any, Any]) -> Response[bytes]:
        raw = request.scope.get("raw_path") or request.scope["path"].encode()
        path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
        if not path.endswith("/"):
            # The page's URLs are relative (so it works behind any prefix): it must end in '/'.
            return Response(b"", status_code=307, headers={"Location": path.rsplit("/", 1)[-1] + "/"})
        return Response(index_html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @get("/static/{name:str}", tags=tags, include_in_schema=False)
    async def static(request: Request[Any, Any, Any]) -> Response[bytes]:
        name = request.path_params["name"]
        if name not in assets:
            return _failed(404, "not_found")
        return Response(assets[name], media_type=_STATIC[name], headers={"Cache-Control": "no-cache"})

    return [page, static]


def _websocket_routes(stream: Any) -> list[Any]:
    """The WebSocket/telephone routes, if that adapter is part of this install."""
    try:
        from flowrtc.adapters import websocket
    except ImportError:
        return []
    factory = getattr(websocket, "websocket_route_handlers", None)
    return list(factory(stream)) if callable(factory) else []


async def _sse(stream: Any, webrtc_id: str, keepalive_s: float) -> AsyncIterator[bytes]:
    """``event: output`` per AdditionalOutputs (data: the args as a JSON list), ``event: end`` at the end."""
    send, receive = anyio.create_memory_object_stream[Any](8)

    async def produce() -> None:
        with send:
            async for item in stream.output_stream(webrtc_id):
                await send.send(item)

    with send, receive:
        async with anyio.create_task_group() as group:
            group.start_soon(produce)
            yield b": connected\n\n"
            while True:
                item = None
                with anyio.move_on_after(keepalive_s):
                    try:
                        item = await receive.receive()
                    except anyio.EndOfStream:
                        break
                if item is None:
                    yield b": keepalive\n\n"
                    continue
                yield b"event: output\ndata: " + encode_outputs(item.args) + b"\n\n"
            yield b"event: end\ndata: {}\n\n"
            group.cancel_scope.cancel()


def _shutdown_hook(stream: Any) -> Callable[[], Awaitable[None]]:
    async def close_peers() -> None:
        await webrtc_transport(stream).aclose()

    return close_peers


def build_app(stream: Any, *, http: HTTPOptions | None = None, webrtc: WebRTCOptions | None = None, **litestar_kwargs: Any) -> Litestar:
    """A Litestar app serving only ``stream`` (what :meth:`Stream.app` returns)."""
    on_shutdown = list(litestar_kwargs.pop("on_shutdown", []))
    on_shutdown.append(_shutdown_hook(stream))
    # Litestar's default logging config takes over the root logger at INFO (aioice then logs
    # every ICE check); leave logging to the application.
    litestar_kwargs.setdefault("logging_config", None)
    return Litestar(route_handlers=stream_routes(stream, http=http, webrtc=webrtc), on_shutdown=on_shutdown, **litestar_kwargs)


def mount(stream: Any, app: Any, path: str = "", *, tags: list[str] | None = None, http: HTTPOptions | None = None, webrtc: WebRTCOptions | None = None) -> None:
    """Add ``stream``'s routes to a Litestar app, or mount its app on a Starlette/FastAPI app.

    On a Starlette/FastAPI app the mount serves only the stream's own paths, and a
    route the app defines itself wins even when added after this call (FastRTC's
    ``stream.mount(app)`` then ``@app.post("/input_hook")`` pattern works).
    """
    if path and not path.startswith("/"):
        raise ConfigurationError(f"mount path must start with '/', got {path!r}")
    path = path.rstrip("/")
    if isinstance(app, Litestar):
        app.register(Router(path=path or "/", route_handlers=stream_routes(stream, http=http, webrtc=webrtc, tags=tags)))
        app.on_shutdown.append(_shutdown_hook(stream))
        return
    if hasattr(app, "mount") and hasattr(app, "router"):
        from flowrtc.adapters.asgi import mount_on_starlette

        mount_on_starlette(app, path, build_app(stream, http=http, webrtc=webrtc), on_shutdown=_shutdown_hook(stream))
        return
    raise ConfigurationError(
        f"mount() takes a Litestar, Starlette or FastAPI app, not {type(app).__name__}; "
        "for any other ASGI router, route a path to stream.app()"
    )


def serve(stream: Any, *, host: str = "127.0.0.1", port: int = 8000, **uvicorn_options: Any) -> None:
    """Run ``stream.app()`` under uvicorn (blocking) and print where the page is.

    The garbage collector is set up for serving first (:func:`flowrtc.runtime.tune_gc_for_serving`).
    """
    import uvicorn

    from flowrtc.runtime import tune_gc_for_serving

    uvicorn_options.setdefault("timeout_graceful_shutdown", 5)  # open /outputs streams would hold shutdown
    uvicorn_options.setdefault("log_level", "warning")
    shown = f"[{host}]" if ":" in host else host
    app = stream.app()
    tune_gc_for_serving()
    print(f"flowrtc: serving {stream!r} at http://{shown}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, **uvicorn_options)
