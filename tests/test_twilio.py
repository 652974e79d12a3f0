"""Twilio: the TwiML webhook, Media Streams exactly as Twilio documents them, signatures, outbound calls."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import httpx
import numpy as np
import pytest
from litestar import Request, Response, post
from litestar.params import FromPath
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from ws_support import ACCOUNT, CALL, STREAM_SID, FakeTwilio, dtmf_graph, echo_turns, expected_reply_s, reply_audio, rms, serve

from flowrtc import AudioChunk, Event, Graph, PlaybackMark, decode, get_current_session
from flowrtc.adapters.twilio import current_call
from flowrtc.errors import ConfigurationError
from flowrtc.hub import ConcurrencyLimitReached
from flowrtc.operators.core import operator, scoped
from flowrtc.stream import Stream
from flowrtc.testing import load_audio

pytestmark = pytest.mark.anyio

TOKEN = "12345"
HELLO = "asterisk_hello-world_8k.wav"


@operator
async def observe(source: AsyncIterable[Any], seen: list[Any]) -> AsyncIterator[Any]:
    """Record the call, phone mode and every event reaching the graph."""
    seen.append(("call", current_call(), get_current_session().phone_mode))
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, Event):
                seen.append(item)
            yield item


def phone_echo(seen: list[Any]) -> Graph:
    return Graph(audio=decode() | observe(seen) | echo_turns(), name="phone_echo")


def silence(seconds: float) -> AudioChunk:
    return AudioChunk(np.zeros((1, int(8000 * seconds)), np.int16), 8000)


async def test_incoming_call_twiml_keeps_port_prefix_and_parameters() -> None:
    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=None)
    form = {"CallSid": CALL, "AccountSid": ACCOUNT, "From": "+15551230000", "To": "+15557650000", "CallStatus": "ringing"}
    async with serve(stream, prefix="/phone") as host, httpx.AsyncClient() as http:
        direct = await http.post(f"http://{host}/phone/telephone/incoming", data=form, headers={"Host": "example.com:8443"})
        proxied = await http.post(f"http://{host}/phone/telephone/incoming", data=form,
                                  headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.org"})
    assert direct.status_code == 200 and direct.headers["content-type"].startswith("application/xml")
    for response, url in ((direct, "wss://example.com:8443/phone/telephone/handler"),
                          (proxied, "wss://voice.example.org/phone/telephone/handler")):
        root = ET.fromstring(response.text)
        stream_el = root.find("./Connect/Stream")
        assert stream_el is not None and stream_el.get("url") == url
        parameters = {p.get("name"): p.get("value") for p in stream_el.findall("Parameter")}
        assert parameters == {"CallSid": CALL, "AccountSid": ACCOUNT, "From": "+15551230000", "To": "+15557650000"}


async def test_webhook_signature_is_checked() -> None:
    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=None, twilio_auth_token=TOKEN)
    form = {"CallSid": CALL, "From": "+15551230000", "To": "+15557650000"}
    async with serve(stream) as host, httpx.AsyncClient() as http:
        url = f"http://{host}/telephone/incoming"
        good = RequestValidator(TOKEN).compute_signature(url, form)
        assert (await http.post(url, data=form, headers={"X-Twilio-Signature": good})).status_code == 200
        assert (await http.post(url, data=form, headers={"X-Twilio-Signature": good[:-4] + "AAA="})).status_code == 403
        assert (await http.post(url, data={**form, "From": "+10000000000"}, headers={"X-Twilio-Signature": good})).status_code == 403
        assert (await http.post(url, data=form)).status_code == 403
        # Behind a TLS proxy Twilio signs the public https URL.
        public = RequestValidator(TOKEN).compute_signature("https://voice.example.org/telephone/incoming", form)
        headers = {"X-Twilio-Signature": public, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "voice.example.org"}
        assert (await http.post(url, data=form, headers=headers)).status_code == 200


async def test_a_webhook_configured_as_get_is_answered_and_checked() -> None:
    """Twilio can call the voice URL with GET: the fields come in the query, and the signature covers the whole URL."""
    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=None, twilio_auth_token=TOKEN)
    fields = {"CallSid": CALL, "From": "+15551230000", "To": "+15557650000"}
    async with serve(stream) as host, httpx.AsyncClient() as http:
        url = f"http://{host}/telephone/incoming?{httpx.QueryParams(fields)}"
        good = RequestValidator(TOKEN).compute_signature(url, {})
        answer = await http.get(url, headers={"X-Twilio-Signature": good})
        assert answer.status_code == 200
        stream_el = ET.fromstring(answer.text).find("./Connect/Stream")
        assert stream_el is not None and {p.get("name"): p.get("value") for p in stream_el.findall("Parameter")} == fields
        tampered = url.replace("%2B15551230000", "%2B10000000000")
        assert (await http.get(tampered, headers={"X-Twilio-Signature": good})).status_code == 403


async def test_websocket_upgrade_signature_is_checked() -> None:
    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=None, twilio_auth_token=TOKEN)
    async with serve(stream) as host:
        url = f"ws://{host}/telephone/handler"
        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
            with pytest.raises(InvalidStatus) as refused:
                async with connect(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        signature = RequestValidator(TOKEN).compute_signature(f"wss://{host}/telephone/handler", {})
        async with connect(url, additional_headers={"X-Twilio-Signature": signature}) as ws:
            call = FakeTwilio(ws)
            await call.begin()
            await call.stop()
            await call.run()
        assert call.close_code == 1000
        assert len(stream.hub) == 0


async def test_call_reply_marks_and_parameters(media_dir: Any) -> None:
    """Speech in, the reply out with the streamSid, marks sent and, once played, seen by the graph."""
    seen: list[Any] = []
    stream = Stream(phone_echo(seen), modality="audio", concurrency_limit=None)
    clip = load_audio(media_dir / HELLO)
    async with serve(stream) as host, connect(f"ws://{host}/telephone/handler") as ws:
        call = FakeTwilio(ws, custom={"From": "+15551230000", "CallSid": CALL})
        async with anyio.create_task_group() as group:
            group.start_soon(call.run)
            await call.begin()
            await call.talk([clip, silence(0.6)])
            assert stream.hub.transport(STREAM_SID) == "phone"
            await anyio.sleep(expected_reply_s(clip) + 0.3)
            await call.stop()
    replies = call.of("media")
    assert all(m["streamSid"] == STREAM_SID for _, m in replies)
    assert {len(base64.b64decode(m["media"]["payload"])) for _, m in replies} == {160}, "20 ms of 8 kHz µ-law"
    audio = reply_audio(replies)
    assert abs(len(audio) / 8000 - expected_reply_s(clip)) < 0.1 and rms(audio) > 1000
    marks = [m["mark"]["name"] for _, m in call.of("mark")]
    assert marks and all(m["streamSid"] == STREAM_SID for _, m in call.of("mark"))
    played = [e for e in seen if isinstance(e, PlaybackMark)]
    assert [e.name for e in played] == marks, "every mark came back once its audio had played"
    # The reply is placed where the pause ended and marks count in that timeline: its end has played.
    reply_s = expected_reply_s(clip)
    assert 2 * reply_s <= played[-1].media_time_s <= clip.duration_s + 0.3 + reply_s
    kind, info, phone_mode = seen[0]
    assert phone_mode and info.stream_sid == STREAM_SID and info.call_sid == CALL
    assert info.custom_parameters == {"From": "+15551230000", "CallSid": CALL}
    assert {m["event"] for _, m in call.received} <= {"media", "mark", "clear"}, "only Twilio's own messages"
    assert call.close_code == 1000


async def test_barge_in_sends_clear(media_dir: Any) -> None:
    seen: list[Any] = []
    stream = Stream(phone_echo(seen), modality="audio", concurrency_limit=None)
    clip = load_audio(media_dir / HELLO)
    async with serve(stream) as host, connect(f"ws://{host}/telephone/handler") as ws:
        call = FakeTwilio(ws)
        async with anyio.create_task_group() as group:
            group.start_soon(call.run)
            await call.begin()
            await call.talk([clip, silence(0.8)])
            barge_at = anyio.current_time()
            await call.talk([clip.slice(0, 4000)])
            barge_end = anyio.current_time()
            await anyio.sleep(0.2)
            await call.stop()
    clears = call.of("clear")
    assert [m for _, m in clears] == [{"event": "clear", "streamSid": STREAM_SID}]
    clear_at = clears[0][0]
    assert barge_at < clear_at < barge_end, "clear while the caller is still talking"
    assert call.of("media") and not [t for t, _ in call.of("media") if t > clear_at]
    assert not [e for e in seen if isinstance(e, PlaybackMark)], "marks cut short by clear never count as played"


async def test_dtmf_reaches_the_handler() -> None:
    digits: list[str] = []
    stream = Stream(dtmf_graph(digits), modality="audio", concurrency_limit=None)
    async with serve(stream) as host, connect(f"ws://{host}/telephone/handler") as ws:
        call = FakeTwilio(ws)
        async with anyio.create_task_group() as group:
            group.start_soon(call.run)
            await call.begin()
            await call.talk([silence(0.1)])
            await call.dtmf("3")
            await anyio.sleep(0.6)
            await call.stop()
    assert digits == ["3"]
    tone = reply_audio(call.of("media"))
    assert len(tone) == 2400 and rms(tone) > 3000


async def test_phone_counts_toward_concurrency_and_obeys_time_limit() -> None:
    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=1, time_limit=0.8)
    async with serve(stream) as host, connect(f"ws://{host}/telephone/handler") as ws:
        call = FakeTwilio(ws)
        async with anyio.create_task_group() as group:
            group.start_soon(call.run)
            await call.begin()
            await anyio.sleep(0.1)
            async with connect(f"ws://{host}/websocket/offer") as other:
                await other.send(json.dumps({"event": "start", "websocket_id": "web"}))
                assert json.loads(await other.recv())["meta"] == {"error": "concurrency_limit_reached", "limit": 1}
            async with httpx.AsyncClient() as http:
                busy = await http.post(f"http://{host}/telephone/incoming", data={"CallSid": CALL})
            assert ET.fromstring(busy.text).find("./Reject").get("reason") == "busy"
            with pytest.raises(ConcurrencyLimitReached):
                await stream.call("+15557650000", "+15551230000", "https://example.com")
    assert (call.close_code, call.close_reason) == (1000, "time limit reached")
    assert not call.received, "nothing but Twilio's own messages goes to Twilio"


async def test_outbound_call_through_the_rest_api() -> None:
    """Stream.call against a fake Twilio REST API speaking the documented Calls JSON."""
    requests: list[dict[str, Any]] = []

    @post("/2010-04-01/Accounts/{account:str}/Calls.json", status_code=201)
    async def create_call(request: Request[Any, Any, Any], account: FromPath[str]) -> Response[dict[str, Any]]:
        form = dict(await request.form())
        requests.append({"account": account, "form": form, "auth": request.headers.get("authorization")})
        return Response({
            "sid": CALL, "account_sid": account, "to": form["To"], "from": form["From"], "status": "queued",
            "direction": "outbound-api", "api_version": "2010-04-01", "date_created": "Tue, 31 Aug 2010 20:36:28 +0000",
            "uri": f"/2010-04-01/Accounts/{account}/Calls/{CALL}.json",
        }, status_code=201)

    stream = Stream(phone_echo([]), modality="audio", concurrency_limit=None)
    async with serve(route_handlers=[create_call]) as host:
        client = Client(ACCOUNT, TOKEN)
        client.api.base_url = f"http://{host}"  # the REST domain's documented base URL, pointed at the fake
        sid = await stream.call("+15557650000", "+15551230000", "https://voice.example.org/phone/", client=client,
                                parameters={"campaign": "spring"}, timeout=20)
    assert sid == CALL
    [sent] = requests
    assert sent["account"] == ACCOUNT and sent["auth"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert sent["form"]["To"] == "+15557650000" and sent["form"]["From"] == "+15551230000" and sent["form"]["Timeout"] == "20"
    stream_el = ET.fromstring(sent["form"]["Twiml"]).find("./Connect/Stream")
    assert stream_el.get("url") == "wss://voice.example.org/phone/telephone/handler"
    assert {p.get("name"): p.get("value") for p in stream_el} == {
        "To": "+15557650000", "From": "+15551230000", "Direction": "outbound-api", "campaign": "spring"}
    with pytest.raises(ConfigurationError):
        await stream.call("+15557650000", "+15551230000", "https://voice.example.org", account_sid=None, auth_token=None)


async def test_reply_on_pause_over_the_phone(media_dir: Any) -> None:
    """A ReplyOnPause echo on a call: the reply, marks echoed back, and clear when the caller talks over it."""
    from flowrtc import ReplyOnPause

    def echo(audio: tuple[int, np.ndarray]) -> Any:
        yield audio

    stream = Stream(ReplyOnPause(echo), modality="audio", concurrency_limit=None)
    clip = load_audio(media_dir / HELLO)
    async with serve(stream) as host, connect(f"ws://{host}/telephone/handler") as ws:
        call = FakeTwilio(ws)
        async with anyio.create_task_group() as group:
            group.start_soon(call.run)
            await call.begin()
            await call.talk([clip, silence(2.6)])  # the whole reply plays
            marks_after_first = len(call.of("mark"))
            await call.talk([silence(0.6)])
            barge_at = anyio.current_time()
            await call.talk([clip, silence(0.5)])  # a second turn ...
            with anyio.fail_after(3):
                while not [t for t, _ in call.of("media") if t > barge_at]:
                    await call.talk([silence(0.1)])
            await call.talk([clip])  # ... whose reply the caller talks over
            await call.stop()
    assert marks_after_first >= 1
    replies = call.of("media")
    assert replies and all(m["streamSid"] == STREAM_SID for _, m in replies)
    first_reply = reply_audio([r for r in replies if r[0] < barge_at])
    assert abs(len(first_reply) / 8000 - clip.duration_s) < 0.6 and rms(first_reply) > 1000
    clears = call.of("clear")
    assert clears and clears[-1][1] == {"event": "clear", "streamSid": STREAM_SID}
    assert not [t for t, _ in replies if t > clears[-1][0]], "nothing of the old reply after clear"
