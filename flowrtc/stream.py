"""``Stream``: the FastRTC-compatible facade over graphs, sessions and transports.

A Stream pairs a handler (a classic handler object, a function, or any
:class:`~flowrtc.graph.Graph`) with a modality and mode, builds a fresh graph
per connection, and enforces the limits that hold across every transport.
Transports open sessions through :meth:`Stream.session`.
"""

from __future__ import annotations

import os
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Literal, Sequence

from flowrtc.errors import ConfigurationError
from flowrtc.events import AdditionalOutputs
from flowrtc.graph import Graph
from flowrtc.hub import SessionHub
from flowrtc.inputs import InputSpec, as_input, input_values
from flowrtc.limits import Limits
from flowrtc.operators.core import operator, scoped
from flowrtc.session import Session, current_session

__all__ = ["Stream", "PageUI", "Modality", "Mode"]

Modality = Literal["audio", "video", "audio-video"]
Mode = Literal["send-receive", "send", "receive"]

_MODALITIES = ("audio", "video", "audio-video")
_MODES = ("send-receive", "send", "receive")
DEFAULT_CONCURRENCY_LIMIT = 1


@operator
async def publish_outputs(source: Any, hub: SessionHub) -> Any:
    """Copy every AdditionalOutputs to the hub (for ``output_stream``) and pass it on."""
    session = current_session()
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AdditionalOutputs) and session is not None:
                hub.publish(session.id, item)
            yield item


