"""Phone calls through Twilio: the TwiML webhook, Media Streams, signatures, outbound calls.

* ``POST /telephone/incoming`` (or ``GET``, as a Twilio number can be set to) answers
  Twilio's voice webhook with TwiML that connects the call to
  ``wss://HOST[:port]/<prefix>/telephone/handler`` and passes the caller's details
  (From, To, CallSid, ...) as ``<Parameter>``\\ s.
* ``WS /telephone/handler`` speaks Media Streams: ``connected``/``start``/``media``/
  ``mark``/``dtmf``/``stop`` in, ``media``/``mark``/``clear`` out, 8 kHz µ-law,
  20 ms frames paced in real time. The session runs in phone mode and counts
  toward ``concurrency_limit``. On :class:`~flowrtc.events.Interrupt` Twilio gets
  ``clear``, so the caller stops hearing the old reply at once; a ``mark`` after
  each batch of reply audio comes back as a :class:`~flowrtc.events.PlaybackMark`
  once that audio has played; keypad digits arrive as :class:`~flowrtc.events.Dtmf`.
* With an auth token (``Stream(twilio_auth_token=...)`` or ``TWILIO_AUTH_TOKEN``)
  the webhook (403) and the WebSocket upgrade (refused, HTTP 403) must carry a
  valid ``X-Twilio-Signature``.
* :func:`incoming_call` and :func:`serve_telephone` do the same for routes of your own
  (``Stream.handle_incoming_call`` and ``Stream.telephone_handler``).
"""

from __future__ import annotations

import binascii
import functools
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import parse_qsl

import anyio.to_thread
from litestar import Request, Response, WebSocket, route, websocket
from litestar.datastructures import Headers
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, VoiceResponse

from flowrtc.adapters.websocket import MediaSocket, connection_slots, decode_base64, decode_json, stream_limits
from flowrtc.errors import ConfigurationError
from flowrtc.events import Dtmf, PlaybackMark
from flowrtc.g711 import pcm16_to_mulaw
from flowrtc.hub import ConcurrencyLimitReached
from flowrtc.limits import CLOSE_CODES, Limits, WireError
from flowrtc.media import AudioChunk
from flowrtc.session import Session, current_session

if TYPE_CHECKING:
    from twilio.rest import Client

    from flowrtc.stream import Stream

__all__ = ["telephone_route_handlers", "incoming_call", "serve_telephone", "TwilioSocket", "TwilioCall", "current_call", "connect_twiml", "place_call"]

logger = logging.getLogger("flowrtc.twilio")

INCOMING_PATH = "/telephone/incoming"
HANDLER_PATH = "/telephone/handler"
PHONE_RATE = 8000
#: Webhook fields handed on to the stream as ``<Parameter>``\ s (``start.customParameters``).
PASSED_PARAMETERS = ("CallSid", "AccountSid", "From", "To", "Direction", "CallerName", "ForwardedFrom")
#: A long reply gets a mark at least this often (seconds of audio).
MARK_INTERVAL_S = 1.0
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_CALL_SCOPE_KEY = "flowrtc.twilio_call"


@dataclass(frozen=True)
class TwilioCall:
    """What Twilio's ``start`` message says about the call of the current session."""

    stream_sid: str
    call_sid: str = ""
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)


def current_call() -> TwilioCall | None:
    """The Twilio call of the session running in this task or thread (``None`` off the phone)."""
    session = current_session()
    scope = getattr(getattr(session, "transport", None), "scope", None)
    return scope.get(_CALL_SCOPE_KEY) if isinstance(scope, dict) else None


def auth_token(stream: Any) -> str | None:
    return getattr(stream, "twilio_auth_token", None) or os.environ.get("TWILIO_AUTH_TOKEN") or None


def _first(headers: Headers, name: str) -> str | None:
    value = headers.get(name)
    return value.split(",")[0].strip() or None if value else None


def public_host(headers: Headers, fallback: str) -> str:
    """The host (with its port) the caller used: ``X-Forwarded-Host``, else ``Host``."""
    return _first(headers, "x-forwarded-host") or headers.get("host") or fallback


