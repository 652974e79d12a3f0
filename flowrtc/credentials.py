"""TURN credentials from Cloudflare, Twilio or Hugging Face, FastRTC's helpers.

Each helper returns an RTC configuration dict, ``{"iceServers": [...]}``, ready
for ``Stream(rtc_configuration=...)`` (the browser's side) and
``server_rtc_configuration=`` (aiortc's side, which flowrtc cleans with
:mod:`flowrtc.ice`). Pass the *function* as ``rtc_configuration`` to fetch
fresh short-lived credentials on every page load.

HTTP goes through the standard library (in a worker thread for the async
variants), so no HTTP client package is needed. Every endpoint can be
redirected, e.g. to a test server or a proxy:

==========================  ====================================================
``FLOWRTC_CLOUDFLARE_TURN_API``  default ``https://rtc.live.cloudflare.com/v1/turn/keys``
``FLOWRTC_HF_TURN_URL``          default ``https://turn.fastrtc.org/credentials``
``FLOWRTC_TWILIO_API``           default ``https://api.twilio.com``
==========================  ====================================================
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import urllib.error
import urllib.parse
import urllib.request
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Literal, NamedTuple

import anyio

from flowrtc.errors import ConfigurationError, FlowRTCError
from flowrtc.ice import clean_ice_servers

__all__ = [
    "TurnCredentialsError",
    "get_cloudflare_turn_credentials",
    "get_cloudflare_turn_credentials_async",
    "get_twilio_turn_credentials",
    "get_twilio_turn_credentials_async",
    "get_hf_turn_credentials",
    "get_hf_turn_credentials_async",
    "get_turn_credentials",
    "get_turn_credentials_async",
]

CLOUDFLARE_API = "https://rtc.live.cloudflare.com/v1/turn/keys"
HF_TURN_URL = "https://turn.fastrtc.org/credentials"
TWILIO_API = "https://api.twilio.com"
DEFAULT_TTL_S = 600
_TIMEOUT_S = 10.0
_MAX_RESPONSE_BYTES = 1 << 20

Method = Literal["cloudflare", "twilio", "hf"]


class TurnCredentialsError(FlowRTCError):
    """A TURN provider refused the request or answered with something unusable."""


class _Call(NamedTuple):
    """One credentials request, before it is sent."""

    url: str
    method: str
    headers: dict[str, str]
    body: bytes | None
    provider: str


def _send(call: _Call) -> dict[str, Any]:
    """Send ``call`` with the standard library; the ICE configuration it got, or :class:`TurnCredentialsError`."""
    if not call.url.startswith(("https://", "http://")):
        raise ConfigurationError(f"credential endpoints are http(s) URLs, got {call.url!r}")
    headers = {"Accept": "application/json", **call.headers}
    request = urllib.request.Request(call.url, data=call.body, method=call.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:  # noqa: S310 (scheme checked above)
            return _answer(call, response.status, response.read(_MAX_RESPONSE_BYTES + 1))
    except urllib.error.HTTPError as exc:
        return _answer(call, exc.code, exc.read(2000))
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TurnCredentialsError(f"{call.method} {_redact(call.url)} failed: {reason}") from None


def _redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _configuration(data: Any, provider: str) -> dict[str, Any]:
    """``{"iceServers": [...]}`` from a provider's answer (a list, one server, or the dict)."""
    servers = data.get("iceServers", data.get("ice_servers")) if isinstance(data, dict) else data
    if servers is None:
        raise TurnCredentialsError(f"{provider} answered without iceServers: {str(data)[:200]}")
    try:
        cleaned = clean_ice_servers({"iceServers": servers})
    except ConfigurationError as exc:
        raise TurnCredentialsError(f"{provider} answered with unusable iceServers: {exc}") from None
    if not cleaned:
        raise TurnCredentialsError(f"{provider} answered with no usable ICE server URLs")
    return {"iceServers": cleaned}


def _check_ttl(ttl: int) -> int:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return ttl


# -- Hugging Face (deprecated) ------------------------------------------------------------
def _hf_call(token: str, ttl: int) -> _Call:
    base = os.environ.get("FLOWRTC_HF_TURN_URL", HF_TURN_URL)
    url = f"{base}?{urllib.parse.urlencode({'ttl': ttl})}"
    return _Call(url, "GET", {"Authorization": f"Bearer {token}"}, None, "the Hugging Face TURN service")


def _hf(token: str, ttl: int) -> dict[str, Any]:
    return _send(_hf_call(token, ttl))


def _hf_token(token: str | None) -> str:
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigurationError("a Hugging Face token is needed: pass token=/hf_token= or set HF_TOKEN")
    return token


