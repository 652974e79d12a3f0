"""TURN credential helpers against a real local HTTP server, and ICE list cleaning for aiortc.

The server on 127.0.0.1 answers in the providers' documented formats
(Cloudflare's generate-ice-servers, Twilio's Tokens.json, the Hugging Face
endpoint); the helpers are pointed at it with their base-URL variables.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from aiortc import RTCPeerConnection
from aiortc.rtcicetransport import RTCIceServer, connection_kwargs

from flowrtc.credentials import (
    TurnCredentialsError,
    get_cloudflare_turn_credentials,
    get_cloudflare_turn_credentials_async,
    get_hf_turn_credentials,
    get_hf_turn_credentials_async,
    get_turn_credentials,
    get_turn_credentials_async,
    get_twilio_turn_credentials,
)
from flowrtc.errors import ConfigurationError
from flowrtc.ice import aiortc_configuration, aiortc_ice_servers, clean_ice_servers

CLOUDFLARE_ANSWER = {
    "iceServers": [
        {"urls": ["stun:stun.cloudflare.com:3478", "stun:stun.cloudflare.com:53"]},
        {
            "urls": [
                "turn:turn.cloudflare.com:3478?transport=udp",
                "turn:turn.cloudflare.com:53?transport=udp",
                "turn:turn.cloudflare.com:3478?transport=tcp",
                "turns:turn.cloudflare.com:5349?transport=tcp",
                "turns:turn.cloudflare.com:443?transport=tcp",
            ],
            "username": "cf-user",
            "credential": "cf-secret",
        },
    ]
}

TWILIO_ICE_SERVERS = [
    {"url": "stun:global.stun.twilio.com:3478?transport=udp", "urls": "stun:global.stun.twilio.com:3478?transport=udp"},
    {"urls": "turn:global.turn.twilio.com:3478?transport=tcp", "username": "tw-user", "credential": "tw-secret"},
    {"urls": "turn:global.turn.twilio.com:3478?transport=udp", "username": "tw-user", "credential": "tw-secret"},
    {"urls": "turn:global.turn.twilio.com:443?transport=tcp", "username": "tw-user", "credential": "tw-secret"},
]


class Provider:
    """What the fake provider received, and what it answers next."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 0  # 0: the provider's normal answer
        self.body: bytes | None = None


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[Provider]:
    state = Provider()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
            path = urllib.parse.urlsplit(self.path).path
            if state.status:
                status, payload = state.status, state.body or b'{"errors": [{"message": "Authentication error"}]}'
            elif path.startswith("/cloudflare/") and path.endswith("/credentials/generate-ice-servers"):
                status, payload = 201, json.dumps(CLOUDFLARE_ANSWER).encode()
            elif path == "/hf/credentials":
                status, payload = 200, json.dumps({"iceServers": CLOUDFLARE_ANSWER["iceServers"][1:]}).encode()
            elif path.startswith("/twilio/2010-04-01/Accounts/") and path.endswith("/Tokens.json"):
                status, payload = 201, json.dumps({"account_sid": "AC1", "ice_servers": TWILIO_ICE_SERVERS, "ttl": "86400", "username": "tw-user", "password": "tw-secret"}).encode()
            else:
                status, payload = 404, b'{"error": "not found"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _answer
        do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("FLOWRTC_CLOUDFLARE_TURN_API", f"{base}/cloudflare")
    monkeypatch.setenv("FLOWRTC_HF_TURN_URL", f"{base}/hf/credentials")
    monkeypatch.setenv("FLOWRTC_TWILIO_API", f"{base}/twilio")
    for name in ("HF_TOKEN", "CLOUDFLARE_TURN_KEY_ID", "CLOUDFLARE_TURN_KEY_API_TOKEN", "TURN_KEY_ID", "TURN_KEY_API_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- Cloudflare ------------------------------------------------------------------------------
def test_cloudflare_with_a_turn_key(provider: Provider) -> None:
    config = get_cloudflare_turn_credentials(turn_key_id="key-1", turn_key_api_token="token-1", ttl=3600)
    request = provider.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/cloudflare/key-1/credentials/generate-ice-servers"
    assert request["headers"]["Authorization"] == "Bearer token-1"
    assert json.loads(request["body"]) == {"ttl": 3600}
    # Port-53 URLs (browsers block them) are gone; the rest is as Cloudflare sent it.
    assert config == {
        "iceServers": [
            {"urls": ["stun:stun.cloudflare.com:3478"]},
            {
                "urls": [
                    "turn:turn.cloudflare.com:3478?transport=udp",
                    "turn:turn.cloudflare.com:3478?transport=tcp",
                    "turns:turn.cloudflare.com:5349?transport=tcp",
                    "turns:turn.cloudflare.com:443?transport=tcp",
                ],
                "username": "cf-user",
                "credential": "cf-secret",
            },
        ]
    }


def test_cloudflare_reads_its_environment_variables(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFLARE_TURN_KEY_ID", "env-key")
    monkeypatch.setenv("CLOUDFLARE_TURN_KEY_API_TOKEN", "env-token")
    monkeypatch.setenv("HF_TOKEN", "hf-for-models")  # set for model downloads: must not take over
    config = get_cloudflare_turn_credentials()
    assert provider.requests[-1]["path"] == "/cloudflare/env-key/credentials/generate-ice-servers"
    assert provider.requests[-1]["headers"]["Authorization"] == "Bearer env-token"
    assert json.loads(provider.requests[-1]["body"]) == {"ttl": 600}
    assert config["iceServers"][1]["username"] == "cf-user"


def test_cloudflare_reads_the_variable_names_of_fastrtcs_guide(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURN_KEY_ID", "guide-key")  # "Make sure the TURN_KEY_ID and TURN_KEY_API_TOKEN environment variables are set"
    monkeypatch.setenv("TURN_KEY_API_TOKEN", "guide-token")
    get_cloudflare_turn_credentials()
    assert provider.requests[-1]["path"] == "/cloudflare/guide-key/credentials/generate-ice-servers"
    assert provider.requests[-1]["headers"]["Authorization"] == "Bearer guide-token"
    monkeypatch.setenv("CLOUDFLARE_TURN_KEY_ID", "reference-key")  # the reference's names win
    get_cloudflare_turn_credentials()
    assert provider.requests[-1]["path"] == "/cloudflare/reference-key/credentials/generate-ice-servers"


@pytest.mark.anyio
async def test_cloudflare_through_the_callers_httpx_client(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    async def arecord(request: httpx.Request) -> None:
        record(request)

    expected = get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t")
    with httpx.Client(event_hooks={"request": [record]}) as client:
        assert get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t", client=client) == expected
        async with httpx.AsyncClient() as wrong:
            with pytest.raises(ConfigurationError, match="async"):
                get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t", client=wrong)
    async with httpx.AsyncClient(event_hooks={"request": [arecord]}) as aclient:
        assert await get_cloudflare_turn_credentials_async(hf_token="hf_x", client=aclient) == {"iceServers": expected["iceServers"][1:]}
        provider.status = 401
        with pytest.raises(TurnCredentialsError, match="HTTP 401"):
            await get_cloudflare_turn_credentials_async(turn_key_id="k", turn_key_api_token="t", client=aclient)
    assert sent == ["POST /cloudflare/k/credentials/generate-ice-servers", "GET /hf/credentials", "POST /cloudflare/k/credentials/generate-ice-servers"]
    assert [r["headers"]["Authorization"] for r in provider.requests[1:]] == ["Bearer t", "Bearer hf_x", "Bearer t"]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("FLOWRTC_CLOUDFLARE_TURN_API", f"http://127.0.0.1:{closed_port}/v1/turn/keys")
    async with httpx.AsyncClient() as aclient:
        with pytest.raises(TurnCredentialsError, match="failed"):  # httpx.ConnectError, translated
            await get_cloudflare_turn_credentials_async(turn_key_id="k", turn_key_api_token="t", client=aclient)


def test_cloudflare_through_a_hugging_face_token(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    config = get_cloudflare_turn_credentials(hf_token="hf_abc", ttl=120)
    request = provider.requests[-1]
    assert request["method"] == "GET" and request["path"] == "/hf/credentials?ttl=120"
    assert request["headers"]["Authorization"] == "Bearer hf_abc"
    assert config["iceServers"][0]["credential"] == "cf-secret"
    monkeypatch.setenv("HF_TOKEN", "hf_env")  # with no Cloudflare key, HF_TOKEN is used
    get_cloudflare_turn_credentials()
    assert provider.requests[-1]["headers"]["Authorization"] == "Bearer hf_env"


def test_cloudflare_without_credentials_says_what_is_missing(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="CLOUDFLARE_TURN_KEY_ID and CLOUDFLARE_TURN_KEY_API_TOKEN"):
        get_cloudflare_turn_credentials()
    monkeypatch.setenv("CLOUDFLARE_TURN_KEY_ID", "only-the-id")
    with pytest.raises(ConfigurationError, match="set CLOUDFLARE_TURN_KEY_API_TOKEN"):
        get_cloudflare_turn_credentials()
    with pytest.raises(ConfigurationError, match="ttl"):
        get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t", ttl=0)
    assert provider.requests == []


def test_provider_failures_are_clear(provider: Provider) -> None:
    provider.status = 401
    with pytest.raises(TurnCredentialsError, match="HTTP 401.*Authentication error"):
        get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="wrong")
    provider.status, provider.body = 201, b"<html>oops</html>"
    with pytest.raises(TurnCredentialsError, match="did not answer with JSON"):
        get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t")
    provider.body = b'{"result": "no servers here"}'
    with pytest.raises(TurnCredentialsError, match="without iceServers"):
        get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t")


def test_an_unreachable_provider(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("FLOWRTC_CLOUDFLARE_TURN_API", f"http://127.0.0.1:{closed_port}/v1/turn/keys")
    with pytest.raises(TurnCredentialsError, match="failed"):
        get_cloudflare_turn_credentials(turn_key_id="k", turn_key_api_token="t")


@pytest.mark.anyio
async def test_async_variants(provider: Provider) -> None:
    config = await get_cloudflare_turn_credentials_async(turn_key_id="k", turn_key_api_token="t")
    assert config["iceServers"][1]["username"] == "cf-user"
    assert (await get_turn_credentials_async(method="cloudflare", hf_token="hf_x"))["iceServers"][0]["username"] == "cf-user"
    assert (await get_turn_credentials_async(method="twilio", twilio_sid="AC1", twilio_token="s"))["iceTransportPolicy"] == "relay"
    with pytest.warns(DeprecationWarning, match="deprecated"):
        await get_hf_turn_credentials_async(token="hf_y")
    with pytest.raises(ConfigurationError, match="method"):
        await get_turn_credentials_async(method="carrier-pigeon")  # type: ignore[arg-type]


# -- Hugging Face (deprecated) and Twilio ------------------------------------------------------------
def test_hf_is_deprecated(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    with pytest.warns(DeprecationWarning, match="get_cloudflare_turn_credentials"):
        config = get_hf_turn_credentials()
    assert provider.requests[-1]["headers"]["Authorization"] == "Bearer hf_env"
    assert config["iceServers"][0]["username"] == "cf-user"
    with pytest.warns(DeprecationWarning):
        get_turn_credentials(method="hf", token="hf_other", ttl=60)
    assert provider.requests[-1]["path"] == "/hf/credentials?ttl=60"
    monkeypatch.delenv("HF_TOKEN")
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigurationError, match="HF_TOKEN"):
        get_hf_turn_credentials()


def test_twilio(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "auth-secret")
    config = get_turn_credentials(method="twilio")
    request = provider.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/twilio/2010-04-01/Accounts/AC123/Tokens.json"
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"AC123:auth-secret").decode()
    assert urllib.parse.parse_qs(request["body"].decode()) == {"Ttl": ["86400"]}
    assert config["iceTransportPolicy"] == "relay"
    assert config["iceServers"][0] == {"urls": ["stun:global.stun.twilio.com:3478?transport=udp"]}  # `url` folded into `urls`
    assert [server["urls"] for server in config["iceServers"][1:]] == [[s["urls"]] for s in TWILIO_ICE_SERVERS[1:]]
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    with pytest.raises(ConfigurationError, match="TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"):
        get_twilio_turn_credentials()


# -- ICE lists for aiortc ---------------------------------------------------------------------------
def test_twilio_list_breaks_aiortc_until_cleaned() -> None:
    raw = [RTCIceServer(urls=server["urls"], username=server.get("username"), credential=server.get("credential")) for server in TWILIO_ICE_SERVERS]
    with pytest.raises(ValueError, match="stun must not contain transport"):
        connection_kwargs(raw)
    cleaned = aiortc_ice_servers({"iceServers": TWILIO_ICE_SERVERS})
    # One STUN URL without ?transport, and the UDP relay although a TCP one came first.
    assert [server.urls for server in cleaned] == ["stun:global.stun.twilio.com:3478", "turn:global.turn.twilio.com:3478?transport=udp"]
    kwargs = connection_kwargs(cleaned)
    assert kwargs["stun_server"] == ("global.stun.twilio.com", 3478)
    assert kwargs["turn_server"] == ("global.turn.twilio.com", 3478)
    assert (kwargs["turn_transport"], kwargs["turn_username"], kwargs["turn_password"]) == ("udp", "tw-user", "tw-secret")


def test_aiortc_cleaning_rules() -> None:
    servers = [
        {"urls": "turns:relay.example.org:443?transport=tcp", "username": "u", "credential": "p"},
        {"urls": ["turn:relay.example.org:3478?transport=tcp"], "username": "u", "credential": "p"},
        {"urls": "turn:nocreds.example.org:3478"},  # TURN without credentials: unusable
        {"urls": "turn:relay.example.org:53?transport=udp", "username": "u", "credential": "p"},  # port 53: dropped
        {"urls": "stuns:secure.example.org"},  # aioice speaks plain STUN only
        {"urls": "http://not-ice.example.org"},
    ]
    cleaned = aiortc_ice_servers(servers)
    assert [server.urls for server in cleaned] == ["turn:relay.example.org:3478?transport=tcp"]
    connection_kwargs(cleaned)
    assert aiortc_ice_servers({"iceServers": []}) == []
    # Cloudflare's older endpoint returned a single server object, not a list.
    single = aiortc_ice_servers({"iceServers": {"urls": ["turn:t.example.org:3478?transport=udp"], "username": "u", "credential": "p"}})
    assert [server.urls for server in single] == ["turn:t.example.org:3478?transport=udp"]


def test_aiortc_configuration_is_accepted_by_a_peer_connection() -> None:
    config = aiortc_configuration({"iceServers": TWILIO_ICE_SERVERS, "iceTransportPolicy": "relay"})
    assert config.iceTransportPolicy.value == "relay"
    RTCPeerConnection(config)
    assert aiortc_configuration({"iceServers": []}).iceServers == []
    assert aiortc_configuration(None).iceServers is None  # aiortc's default (a public STUN server)
    with pytest.raises(ConfigurationError, match="iceTransportPolicy"):
        aiortc_configuration({"iceServers": [], "iceTransportPolicy": "nearest"})
    with pytest.raises(ConfigurationError, match="iceServers"):
        aiortc_configuration({"servers": []})
    with pytest.raises(ConfigurationError, match="urls"):
        aiortc_configuration({"iceServers": [{"urls": 5}]})


def test_browser_cleaning_keeps_what_browsers_use() -> None:
    cleaned = clean_ice_servers({"iceServers": TWILIO_ICE_SERVERS + [{"urls": "turn:x.example.org:53"}]})
    assert len(cleaned) == 4 and all(isinstance(server["urls"], list) and "url" not in server for server in cleaned)
    assert cleaned[1] == {"urls": ["turn:global.turn.twilio.com:3478?transport=tcp"], "username": "tw-user", "credential": "tw-secret"}