def connect_twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """TwiML connecting a call to a bidirectional Media Stream at ``stream_url``."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url)
    for name, value in (parameters or {}).items():
        stream.parameter(name=name, value=value)
    response.append(connect)
    return str(response)


def _handler_url(base_url: str) -> str:
    scheme, sep, rest = base_url.partition("://")
    if not sep:
        raise ConfigurationError(f"url must be this app's public base URL, like https://example.com, got {base_url!r}")
    ws_scheme = {"https": "wss", "wss": "wss", "http": "ws", "ws": "ws"}.get(scheme.lower())
    if ws_scheme is None:
        raise ConfigurationError(f"url must start with https:// (or http://), got {base_url!r}")
    return f"{ws_scheme}://{rest.rstrip('/')}{HANDLER_PATH}"


class TwilioSocket(MediaSocket):
    """Twilio's Media Streams protocol (bidirectional ``<Connect><Stream>``)."""

    transport = "phone"
    phone_mode = True
    marks_batches = True

    def __init__(self, socket: WebSocket, stream: Stream, limits: Limits) -> None:
        super().__init__(socket, stream, limits)
        self.input_rate = self.output_rate = PHONE_RATE
        self.stream_sid = ""
        self._sid_json = '""'
        self._marks = 0
        self._pending_marks: dict[str, float] = {}
        self._cleared_marks: set[str] = set()
        self._unmarked_s = 0.0
        self._played_to_s = 0.0

    async def wait_for_start(self) -> str | None:
        while True:
            received = await self.receive_event(WireError("unsupported_data", "Media Streams messages are JSON text"))
            if received is None:
                return None
            event, message = received
            if event == "start":
                return self._start(message)
            if event == "stop":
                return None
            if event in ("media", "mark", "dtmf"):
                raise WireError("not_started", f"{event} before start")
            if event != "connected":
                logger.debug("ignoring Media Streams event %r before start", event)

    def _start(self, message: dict[str, Any]) -> str:
        start = message.get("start")
        if not isinstance(start, dict):
            raise WireError("bad_message", "start needs a start object")
        sid = message.get("streamSid") or start.get("streamSid")
        if not isinstance(sid, str) or not 0 < len(sid) <= 64:
            raise WireError("bad_message", "start needs a streamSid")
        media_format = start.get("mediaFormat") or {}
        if not isinstance(media_format, dict) or (
            media_format.get("encoding", "audio/x-mulaw"),
            str(media_format.get("sampleRate", PHONE_RATE)),
            str(media_format.get("channels", 1)),
        ) != ("audio/x-mulaw", str(PHONE_RATE), "1"):
            raise WireError("bad_message", "only audio/x-mulaw at 8000 Hz, mono, is supported")
        params = start.get("customParameters") or {}
        if not isinstance(params, dict):
            raise WireError("bad_message", "start.customParameters must be an object")
        self.stream_sid = sid
        self._sid_json = '"' + sid.replace("\\", "\\\\").replace('"', '\\"') + '"'
        self.socket.scope[_CALL_SCOPE_KEY] = TwilioCall(  # type: ignore[literal-required]
            stream_sid=sid,
            call_sid=str(start.get("callSid", "")),
            account_sid=str(start.get("accountSid", "")),
            custom_parameters={str(k): str(v) for k, v in params.items()},
        )
        return sid

    async def handle(self, session: Session, data: str | bytes) -> bool:
        if isinstance(data, bytes):
            raise WireError("unsupported_data", "Media Streams messages are JSON text")
        message = decode_json(data)
        event = message["event"]
        if event == "media":
            media = message.get("media")
            if not isinstance(media, dict):
                raise WireError("bad_message", "media needs a media object")
            if media.get("track", "inbound") in ("inbound", "inbound_track"):
                payload = decode_base64(media.get("payload"))
                if len(payload) > self.limits.max_payload_bytes:
                    raise WireError("payload_too_large", f"audio payloads are limited to {self.limits.max_payload_bytes} bytes")
                if payload:
                    await self.deliver(session, AudioChunk.from_mulaw(payload, PHONE_RATE, pts=self.input_pts))
        elif event == "dtmf":
            dtmf = message.get("dtmf")
            digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
            if not isinstance(digit, str) or digit not in _DTMF_DIGITS:
                raise WireError("bad_message", "dtmf needs dtmf.digit (0-9, *, #, A-D)")
            await self.deliver_event(session, Dtmf(digit=digit, media_time_s=self.input_time_s))
        elif event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                raise WireError("bad_message", "mark needs mark.name")
            await self._mark_played(session, name)
        elif event == "stop":
            return False
        elif event == "start":
            raise WireError("already_started", "start was already received")
        else:  # connected again, or an event newer than this code: Twilio may add some
            logger.debug("ignoring Media Streams event %r", event)
        return True

    async def _mark_played(self, session: Session, name: str) -> None:
        played_to_s = self._pending_marks.pop(name, None)
        if played_to_s is not None:
            await self.deliver_event(session, PlaybackMark(name=name, media_time_s=played_to_s))
        else:
            # Echoes of marks that a clear cut short: that audio never played.
            self._cleared_marks.discard(name)

    async def send_frame(self, frame: AudioChunk) -> None:
        payload = binascii.b2a_base64(pcm16_to_mulaw(frame.to_int16().samples[0]).tobytes(), newline=False).decode()
        await self.send_text('{"event":"media","streamSid":' + self._sid_json + ',"media":{"payload":"' + payload + '"}}')

    async def after_frame(self, frame: AudioChunk) -> None:
        self._played_to_s = frame.end_pts / frame.sample_rate
        self._unmarked_s += frame.duration_s
        if self._unmarked_s >= MARK_INTERVAL_S:
            await self._send_mark()

    async def end_batch(self) -> None:
        if self._unmarked_s > 0:
            await self._send_mark()

    async def _send_mark(self) -> None:
        self._marks += 1
        name = f"flowrtc-{self._marks}"
        self._pending_marks[name] = self._played_to_s
        self._unmarked_s = 0.0
        await self.send_text('{"event":"mark","streamSid":' + self._sid_json + ',"mark":{"name":"' + name + '"}}')

    async def send_clear(self) -> None:
        self._cleared_marks.update(self._pending_marks)
        self._pending_marks.clear()
        self._unmarked_s = 0.0
        await self.send_text('{"event":"clear","streamSid":' + self._sid_json + "}")


