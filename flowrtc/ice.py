"""ICE server lists: read any common spelling, clean them for aiortc and for browsers.

Configurations arrive as the browser's ``{"iceServers": [...]}`` dict, a bare
list of servers, or straight from a TURN provider (Twilio's legacy ``url`` key,
``?transport=`` on STUN URLs, Cloudflare's port-53 alternates). Browsers accept
nearly all of that; aiortc does not:

* a ``stun:`` URL with ``?transport=`` raises ``ValueError`` in aiortc at
  ``setLocalDescription``;
* aiortc uses only the **first** STUN URL and the **first** usable TURN URL
  (``turn:`` over udp/tcp, ``turns:`` over tcp, password credentials), so the
  order of the list decides which relay the server gets.

:func:`aiortc_configuration` turns any of these into an ``RTCConfiguration``
with one STUN and one TURN URL (UDP TURN preferred, then TCP, then TLS), and
:func:`clean_ice_servers` is the browser-side cleanup (``url`` → ``urls``,
port-53 URLs dropped: browsers block that port, which only slows gathering).
"""

from __future__ import annotations

import re
from typing import Any

from flowrtc.errors import ConfigurationError

__all__ = ["clean_ice_servers", "aiortc_ice_servers", "aiortc_configuration"]

_URL = re.compile(r"^(?P<scheme>stuns?|turns?):(?P<host>[^?:\s\[\]/]+)(?::(?P<port>\d+))?(?:\?transport=(?P<transport>\w+))?$")
_BLOCKED_PORTS = {53}
# aiortc's order of preference for its single TURN server: UDP relays are the
# cheapest, TCP gets through UDP-blocking firewalls, TLS on 443 through almost anything.
_TURN_RANK = {("turn", "udp"): 0, ("turn", "tcp"): 1, ("turns", "tcp"): 2}


def _servers_of(config: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The server dicts and transport policy of any accepted spelling."""
    if config is None:
        return [], None
    policy = None
    if isinstance(config, dict):
        policy = config.get("iceTransportPolicy")
        if "iceServers" in config:
            servers = config["iceServers"]
        elif "urls" in config or "url" in config:
            servers = [config]
        else:
            raise ConfigurationError(f"an RTC configuration needs an 'iceServers' list, got keys {sorted(config)}")
    else:
        servers = config
    if isinstance(servers, dict):  # Cloudflare's older endpoint returns one server, not a list
        servers = [servers]
    if not isinstance(servers, (list, tuple)):
        raise ConfigurationError(f"iceServers must be a list of servers, got {type(servers).__name__}")
    for server in servers:
        if not isinstance(server, dict):
            raise ConfigurationError(f"each ICE server must be a dict with 'urls', got {type(server).__name__}")
    return list(servers), policy


def _urls_of(server: dict[str, Any]) -> list[str]:
    urls = server.get("urls", server.get("url", []))
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, (list, tuple)) or not all(isinstance(url, str) for url in urls):
        raise ConfigurationError(f"ICE server 'urls' must be a string or a list of strings, got {urls!r}")
    return [url.strip() for url in urls]


def _parse(url: str) -> dict[str, Any] | None:
    match = _URL.match(url)
    if match is None:
        return None
    parts = match.groupdict()
    scheme = parts["scheme"]
    port = int(parts["port"]) if parts["port"] else (5349 if scheme.endswith("s") else 3478)
    transport = parts["transport"] or ("tcp" if scheme == "turns" else "udp")
    return {"scheme": scheme, "host": parts["host"], "port": port, "transport": transport.lower()}


def clean_ice_servers(config: Any) -> list[dict[str, Any]]:
    """ICE servers for a browser's ``RTCPeerConnection``: ``urls`` lists, no port-53 URLs.

    Accepts ``{"iceServers": [...]}``, a list of servers or one server dict.
    Unknown URL schemes are dropped; servers left without URLs disappear.
    """
    servers, _ = _servers_of(config)
    cleaned = []
    for server in servers:
        urls = [url for url in _urls_of(server) if (parsed := _parse(url)) is not None and parsed["port"] not in _BLOCKED_PORTS]
        if not urls:
            continue
        entry = {key: value for key, value in server.items() if key not in ("url", "urls")}
        entry["urls"] = urls
        cleaned.append(entry)
    return cleaned


def aiortc_ice_servers(config: Any) -> list[Any]:
    """The ``RTCIceServer`` list aiortc can use: at most one STUN and one TURN URL.

    STUN URLs lose ``?transport=``; TURN URLs without a username and password,
    or with a transport aiortc cannot use, are skipped; among usable TURN URLs
    UDP wins over TCP over TLS (earlier entries win ties).
    """
    from aiortc import RTCIceServer

    servers, _ = _servers_of(config)
    stun: str | None = None
    turn: tuple[int, int, str, dict[str, Any]] | None = None
    position = 0
    for server in servers:
        for url in _urls_of(server):
            position += 1
            parsed = _parse(url)
            if parsed is None or parsed["port"] in _BLOCKED_PORTS:
                continue
            scheme = parsed["scheme"]
            if scheme in ("stun", "stuns"):
                if stun is None and scheme == "stun":  # aioice speaks plain STUN only
                    stun = f"stun:{parsed['host']}:{parsed['port']}"
                continue
            rank = _TURN_RANK.get((scheme, parsed["transport"]))
            if rank is None or not server.get("username") or not server.get("credential"):
                continue
            if server.get("credentialType", "password") != "password":
                continue
            if turn is None or (rank, position) < turn[:2]:
                turn = (rank, position, f"{scheme}:{parsed['host']}:{parsed['port']}?transport={parsed['transport']}", server)
    result = []
    if stun is not None:
        result.append(RTCIceServer(urls=stun))
    if turn is not None:
        server = turn[3]
        result.append(RTCIceServer(urls=turn[2], username=str(server["username"]), credential=str(server["credential"])))
    return result


def aiortc_configuration(config: Any) -> Any:
    """An aiortc ``RTCConfiguration`` from a server RTC configuration.

    ``None`` keeps aiortc's default (Google's public STUN server, so a server
    behind 1:1 NAT learns its public address); ``{"iceServers": []}`` means
    host candidates only. ``iceTransportPolicy: "relay"`` is honoured.
    """
    from aiortc import RTCConfiguration
    from aiortc.rtcconfiguration import RTCIceTransportPolicy

    if config is None:
        return RTCConfiguration()
    if not isinstance(config, (dict, list, tuple)):
        raise ConfigurationError(f"server_rtc_configuration must be a dict or a list of ICE servers, got {type(config).__name__}")
    _, policy = _servers_of(config)
    kwargs: dict[str, Any] = {"iceServers": aiortc_ice_servers(config)}
    if policy == "relay":
        kwargs["iceTransportPolicy"] = RTCIceTransportPolicy.RELAY
    elif policy not in (None, "all"):
        raise ConfigurationError(f"iceTransportPolicy must be 'all' or 'relay', got {policy!r}")
    return RTCConfiguration(**kwargs)