class Stream:
    """Serve a handler over WebRTC, WebSocket and phone calls.

    Args mirror FastRTC's ``Stream``:
        handler: a StreamHandler/AsyncStreamHandler (ReplyOnPause, ...), a video
            function, a receive-mode generator, or a flowrtc Graph.
        mode: ``"send-receive"``, ``"send"`` or ``"receive"``.
        modality: ``"audio"``, ``"video"`` or ``"audio-video"``. Default: what the handler
            serves: audio for StreamHandlers (ReplyOnPause, ...), audio-video for
            AudioVideoStreamHandlers, video otherwise (FastRTC's default).
        concurrency_limit: most sessions at once over all transports; ``"default"`` is 1
            (FastRTC's default), ``None`` means no limit.
        time_limit: seconds a session may last, on every transport (``None``: no limit).
        allow_extra_tracks: ignore tracks of another kind instead of refusing them.
        rtp_params, rtc_configuration, server_rtc_configuration, track_constraints:
            WebRTC settings (client ICE config, server ICE config, capture constraints).
        additional_inputs: the handler's extra arguments, as :mod:`flowrtc.inputs` specs
            (``Slider``, ``Number``, ``Textbox``, ``Checkbox``, ``Dropdown``) or any object with
            a ``.value`` (a Gradio component works; gradio is not imported). The built-in page
            renders them; their values are the arguments until ``set_input`` sends others.
        limits: message size, payload size, message rate, connection and output bounds
            for every network route (:class:`~flowrtc.limits.Limits`; defaults documented there).
        twilio_auth_token: check ``X-Twilio-Signature`` on the telephone routes with this
            token (default: the ``TWILIO_AUTH_TOKEN`` environment variable; no check without one).
        additional_outputs, additional_outputs_handler, ui_args: kept for FastRTC code; the
            built-in page shows additional outputs as they arrive.
    """

    def __init__(
        self,
        handler: Any,
        *,
        additional_outputs_handler: Callable[..., Any] | None = None,
        mode: Mode = "send-receive",
        modality: Modality | None = None,
        concurrency_limit: int | None | Literal["default"] = "default",
        time_limit: float | None = None,
        allow_extra_tracks: bool = False,
        rtp_params: dict[str, Any] | None = None,
        rtc_configuration: dict[str, Any] | Callable[[], Any] | None = None,
        server_rtc_configuration: dict[str, Any] | None = None,
        track_constraints: dict[str, Any] | None = None,
        additional_inputs: Sequence[Any] | None = None,
        additional_outputs: Sequence[Any] | None = None,
        ui_args: dict[str, Any] | None = None,
        verbose: bool = True,
        limits: Limits | None = None,
        twilio_auth_token: str | None = None,
    ) -> None:
        if modality is None:
            from flowrtc.handlers.build import default_modality

            modality = default_modality(handler)  # type: ignore[assignment]
        if modality not in _MODALITIES:
            raise ConfigurationError(f"modality must be one of {_MODALITIES}, got {modality!r}")
        if mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {_MODES}, got {mode!r}")
        if concurrency_limit == "default":
            concurrency_limit = DEFAULT_CONCURRENCY_LIMIT
        if concurrency_limit is not None and (not isinstance(concurrency_limit, int) or concurrency_limit < 1):
            raise ConfigurationError(f"concurrency_limit must be a positive int, 'default' or None, got {concurrency_limit!r}")
        if time_limit is not None and time_limit <= 0:
            raise ConfigurationError(f"time_limit must be positive seconds, got {time_limit!r}")
        from flowrtc.handlers.build import graph_factory

        self.handler = handler
        self.mode: Mode = mode
        self.modality: Modality = modality  # type: ignore[assignment]
        self.concurrency_limit = concurrency_limit
        self.time_limit = time_limit
        self.allow_extra_tracks = allow_extra_tracks
        self.rtp_params = rtp_params
        self.rtc_configuration = rtc_configuration
        self.server_rtc_configuration = server_rtc_configuration
        self.track_constraints = track_constraints
        self.additional_inputs: list[InputSpec] = [as_input(spec) for spec in additional_inputs or []]
        self.additional_outputs = list(additional_outputs or [])
        self.additional_outputs_handler = additional_outputs_handler
        self.ui_args = dict(ui_args or {})
        self.verbose = verbose
        self.limits = limits if limits is not None else Limits()
        self.twilio_auth_token = twilio_auth_token
        self.hub = SessionHub(concurrency_limit)
        self._graph_factory = graph_factory(handler, modality=modality, mode=mode, stream=self)

    # -- what the handler takes and gives ---------------------------------------------
    @property
    def input_sample_rate(self) -> int | None:
        """Rate in Hz the handler's audio input is converted to (``None``: no audio input).

        The graph resamples whatever a transport delivers; a transport that must tell
        its client a rate (the WebSocket protocol) uses this one.
        """
        if self.modality == "video" or self.mode == "receive":
            return None
        return int(getattr(self.handler, "input_sample_rate", 48000))

    @property
    def output_sample_rate(self) -> int | None:
        """Rate in Hz of the audio the graph emits (``None``: no audio, or as yielded by a generator)."""
        if self.modality == "video" or self.mode == "send":
            return None
        rate = getattr(self.handler, "output_sample_rate", None)
        return int(rate) if rate is not None else None

    @property
    def event_handler(self) -> Any:
        """FastRTC's name for :attr:`handler`."""
        return self.handler

    @property
    def additional_input_components(self) -> list[InputSpec]:
        """FastRTC's name for :attr:`additional_inputs`."""
        return self.additional_inputs

    @property
    def additional_output_components(self) -> list[Any]:
        """FastRTC's name for :attr:`additional_outputs`."""
        return self.additional_outputs

    def input_values(self) -> list[Any]:
        """The additional inputs' default values: the handler's extra arguments until ``set_input``."""
        return input_values(self.additional_inputs)

    # -- sessions ------------------------------------------------------------------
    def graph(self) -> Graph:
        """A fresh graph for one session (handlers are copied per connection)."""
        inner = self._graph_factory()
        hub = self.hub
        return Graph(
            build=lambda ports: [publish_outputs(s, hub) for s in inner.open(ports)],
            name=inner.name,
            modality=inner.modality,
            message_port=inner.message_port,
        )

    @asynccontextmanager
    async def session(
        self,
        session_id: str,
        *,
        transport: str,
        phone_mode: bool = False,
        transport_object: Any = None,
        **session_options: Any,
    ) -> AsyncIterator[Session]:
        """Open one session: take a concurrency slot, run the graph, free everything on exit.

        Raises :class:`~flowrtc.hub.ConcurrencyLimitReached` or
        :class:`~flowrtc.hub.ConnectionExists` before anything starts.
        """
        self.hub.reserve(session_id, transport=transport)
        try:
            graph = self.graph()
            async with Session(
                graph,
                session_id=session_id,
                time_limit_s=self.time_limit,
                phone_mode=phone_mode,
                transport=transport_object,
                **session_options,
            ) as session:
                self.hub.attach(session_id, session)
                yield session
        finally:
            self.hub.release(session_id)

    # -- FastRTC's methods -----------------------------------------------------------
    def set_input(self, webrtc_id: str, *args: Any) -> None:
        """Set the handler's extra arguments for one session; the next call sees them."""
        self.hub.set_input(webrtc_id, *args)

    async def output_stream(self, webrtc_id: str) -> AsyncIterator[AdditionalOutputs]:
        """Additional outputs of one session; ends when the session ends."""
        async for outputs in self.hub.output_stream(webrtc_id):
            yield outputs

    async def fetch_latest_output(self, webrtc_id: str, timeout_s: float = 10.0) -> AdditionalOutputs | None:
        """The next additional output of one session (``None`` after ``timeout_s``)."""
        return await self.hub.fetch_latest_output(webrtc_id, timeout_s)

    async def call(self, to: str, from_: str, url: str, **options: Any) -> str:
        """Place an outbound phone call through Twilio, answered by this stream.

        ``url`` is the public base URL where this stream's routes are served
        (``https://example.com[/prefix]``). Returns the call SID. Options: see
        :func:`flowrtc.adapters.twilio.place_call` (``parameters``, ``account_sid``,
        ``auth_token``, ``client``, and any ``calls.create`` argument).
        """
        from flowrtc.adapters.twilio import place_call

        return await place_call(self, to, from_, url, **options)

    # -- FastRTC's route methods, for routes of your own ------------------------------------
    async def offer(self, body: Any) -> dict[str, Any]:
        """Answer a WebRTC offer (or add a trickled ICE candidate) posted to a route of your own.

        ``body`` is what the client posted to ``/webrtc/offer``: a dict, or a pydantic
        model, msgspec struct or dataclass with its fields. Returns the answer
        (``{"sdp", "type": "answer"}``) or FastRTC's ``{"status": "failed", "meta": {...}}``.
        """
        from flowrtc.adapters.litestar import answer_offer

        return await answer_offer(self, body)

    async def websocket_offer(self, websocket: Any) -> None:
        """Serve FastRTC's WebSocket protocol on a WebSocket route of your own, until the client leaves.

        ``websocket`` is a FastAPI/Starlette or Litestar ``WebSocket``, not yet accepted.
        The same limits hold as on the built-in ``/websocket/offer``.
        """
        from flowrtc.adapters.websocket import serve_websocket

        await serve_websocket(self, websocket)

    async def telephone_handler(self, websocket: Any) -> None:
        """Serve a Twilio Media Stream on a WebSocket route of your own (FastRTC's outbound-call recipe).

        ``websocket`` is a FastAPI/Starlette or Litestar ``WebSocket``, not yet accepted.
        The call runs in phone mode, counts toward ``concurrency_limit``, and with an auth
        token its upgrade must carry a valid ``X-Twilio-Signature``.
        """
        from flowrtc.adapters.twilio import serve_telephone

        await serve_telephone(self, websocket)

    async def handle_incoming_call(self, request: Any, *, stream_url: str | None = None) -> Any:
        """Answer Twilio's voice webhook on a route of your own with TwiML that connects the call.

        ``request`` is a FastAPI/Starlette or Litestar ``Request``; the response is of the
        same framework. The call is connected to ``stream_url``, by default
        ``wss://<host>/telephone/handler`` (the route :meth:`mount` adds); pass the URL of
        your own :meth:`telephone_handler` route otherwise.
        """
        from flowrtc.adapters.twilio import incoming_call

        respond = _responder(request)
        status, body, media_type = await incoming_call(self, request, stream_url=stream_url)
        return respond(body, status_code=status, media_type=media_type)

    # -- serving (flowrtc.adapters.litestar) -----------------------------------------------
    def routes(self, **options: Any) -> list[Any]:
        """Litestar route handlers for this stream (offer, input hook, outputs, page, ...).

        Options: ``http=HTTPOptions(...)``, ``webrtc=WebRTCOptions(...)``, ``tags=[...]``.
        """
        from flowrtc.adapters.litestar import stream_routes

        return stream_routes(self, **options)

    def app(self, **options: Any) -> Any:
        """A ready Litestar (ASGI) app serving this stream; mount it under any ASGI router."""
        from flowrtc.adapters.litestar import build_app

        return build_app(self, **options)

    def mount(self, app: Any, path: str = "", **options: Any) -> None:
        """Add this stream's routes to a Litestar app (or mount its app on a Starlette/FastAPI app) at ``path``."""
        from flowrtc.adapters.litestar import mount

        mount(self, app, path, **options)

    def launch(self, host: str = "127.0.0.1", port: int = 8000, **uvicorn_options: Any) -> None:
        """Serve :meth:`app` with uvicorn until interrupted (prints the page's URL)."""
        from flowrtc.adapters.litestar import serve

        serve(self, host=host, port=port, **uvicorn_options)

    @property
    def ui(self) -> PageUI:
        """FastRTC's ``stream.ui``, so ``stream.ui.launch()`` runs unchanged: it serves the built-in page.

        FastRTC's ``ui`` is a Gradio app; flowrtc has no Gradio. Only ``launch`` is offered
        (see :class:`PageUI`); ``gr.mount_gradio_app(app, stream.ui, ...)`` has no
        counterpart: use :meth:`mount`.
        """
        return PageUI(self)

    def fastphone(self, *args: Any, **kwargs: Any) -> None:
        """Not available: FastRTC's temporary phone number comes from a Hugging Face service.

        Raises :class:`~flowrtc.errors.ConfigurationError` saying what to do instead: point a
        Twilio number's voice webhook at ``/telephone/incoming`` (docs/websocket-and-phone.md).
        """
        raise ConfigurationError(
            "stream.fastphone() needs FastRTC's Hugging Face phone service, which flowrtc does not use: "
            "serve the stream (stream.launch() or flowrtc run) and point a Twilio number's voice webhook "
            "at https://<your host>/telephone/incoming (docs/websocket-and-phone.md)"
        )

    def __repr__(self) -> str:
        return f"Stream(modality={self.modality!r}, mode={self.mode!r}, handler={type(self.handler).__name__})"