def _valid_upgrade(socket: Any, token: str) -> bool:
    signature = socket.headers.get("x-twilio-signature", "")
    if not signature:
        return False
    host = public_host(socket.headers, socket.url.netloc)
    path = socket.url.path + (f"?{socket.url.query}" if socket.url.query else "")
    validator = RequestValidator(token)
    # Twilio signs the URL of the <Stream>; its docs do not say which scheme spelling.
    return any(validator.validate(f"{scheme}://{host}{path}", {}, signature) for scheme in ("wss", "https"))


async def _webhook_form(request: Any, limit: int) -> dict[str, str] | None:
    """The webhook's urlencoded fields (``None`` past ``limit`` bytes), read the same way in any framework."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


async def incoming_call(stream: Stream, request: Any, *, stream_url: str | None = None) -> tuple[int, str, str]:
    """Answer Twilio's voice webhook for ``stream``: ``(status, body, media type)``.

    ``request`` is a Litestar or a Starlette/FastAPI ``Request``. The TwiML connects the
    call to ``stream_url``, by default this app's ``/telephone/handler`` (under the same
    prefix as the webhook when that is ``.../telephone/incoming``). With an auth token, a
    request without a valid ``X-Twilio-Signature`` gets 403.
    """
    if request.method == "GET":  # a webhook configured as GET: the fields are in the (signed) URL
        form: dict[str, str] | None = dict(parse_qsl(request.url.query, keep_blank_values=True))
        signed_fields: dict[str, str] = {}
    else:
        form = signed_fields = await _webhook_form(request, stream_limits(stream).max_message_bytes)
    if form is None:
        return 413, "webhook body too large", "text/plain"
    token = auth_token(stream)
    host = public_host(request.headers, request.url.netloc)
    if token:
        scheme = _first(request.headers, "x-forwarded-proto") or request.url.scheme
        query = f"?{request.url.query}" if request.url.query else ""
        signed_url = f"{scheme}://{host}{request.url.path}{query}"
        if not RequestValidator(token).validate(signed_url, signed_fields, request.headers.get("x-twilio-signature", "")):
            logger.warning("refused a telephone webhook with an invalid X-Twilio-Signature")
            return 403, "invalid X-Twilio-Signature", "text/plain"
    limit = stream.hub.concurrency_limit
    if limit is not None and len(stream.hub) >= limit:
        busy = VoiceResponse()
        busy.reject(reason="busy")
        return 200, str(busy), "application/xml"
    if stream_url is None:
        path = request.url.path
        prefix = path[: -len(INCOMING_PATH)] if path.endswith(INCOMING_PATH) else ""
        stream_url = f"wss://{host}{prefix}{HANDLER_PATH}"
    parameters = {name: form[name] for name in PASSED_PARAMETERS if form.get(name)}
    return 200, connect_twiml(stream_url, parameters), "application/xml"


async def serve_telephone(stream: Stream, socket: Any) -> None:
    """Serve Twilio's Media Streams for ``stream`` on ``socket`` (a Litestar or Starlette ``WebSocket``, not yet accepted).

    With an auth token, an upgrade without a valid ``X-Twilio-Signature`` is refused (HTTP 403).
    """
    token = auth_token(stream)
    if token and not _valid_upgrade(socket, token):
        logger.warning("refused a Media Streams upgrade with an invalid X-Twilio-Signature")
        await socket.close(code=CLOSE_CODES["invalid_signature"], reason="invalid_signature")  # before accept: HTTP 403
        return
    await TwilioSocket(socket, stream, stream_limits(stream)).serve(connection_slots(stream))


def telephone_route_handlers(stream: Stream) -> list[Any]:
    """Litestar handlers for ``POST /telephone/incoming`` (``GET`` too) and ``WS /telephone/handler``."""

    @route(INCOMING_PATH, http_method=["GET", "POST"], status_code=200)
    async def telephone_incoming(request: Request[Any, Any, Any]) -> Response[str]:
        status, body, media_type = await incoming_call(stream, request)
        return Response(body, status_code=status, media_type=media_type)

    @websocket(HANDLER_PATH)
    async def telephone_handler(socket: WebSocket) -> None:
        await serve_telephone(stream, socket)

    return [telephone_incoming, telephone_handler]


async def place_call(
    stream: Stream,
    to: str,
    from_: str,
    url: str,
    *,
    parameters: Mapping[str, str] | None = None,
    account_sid: str | None = None,
    auth_token: str | None = None,
    client: Client | None = None,
    **create_options: Any,
) -> str:
    """Dial ``to`` from ``from_`` and connect the call to the stream served at ``url``.

    ``url`` is this app's public base URL (``https://example.com[/prefix]``); the
    call gets inline TwiML streaming to ``wss://.../telephone/handler``. Returns
    the call SID. ``client`` is a ``twilio.rest.Client`` (made from ``account_sid``/
    ``auth_token`` or ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN`` otherwise); with an
    async http client it is awaited, else its blocking request runs in a worker
    thread. ``create_options`` go to ``calls.create`` (``timeout``, ``status_callback``, ...).
    """
    limit = stream.hub.concurrency_limit
    if limit is not None and len(stream.hub) >= limit:
        raise ConcurrencyLimitReached(limit)
    twiml = connect_twiml(_handler_url(url), {"To": to, "From": from_, "Direction": "outbound-api", **(parameters or {})})
    if client is None:
        from twilio.rest import Client as TwilioClient

        sid = account_sid or os.environ.get("TWILIO_ACCOUNT_SID")
        token = auth_token or getattr(stream, "twilio_auth_token", None) or os.environ.get("TWILIO_AUTH_TOKEN")
        if not sid or not token:
            raise ConfigurationError("Stream.call needs account_sid and auth_token (or TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN)")
        client = TwilioClient(sid, token)
    calls = client.calls
    if getattr(client.http_client, "is_async", False):
        call = await calls.create_async(to=to, from_=from_, twiml=twiml, **create_options)
    else:
        call = await anyio.to_thread.run_sync(functools.partial(calls.create, to=to, from_=from_, twiml=twiml, **create_options))
    return str(call.sid)