def get_hf_turn_credentials(token: str | None = None, ttl: int = DEFAULT_TTL_S) -> dict[str, Any]:
    """Deprecated: TURN credentials from Hugging Face's community server (``HF_TOKEN``).

    Use :func:`get_cloudflare_turn_credentials`, which takes the same token.
    """
    warnings.warn("get_hf_turn_credentials is deprecated; use get_cloudflare_turn_credentials(hf_token=...)", DeprecationWarning, stacklevel=2)
    return _hf(_hf_token(token), _check_ttl(ttl))


async def get_hf_turn_credentials_async(token: str | None = None, ttl: int = DEFAULT_TTL_S) -> dict[str, Any]:
    """Deprecated async twin of :func:`get_hf_turn_credentials`."""
    warnings.warn("get_hf_turn_credentials_async is deprecated; use get_cloudflare_turn_credentials_async(hf_token=...)", DeprecationWarning, stacklevel=2)
    token = _hf_token(token)
    return await anyio.to_thread.run_sync(_hf, token, _check_ttl(ttl))


# -- Cloudflare ---------------------------------------------------------------------------
def _cloudflare_call(turn_key_id: str | None, turn_key_api_token: str | None, hf_token: str | None, ttl: int) -> _Call:
    _check_ttl(ttl)
    key_id = turn_key_id or os.environ.get("CLOUDFLARE_TURN_KEY_ID") or os.environ.get("TURN_KEY_ID")
    api_token = turn_key_api_token or os.environ.get("CLOUDFLARE_TURN_KEY_API_TOKEN") or os.environ.get("TURN_KEY_API_TOKEN")
    hf_token = hf_token or (None if key_id and api_token else os.environ.get("HF_TOKEN"))
    if hf_token:
        return _hf_call(hf_token, ttl)
    if not key_id or not api_token:
        missing = [name for name, value in (("CLOUDFLARE_TURN_KEY_ID", key_id), ("CLOUDFLARE_TURN_KEY_API_TOKEN", api_token)) if not value]
        raise ConfigurationError(
            "Cloudflare TURN needs a TURN key: pass turn_key_id= and turn_key_api_token= or set "
            f"{' and '.join(missing)} (or give a Hugging Face token: hf_token= or HF_TOKEN)"
        )
    base = os.environ.get("FLOWRTC_CLOUDFLARE_TURN_API", CLOUDFLARE_API).rstrip("/")
    url = f"{base}/{urllib.parse.quote(key_id, safe='')}/credentials/generate-ice-servers"
    headers = {"Authorization": f"Bearer {api_token}", "Content-Type": "application/json"}
    return _Call(url, "POST", headers, json.dumps({"ttl": ttl}).encode(), "Cloudflare")


def _answer(call: _Call, status: int, payload: bytes) -> dict[str, Any]:
    """The ICE configuration in a provider's HTTP answer, or :class:`TurnCredentialsError`."""
    if status >= 400:
        detail = payload[:2000].decode("utf-8", "replace").strip()
        raise TurnCredentialsError(f"{call.method} {_redact(call.url)} failed: HTTP {status} {detail}".rstrip())
    if len(payload) > _MAX_RESPONSE_BYTES:
        raise TurnCredentialsError(f"{_redact(call.url)} answered with more than {_MAX_RESPONSE_BYTES} bytes")
    try:
        data = json.loads(payload)
    except ValueError:
        raise TurnCredentialsError(f"{_redact(call.url)} did not answer with JSON: {payload[:200]!r}") from None
    return _configuration(data, call.provider)


@contextmanager
def _client_errors(call: _Call) -> Iterator[None]:
    """The caller's HTTP client failing (an ``httpx.HTTPError``, a socket error) as :class:`TurnCredentialsError`."""
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, OSError) and type(exc).__module__.split(".")[0] != "httpx":
            raise
        raise TurnCredentialsError(f"{call.method} {_redact(call.url)} failed: {exc}") from None


def _client_request(call: _Call) -> tuple[tuple[str, str], dict[str, Any]]:
    return (call.method, call.url), {"headers": {"Accept": "application/json", **call.headers}, "content": call.body, "timeout": _TIMEOUT_S}


def get_cloudflare_turn_credentials(
    turn_key_id: str | None = None,
    turn_key_api_token: str | None = None,
    hf_token: str | None = None,
    ttl: int = DEFAULT_TTL_S,
    client: Any = None,
) -> dict[str, Any]:
    """Short-lived TURN credentials from Cloudflare (``{"iceServers": [...]}``).

    With a Cloudflare TURN key (``turn_key_id``/``turn_key_api_token``, or the
    ``CLOUDFLARE_TURN_KEY_ID``/``CLOUDFLARE_TURN_KEY_API_TOKEN`` environment variables,
    or ``TURN_KEY_ID``/``TURN_KEY_API_TOKEN`` as FastRTC's guide names them) the
    credentials come from Cloudflare's API; otherwise a Hugging Face token (``hf_token``
    or ``HF_TOKEN``) gets them from Hugging Face's Cloudflare-backed service. An
    explicit ``hf_token`` wins; ``HF_TOKEN`` in the environment does not override
    a configured Cloudflare key (it is often set just to download models). ``ttl``: lifetime in seconds (Cloudflare allows
    up to 48 h). URLs on port 53, which browsers block, are removed. ``client``: an
    ``httpx.Client`` to send the request with (by default the standard library's).

    Raises:
        ConfigurationError: no key and no token, or an async ``client`` (use the async function).
        TurnCredentialsError: the provider refused or could not be reached.
    """
    call = _cloudflare_call(turn_key_id, turn_key_api_token, hf_token, ttl)
    if client is None:
        return _send(call)
    if inspect.iscoroutinefunction(getattr(client, "request", None)):
        raise ConfigurationError("an httpx.AsyncClient needs get_cloudflare_turn_credentials_async; pass an httpx.Client here")
    args, options = _client_request(call)
    with _client_errors(call):
        response = client.request(*args, **options)
    return _answer(call, response.status_code, response.content)