class PageUI:
    """What ``stream.ui`` is in flowrtc: a ``launch`` that serves the built-in page, as FastRTC's Gradio UI did.

    ``launch(server_name=..., server_port=...)`` takes Gradio's names for the address: the host
    defaults to ``127.0.0.1`` (or ``GRADIO_SERVER_NAME``), the port to Gradio's 7860 (or
    ``GRADIO_SERVER_PORT``). Gradio's other options (``share``, ``inbrowser``, ...) have no
    counterpart and are ignored with a warning.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def launch(self, server_name: str | None = None, server_port: int | None = None, **gradio_options: Any) -> None:
        """Serve the stream's app with its built-in page until interrupted (blocking)."""
        ignored = sorted(name for name, value in gradio_options.items() if value not in (None, False))
        if ignored:
            warnings.warn(f"stream.ui.launch() ignores Gradio's {', '.join(ignored)}: flowrtc serves its own page", stacklevel=2)
        host = server_name or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
        port = server_port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
        self.stream.launch(host=host, port=port)


def _responder(request: Any) -> Callable[..., Any]:
    """The response class of the framework ``request`` came from (Litestar, else Starlette/FastAPI)."""
    from litestar import Request as LitestarRequest

    if isinstance(request, LitestarRequest):
        from litestar import Response

        return Response
    try:
        from starlette.requests import Request as StarletteRequest
        from starlette.responses import Response as StarletteResponse
    except ImportError:
        pass
    else:
        if isinstance(request, StarletteRequest):
            return StarletteResponse
    raise ConfigurationError(f"expected a Litestar or Starlette/FastAPI Request, got {type(request).__name__}")