async def get_cloudflare_turn_credentials_async(
    turn_key_id: str | None = None,
    turn_key_api_token: str | None = None,
    hf_token: str | None = None,
    ttl: int = DEFAULT_TTL_S,
    client: Any = None,
) -> dict[str, Any]:
    """Async :func:`get_cloudflare_turn_credentials`.

    ``client``: an ``httpx.AsyncClient`` (or ``httpx.Client``) to send the request with;
    without one the request runs in a worker thread.
    """
    call = _cloudflare_call(turn_key_id, turn_key_api_token, hf_token, ttl)
    if client is None:
        return await anyio.to_thread.run_sync(_send, call)
    args, options = _client_request(call)
    with _client_errors(call):
        response = client.request(*args, **options)
        if inspect.isawaitable(response):
            response = await response
    return _answer(call, response.status_code, response.content)


# -- Twilio -------------------------------------------------------------------------------
def get_twilio_turn_credentials(twilio_sid: str | None = None, twilio_token: str | None = None, ttl: int = 86400) -> dict[str, Any]:
    """TURN credentials from Twilio's Network Traversal Service.

    ``twilio_sid``/``twilio_token`` default to ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``.
    Returns ``{"iceServers": [...], "iceTransportPolicy": "relay"}`` like FastRTC
    (relay only: Twilio's servers are meant for the traffic itself).
    """
    sid = twilio_sid or os.environ.get("TWILIO_ACCOUNT_SID")
    token = twilio_token or os.environ.get("TWILIO_AUTH_TOKEN")
    if not sid or not token:
        raise ConfigurationError("Twilio TURN needs an account: pass twilio_sid= and twilio_token= or set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    base = os.environ.get("FLOWRTC_TWILIO_API", TWILIO_API).rstrip("/")
    url = f"{base}/2010-04-01/Accounts/{urllib.parse.quote(sid, safe='')}/Tokens.json"
    basic = base64.b64encode(f"{sid}:{token}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"}
    body = urllib.parse.urlencode({"Ttl": _check_ttl(ttl)}).encode()
    return {**_send(_Call(url, "POST", headers, body, "Twilio")), "iceTransportPolicy": "relay"}


async def get_twilio_turn_credentials_async(twilio_sid: str | None = None, twilio_token: str | None = None, ttl: int = 86400) -> dict[str, Any]:
    """Async :func:`get_twilio_turn_credentials` (the request runs in a worker thread)."""
    return await anyio.to_thread.run_sync(get_twilio_turn_credentials, twilio_sid, twilio_token, ttl)


# -- dispatch -----------------------------------------------------------------------------
def get_turn_credentials(method: Method = "cloudflare", **kwargs: Any) -> dict[str, Any]:
    """TURN credentials from ``method``: ``"cloudflare"`` (default), ``"twilio"`` or ``"hf"`` (deprecated).

    ``kwargs`` go to that provider's helper (``turn_key_id``, ``turn_key_api_token``,
    ``hf_token``, ``ttl``; ``twilio_sid``, ``twilio_token``; ``token``, ``ttl``).
    """
    if method == "cloudflare":
        return get_cloudflare_turn_credentials(**kwargs)
    if method == "twilio":
        return get_twilio_turn_credentials(**kwargs)
    if method == "hf":
        return get_hf_turn_credentials(**kwargs)
    raise ConfigurationError(f"method must be 'cloudflare', 'twilio' or 'hf', got {method!r}")


async def get_turn_credentials_async(method: Method = "cloudflare", **kwargs: Any) -> dict[str, Any]:
    """Async :func:`get_turn_credentials`."""
    if method == "cloudflare":
        return await get_cloudflare_turn_credentials_async(**kwargs)
    if method == "twilio":
        return await get_twilio_turn_credentials_async(**kwargs)
    if method == "hf":
        return await get_hf_turn_credentials_async(**kwargs)
    raise ConfigurationError(f"method must be 'cloudflare', 'twilio' or 'hf', got {method!r}")

