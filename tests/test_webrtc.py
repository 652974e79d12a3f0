"""WebRTC end to end: a real uvicorn server on 127.0.0.1 and real aiortc client peers.

Nothing of flowrtc is mocked: the graphs are ordinary flowrtc graphs, the
signalling is HTTP (httpx), the media is Opus/VP8 over ICE on this machine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, AsyncIterator

import httpx
import numpy as np
import pytest

from flowrtc import (
    AdditionalOutputs,
    AudioChunk,
    ClientMessage,
    Graph,
    Interrupt,
    Log,
    Message,
    StopWord,
    VideoFrame,
    Warning,
    decode,
    encode,
    handler,
    operator,
    resample,
)
from flowrtc.adapters.webrtc import WebRTCOptions, webrtc_transport
from flowrtc.adapters.webrtc_tracks import CodecWorker, _SharedDecoder, decode_audio_shared, hold_audio_packets
from flowrtc.operators.core import scoped
from flowrtc.session import current_session
from flowrtc.stream import Stream
from conftest import HELLO, load_clip
from rtc_support import ClientPeer, best_lag, pattern, envelope, media_threads, open_peer_connections, running_server, top_minus_bottom, wait_for

pytestmark = pytest.mark.anyio

NO_ICE_SERVERS = {"iceServers": []}


def echo_pipe() -> Any:
    return decode() | resample(48000, layout="mono") | handler(lambda audio: audio) | encode(sample_rate=48000)


def flip_pipe() -> Any:
    return decode() | handler(lambda image: np.ascontiguousarray(image[::-1]))


def make_stream(graph: Graph, **options: Any) -> Stream:
    options.setdefault("server_rtc_configuration", NO_ICE_SERVERS)
    options.setdefault("concurrency_limit", None)
    return Stream(graph, **options)


def app_of(stream: Stream, **webrtc: Any) -> Any:
    return stream.app(webrtc=WebRTCOptions(**webrtc)) if webrtc else stream.app()


async def assert_all_closed(stream: Stream, server: Any, timeout: float = 8) -> None:
    """No session, peer connection, decoder thread or extra server task is left."""
    transport = webrtc_transport(stream)
    assert await wait_for(lambda: len(stream.hub) == 0 and not transport.peers, timeout), (stream.hub.ids(), list(transport.peers))
    assert await wait_for(lambda: not open_peer_connections(), timeout), open_peer_connections()
    assert await wait_for(lambda: not media_threads(), timeout), media_threads()
    # The supervisor task holding the peers' task group is the one task a transport keeps.
    assert await wait_for(lambda: server.task_count() <= server.baseline_tasks + 1, timeout), server.tasks()


@operator
async def on_client_message(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Answer each client message with a log line, in band."""
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, ClientMessage):
                yield Log(data=f"graph got {item.data}")
            else:
                yield item


# -- audio ------------------------------------------------------------------------------
async def test_audio_echo_round_trip_on_recorded_speech() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio")
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=clip, lead_silence_s=0.4)
            answer = await peer.connect(client)
            assert answer["type"] == "answer" and "a=candidate" in answer["sdp"]
            await peer.wait_connected()
            assert stream.hub.transport(peer.webrtc_id) == "webrtc"
            await wait_for(lambda: peer.audio_track and peer.audio_track.position > 48000 * 2.6, 10)
            # The server decodes the caller's audio to mono in the loop's shared worker, not in a thread per peer.
            (receiver,) = [t.receiver for t in webrtc_transport(stream).peers[peer.webrtc_id].pc.getTransceivers() if t.kind == "audio"]
            decoder = receiver._RTCRtpReceiver__decoder_queue
            assert isinstance(decoder, _SharedDecoder)
            assert decoder._decoder.codec.layout.name == "mono"
            assert decoder.worker.running and decoder.worker.frames >= 100
            # ... and holds one received packet back before decoding, not aiortc's four.
            assert receiver._RTCRtpReceiver__jitter_buffer._prefetch == 1
            assert [thread.name for thread in threading.enumerate()].count("flowrtc-codec") == 1
            # An echo's frames are due as they come: encoded at once, on the loop (no time for the hand-over).
            out = webrtc_transport(stream).peers[peer.webrtc_id].audio_out
            assert out.encoded_on_loop >= 100 and out.encoded_ahead <= out.encoded_on_loop // 4  # (a burst after jitter may queue a few)
            await asyncio.sleep(0.5)
            await peer.close()
            # The worker's thread ends with the last peer.
            await wait_for(lambda: not decoder.worker.running, 5)
        sent = envelope(peer.audio_track.samples[0])
        received = envelope(peer.received_audio())
        lag, correlation = best_lag(sent, received, max_lag=60)
        # The speech comes back (Opus both ways), in the right shape, within 1.2 s.
        assert received.max() > 0.3 * sent.max()
        assert correlation > 0.8, (lag, correlation)
        assert lag * 0.02 < 1.2
        await assert_all_closed(stream, server)


async def test_interrupt_flushes_unplayed_audio() -> None:
    """1 s of 440 Hz, Interrupt, 1 s of 880 Hz, all at once: the queued 440 Hz tail never plays."""

    def tone(hz: float, seconds: float) -> list[AudioChunk]:
        t = np.arange(int(48000 * seconds)) / 48000
        samples = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)[None, :]
        return [AudioChunk(samples[:, i : i + 960], 48000, i) for i in range(0, samples.shape[1], 960)]

    async def burst(ports: Any) -> AsyncIterator[Any]:
        for chunk in tone(440, 1.0):
            yield chunk
        yield Interrupt()
        for chunk in tone(880, 1.0):
            yield chunk
        await asyncio.sleep(30)

    stream = make_stream(Graph(build=burst), modality="audio")
    with running_server(app_of(stream, audio_queue_ms=600)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, receive_only=("audio",))
            await peer.connect(client)
            await peer.wait_connected()
            await asyncio.sleep(2.8)
            # Queued frames are due later: encoded in the codec thread while they wait.
            assert webrtc_transport(stream).peers[peer.webrtc_id].audio_out.encoded_ahead >= 40
            await peer.close()
        windows = [samples for _, samples in peer.audio_in if np.abs(samples).max() > 1000]
        spectra = [np.abs(np.fft.rfft(w.astype(np.float64))) for w in windows]
        low = sum(1 for s in spectra if 400 <= np.argmax(s) * 50 <= 480)
        high = sum(1 for s in spectra if 840 <= np.argmax(s) * 50 <= 920)
        assert high >= 40, (low, high)
        # 50 frames of 440 Hz were produced; the 600 ms queue (30 frames) was flushed unplayed.
        assert 10 <= low <= 30, (low, high)
        await assert_all_closed(stream, server)


# -- video and audio-video ------------------------------------------------------------------
async def test_video_flip() -> None:
    stream = make_stream(Graph(video=flip_pipe()), modality="video")
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, video=True)
            await peer.connect(client)
            await peer.wait_connected()
            assert await wait_for(lambda: len(peer.video_in) >= 10, 10)
            await peer.close()
        last = [image for _, image in peer.video_in[-5:]]
        assert all(top_minus_bottom(image) < -100 for image in last), [top_minus_bottom(i) for i in last]
        await assert_all_closed(stream, server)


async def test_audio_video_echo_and_flip() -> None:
    stream = make_stream(Graph(audio=echo_pipe(), video=flip_pipe()), modality="audio-video")
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=clip, video=True)
            await peer.connect(client)
            await peer.wait_connected()
            assert await wait_for(lambda: len(peer.video_in) >= 10 and peer.audio_track.position > 48000 * 1.8, 10)
            await asyncio.sleep(0.4)
            await peer.close()
        assert top_minus_bottom(peer.video_in[-1][1]) < -100
        assert envelope(peer.received_audio()).max() > 0.3 * envelope(clip.samples[0]).max()
        await assert_all_closed(stream, server)


# -- every modality in every mode -------------------------------------------------------------
@operator
async def count_inputs(source: AsyncIterator[Any], every: int) -> AsyncIterator[Any]:
    """Send mode: report what arrived as AdditionalOutputs (media is not sent back)."""
    seen = 0
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, (AudioChunk, VideoFrame)):
                seen += 1
                if seen % every == 0:
                    yield AdditionalOutputs(type(item).__name__, seen)


async def produce(ports: Any, modality: str) -> AsyncIterator[Any]:
    """Receive mode: a 440 Hz tone and/or the pattern image, generated by the server."""
    image = np.ascontiguousarray(pattern()[::-1])
    t = np.arange(960) / 48000
    n = 0
    while True:
        if modality != "video":
            samples = (6000 * np.sin(2 * np.pi * 440 * (t + n * 0.02))).astype(np.int16)[None, :]
            yield AudioChunk(samples, 48000, n * 960)
        if modality != "audio" and n % 3 == 0:
            yield VideoFrame(image, pts=n * 1800)
        if modality == "video":
            await asyncio.sleep(0.02)
        n += 1


def mode_graph(modality: str, mode: str) -> Graph:
    if mode == "receive":
        return Graph(build=lambda ports: produce(ports, modality), modality=modality)  # type: ignore[arg-type]
    pipes: dict[str, Any] = {}
    if modality != "video":
        pipes["audio"] = echo_pipe() if mode == "send-receive" else decode() | count_inputs(every=25)
    if modality != "audio":
        pipes["video"] = flip_pipe() if mode == "send-receive" else decode() | count_inputs(every=5)
    return Graph(**pipes)


@pytest.mark.parametrize("modality", ["audio", "video", "audio-video"])
@pytest.mark.parametrize("mode", ["send-receive", "send", "receive"])
async def test_modality_and_mode(modality: str, mode: str) -> None:
    stream = make_stream(mode_graph(modality, mode), modality=modality, mode=mode)
    has_audio, has_video = modality != "video", modality != "audio"
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            if mode == "receive":
                kinds = tuple(kind for kind, on in (("audio", has_audio), ("video", has_video)) if on)
                peer = ClientPeer(server.url, receive_only=kinds)
            else:
                peer = ClientPeer(server.url, audio=clip if has_audio else None, video=has_video, send_only=mode == "send")
            await peer.connect(client)
            await peer.wait_connected()

            def arrived() -> bool:
                if mode == "send":
                    return len(peer.messages_of("fetch_output")) >= 2
                audio_ok = not has_audio or envelope(peer.received_audio()).max(initial=0) > 500
                video_ok = not has_video or len(peer.video_in) >= 3
                return audio_ok and video_ok

            assert await wait_for(arrived, 10), (len(peer.audio_in), len(peer.video_in), peer.messages)
            if mode == "send":
                # Nothing comes back on media, and the graph saw the input.
                assert not peer.audio_in and not peer.video_in
            if mode != "send" and has_video:
                assert top_minus_bottom(peer.video_in[-1][1]) < -100
            await peer.close()
        await assert_all_closed(stream, server)


# -- the data channel ------------------------------------------------------------------------
async def test_data_channel_messages() -> None:
    @operator
    async def chatty(source: AsyncIterator[Any]) -> AsyncIterator[Any]:
        sent = False
        async with scoped(source) as items:
            async for item in items:
                if isinstance(item, AudioChunk) and not sent and item.pts > 48000 * 0.3:
                    sent = True
                    yield Log(data="started_talking")
                    yield AdditionalOutputs("transcript", 1)
                    yield Warning(message="careful")
                    yield StopWord(word="computer")
                    yield Message(type="send_input", data=[])
                yield item

    stream = make_stream(Graph(audio=decode() | on_client_message() | chatty()), modality="audio", mode="send")
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000), send_only=True, channel_label="any-label")
            peer.channel.on("open", lambda: peer.channel.send("ping"))
            await peer.connect(client)
            await peer.wait_connected()
            assert await wait_for(lambda: len(peer.messages) >= 7, 10), peer.messages
            await peer.close()
        assert {"type": "log", "data": "Server received: ping"} in peer.messages
        assert {"type": "log", "data": "graph got ping"} in peer.messages
        assert {"type": "log", "data": "started_talking"} in peer.messages
        assert {"type": "fetch_output", "data": []} in peer.messages
        assert {"type": "stopword", "data": ""} in peer.messages
        assert {"type": "send_input", "data": []} in peer.messages
        warning = peer.messages_of("warning")[0]
        assert warning["message"] == "careful" and warning["data"] == "careful"
        await assert_all_closed(stream, server)


async def test_media_flows_without_a_data_channel() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio")
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000), channel_label=None)
            answer = await peer.connect(client)
            assert "m=application" not in answer["sdp"]
            await peer.wait_connected()
            assert await wait_for(lambda: envelope(peer.received_audio()).max(initial=0) > 500, 10)
            await peer.close()
        await assert_all_closed(stream, server)


# -- limits and failures ---------------------------------------------------------------------
async def test_concurrency_limit_and_duplicate_ids() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio", concurrency_limit=1)
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            first = ClientPeer(server.url, audio=clip)
            await first.connect(client)
            await first.wait_connected()
            second = ClientPeer(server.url, audio=clip)
            assert await second.connect(client) == {"status": "failed", "meta": {"error": "concurrency_limit_reached", "limit": 1}}
            again = ClientPeer(server.url, audio=clip, webrtc_id=first.webrtc_id)
            assert await again.connect(client) == {"status": "failed", "meta": {"error": "connection_already_exists"}}
            await second.close()
            await again.close()
            await first.close()
            # Closing frees the slot.
            assert await wait_for(lambda: len(stream.hub) == 0, 5)
            third = ClientPeer(server.url, audio=clip)
            assert (await third.connect(client))["type"] == "answer"
            await third.wait_connected()
            await third.close()
        await assert_all_closed(stream, server)


async def test_trickled_candidates() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio")
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            await peer.connect(client, trickle=True)
            await peer.wait_connected()
            url = f"{server.url}/webrtc/offer"
            end = await client.post(url, json={"type": "ice-candidate", "webrtc_id": peer.webrtc_id, "candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}})
            assert end.json() == {"status": "success"}
            bad = await client.post(url, json={"type": "ice-candidate", "webrtc_id": peer.webrtc_id, "candidate": {"candidate": "candidate:1 1 udp", "sdpMid": "0"}})
            assert bad.status_code == 200 and bad.json()["meta"]["error"] == "invalid_candidate_format"
            unknown = await client.post(url, json={"type": "ice-candidate", "webrtc_id": "nobody", "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"}})
            assert unknown.json() == {"status": "failed", "meta": {"error": "unknown_connection"}}
            assert await wait_for(lambda: envelope(peer.received_audio()).max(initial=0) > 500, 10)
            await peer.close()
            assert await wait_for(lambda: len(stream.hub) == 0, 5)
            late = await client.post(url, json={"type": "ice-candidate", "webrtc_id": peer.webrtc_id, "candidate": {"candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host", "sdpMid": "0"}})
            assert late.json() == {"status": "failed", "meta": {"error": "unknown_connection"}}
        await assert_all_closed(stream, server)


async def test_time_limit_ends_the_session() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio", time_limit=1.0)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            await peer.connect(client)
            await peer.wait_connected()
            started = time.monotonic()
            assert await wait_for(lambda: peer.messages_of("end_stream"), 5), peer.messages
            assert peer.messages_of("end_stream")[0]["data"] == "time limit reached"
            assert time.monotonic() - started < 2.0
            # The server closes the connection and frees the slot.
            assert await wait_for(lambda: len(stream.hub) == 0, 5)
            assert await wait_for(lambda: peer.pc.connectionState in ("closed", "failed"), 10), peer.pc.connectionState
            await peer.close()
        await assert_all_closed(stream, server)


async def test_unconnected_peer_is_reaped() -> None:
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio", concurrency_limit=1)
    with running_server(app_of(stream, connect_timeout_s=1.0)) as server:
        async with httpx.AsyncClient() as client:
            ghost = ClientPeer(server.url, audio=load_clip(HELLO, 48000))
            sdp = await ghost.offer_sdp()
            reply = await client.post(f"{server.url}/webrtc/offer", json={"sdp": sdp, "type": "offer", "webrtc_id": "ghost"})
            assert reply.json()["type"] == "answer"  # ... but the answer is never applied
            assert stream.hub.ids() == ["ghost"]
            assert await wait_for(lambda: len(stream.hub) == 0, 4)
            await ghost.close()
        await assert_all_closed(stream, server)


async def good_and_bad_peers(server: Any, client: httpx.AsyncClient, clip: AudioChunk, good_silence_s: float) -> tuple[ClientPeer, ClientPeer]:
    """Two connected peers, "good-1" (speaking after ``good_silence_s``) and "bad-1"."""
    good = ClientPeer(server.url, audio=clip, webrtc_id="good-1", lead_silence_s=good_silence_s)
    bad = ClientPeer(server.url, audio=clip, webrtc_id="bad-1")
    for peer in (good, bad):
        await peer.connect(client)
    for peer in (good, bad):
        await peer.wait_connected()
    return good, bad


async def test_a_failing_handler_only_ends_its_own_session() -> None:
    def maybe_fail(audio: Any) -> Any:
        session = current_session()
        if session is not None and session.id.startswith("bad") and audio[1].shape[1] and _count(session) > 10:
            raise RuntimeError("the handler broke")
        return audio

    stream = make_stream(
        Graph(audio=decode() | resample(48000, layout="mono") | handler(maybe_fail) | encode(sample_rate=48000)),
        modality="audio",
    )
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            good, bad = await good_and_bad_peers(server, client, clip, good_silence_s=1.0)
            assert await wait_for(lambda: bad.messages_of("error"), 5), bad.messages
            error = bad.messages_of("error")[0]
            assert error["message"] == "the handler broke" and error["kind"] == "RuntimeError"
            assert await wait_for(lambda: bad.pc.connectionState in ("closed", "failed"), 10)
            assert stream.hub.ids() == ["good-1"]
            # The other session goes on: its speech (after 1 s of silence) still comes back.
            mark = time.monotonic()
            assert await wait_for(lambda: envelope(good.received_audio(since=mark)).max(initial=0) > 500, 5)
            assert not good.messages_of("error")
            await good.close()
            await bad.close()
        await assert_all_closed(stream, server)


async def test_a_peer_whose_close_raises_does_not_end_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc's close() raises part-way for some malformed offers; the peers' task group must not
    see it, or one bad client would end every WebRTC session of the process."""
    from aiortc import RTCPeerConnection

    original_close = RTCPeerConnection.close

    async def close(self: RTCPeerConnection) -> None:
        await original_close(self)
        if getattr(self, "_flowrtc_test_raise", False):
            raise AttributeError("'NoneType' object has no attribute 'stop'")  # what aiortc raises

    monkeypatch.setattr(RTCPeerConnection, "close", close)
    stream = make_stream(Graph(audio=echo_pipe()), modality="audio")
    clip = load_clip(HELLO, 48000)
    with running_server(app_of(stream)) as server:
        async with httpx.AsyncClient() as client:
            good, bad = await good_and_bad_peers(server, client, clip, good_silence_s=1.5)
            webrtc_transport(stream).peers["bad-1"].pc._flowrtc_test_raise = True  # type: ignore[attr-defined]
            assert webrtc_transport(stream).close_peer("bad-1")
            assert await wait_for(lambda: stream.hub.ids() == ["good-1"], 5), stream.hub.ids()
            # The good session goes on (its speech, after 1.5 s of silence, comes back) ...
            mark = time.monotonic()
            assert await wait_for(lambda: envelope(good.received_audio(since=mark)).max(initial=0) > 500, 5)
            # ... and a new peer still connects.
            again = ClientPeer(server.url, audio=clip, webrtc_id="again-1")
            await again.connect(client)
            await again.wait_connected()
            for peer in (good, bad, again):
                await peer.close()
        transport = webrtc_transport(stream)
        assert await wait_for(lambda: len(stream.hub) == 0 and not transport.peers, 8), stream.hub.ids()


_calls: dict[str, int] = {}


def _count(session: Any) -> int:
    _calls[session.id] = _calls.get(session.id, 0) + 1
    return _calls[session.id]


# -- ReplyOnPause (the demo) -------------------------------------------------------------------
async def test_reply_on_pause_echo_demo_over_webrtc() -> None:
    from flowrtc.cli import demo_stream

    stream = demo_stream()
    clip = load_clip(HELLO, 48000)
    with running_server(stream.app()) as server:
        async with httpx.AsyncClient() as client:
            peer = ClientPeer(server.url, audio=clip, lead_silence_s=0.3)
            await peer.connect(client)
            await peer.wait_connected()
            # The reply (the utterance itself) comes once the pause is detected.
            assert await wait_for(lambda: peer.messages_of("fetch_output"), 8), peer.messages
            assert await wait_for(lambda: envelope(peer.received_audio()).max(initial=0) > 0.3 * envelope(clip.samples[0]).max(), 6)
            await asyncio.sleep(1.6)
            # The reply is made faster than it plays: its frames were encoded in the codec thread.
            assert webrtc_transport(stream).peers[peer.webrtc_id].audio_out.encoded_ahead >= 40
            await peer.close()
        received = envelope(peer.received_audio())
        start = int(np.argmax(received > 0.1 * received.max()))
        # Nothing played while the user spoke: it is a reply, not an echo.
        reply_at = next(at for at, samples in peer.audio_in if envelope(samples).max() > 0.1 * received.max())
        speech_end = peer.audio_track.started_at + 0.3 + clip.duration_s
        assert reply_at > speech_end, reply_at - speech_end
        sent = envelope(clip.samples[0])
        _, correlation = best_lag(sent, received[max(0, start - 30) :], max_lag=60)
        assert correlation > 0.8, correlation
        await assert_all_closed(stream, server)


# -- conversions ------------------------------------------------------------------------------
def test_audio_level_matches_aiortc() -> None:
    import av

    from flowrtc.adapters import webrtc_tracks

    rng = np.random.default_rng(7)
    for amplitude in (0, 1, 30, 1000, 12000, 40000):
        samples = np.clip(rng.standard_normal(1920) * amplitude, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        assert webrtc_tracks.audio_level_dbov(frame) == webrtc_tracks.aiortc_audio_level_dbov(frame), amplitude
    from aiortc import rtp

    assert rtp.compute_audio_level_dbov is webrtc_tracks.audio_level_dbov


def test_output_frames_are_20_ms_48_khz_stereo() -> None:
    from flowrtc.adapters.webrtc_tracks import AudioFrameEncoder, chunk_from_frame

    encoder = AudioFrameEncoder()
    speech = load_clip(HELLO)  # 8 kHz mono
    frames = [frame for start in range(0, speech.n_samples, 1234) for frame in encoder.push(speech.slice(start, start + 1234))]
    frames += encoder.flush()
    assert all(frame.samples == 960 and frame.sample_rate == 48000 and frame.layout.name == "stereo" and frame.format.name == "s16" for frame in frames)
    assert abs(len(frames) * 0.02 - speech.duration_s) <= 0.02
    # Stereo 48 kHz float chunks are only re-cut; an Interrupt's reset drops the partial frame.
    encoder.push(AudioChunk(np.full((2, 500), 0.5, np.float32), 48000))
    encoder.reset()
    assert encoder.flush() == []
    back = chunk_from_frame(frames[10], pts=4800)
    assert back.samples.shape == (2, 960) and back.pts == 4800 and back.sample_rate == 48000
    assert np.array_equal(back.samples[0], back.samples[1])
    mono = chunk_from_frame(frames[10], pts=4800, mono=True)
    assert mono.samples.shape == (1, 960) and np.array_equal(mono.samples[0], back.samples[0])


def test_output_frames_keep_a_rate_opus_takes_when_the_track_codes_opus() -> None:
    """A 24 kHz reply is cut into 24 kHz frames for a track that codes Opus itself (no
    resampling to 48 kHz); 44.1 kHz is resampled to 48 kHz; the first chunk fixes the rate."""
    from flowrtc.adapters.webrtc_tracks import OPUS_INPUT_RATES, AudioFrameEncoder

    t = np.arange(24000) / 24000
    tone = AudioChunk((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)[None, :], 24000)
    encoder = AudioFrameEncoder(mono=True, native_rates=OPUS_INPUT_RATES)
    frames = encoder.push(tone.slice(0, 5000)) + encoder.push(tone.slice(5000))
    frames += encoder.flush()
    assert encoder.rate == 24000 and len(frames) == 50
    assert all(frame.samples == 480 and frame.sample_rate == 24000 and frame.layout.name == "mono" for frame in frames)
    assert np.array_equal(np.concatenate([frame.to_ndarray()[0] for frame in frames]), tone.samples[0])  # only re-cut
    later = encoder.push(AudioChunk(np.zeros((1, 4800), np.int16), 48000))  # another rate: resampled to the first
    assert {frame.sample_rate for frame in later} == {24000}
    cd = AudioFrameEncoder(native_rates=OPUS_INPUT_RATES)
    frames = cd.push(AudioChunk(np.zeros((1, 4410), np.int16), 44100)) + cd.flush()
    assert cd.rate == 48000 and {frame.samples for frame in frames} == {960}
    assert AudioFrameEncoder().push(tone.slice(0, 4800))[0].sample_rate == 48000  # aiortc encodes: 48 kHz


async def test_output_track_encodes_24_khz_frames_on_the_48_khz_rtp_clock() -> None:
    import av

    from flowrtc.adapters.webrtc_tracks import OPUS_INPUT_RATES, AudioFrameEncoder, AudioOutputTrack

    t = np.arange(24000) / 24000
    tone = AudioChunk((8000 * np.sin(2 * np.pi * 600 * t)).astype(np.int16)[None, :], 24000)
    track = AudioOutputTrack(queue_frames=60)
    track.encode_opus(mono=True)
    assert track.codes_opus
    frames = AudioFrameEncoder(mono=True, native_rates=OPUS_INPUT_RATES).push(tone.slice(0, 480 * 12))
    for frame in frames:
        assert await track.put(frame)
    packets = [await track.recv() for _ in range(12)]
    track.stop()
    assert [p.pts for p in packets] == [960 * i for i in range(12)]  # 20 ms apart on the 48 kHz clock
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(av.Packet(bytes(p)))])
    assert decoded.size == 960 * 12  # each packet is 20 ms at the receiver's 48 kHz
    spectrum = np.abs(np.fft.rfft(decoded[1920:].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 48000 / (decoded.size - 1920) - 600) < 30  # the tone comes back


async def test_output_track_opens_a_new_encoder_when_the_rate_changes() -> None:
    """An output that changes rate mid-stream gets a new Opus encoder at the new rate; the
    RTP clock runs on at 960 per 20 ms and both parts decode."""
    import av

    from flowrtc.adapters.webrtc_tracks import AudioOutputTrack

    def frame(rate: int, hz: float) -> av.AudioFrame:
        n = rate // 50
        out = av.AudioFrame.from_ndarray((8000 * np.sin(2 * np.pi * hz * np.arange(n) / rate)).astype(np.int16)[None, :], format="s16", layout="mono")
        out.sample_rate = rate
        return out

    track = AudioOutputTrack(queue_frames=20)
    track.encode_opus(mono=True)
    for rate in (48000, 48000, 48000, 16000, 16000, 16000):
        assert await track.put(frame(rate, 500))
    packets = [await track.recv() for _ in range(6)]
    track.stop()
    assert [p.pts for p in packets] == [960 * i for i in range(6)]
    assert track._encoder is not None and track._encoder.codec.sample_rate == 16000
    for part in (packets[:3], packets[3:]):  # each part is a stream of its own encoder
        decoder = av.CodecContext.create("libopus", "r")
        decoder.sample_rate, decoder.layout = 48000, "mono"
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in part for f in decoder.decode(av.Packet(bytes(p)))])
        assert decoded.size == 960 * 3 and np.sqrt(np.mean(decoded[960:].astype(np.float64) ** 2)) > 1000


def test_stereo_input_only_when_the_offer_says_so() -> None:
    from flowrtc.adapters.webrtc_signalling import declares_stereo

    browser = "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    assert not declares_stereo(browser)
    assert declares_stereo(browser.replace("useinbandfec=1", "useinbandfec=1;sprop-stereo=1"))
    assert not declares_stereo("a=rtpmap:0 PCMU/8000\r\na=fmtp:0 sprop-stereo=1\r\n")


def test_stereo_output_only_when_the_offer_asks_for_it() -> None:
    from flowrtc.adapters.webrtc_signalling import prefers_stereo

    browser = "m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
    assert not prefers_stereo(browser)
    assert not prefers_stereo(browser.replace("useinbandfec=1", "useinbandfec=1;sprop-stereo=1"))  # how it sends, not what it wants
    assert prefers_stereo(browser.replace("useinbandfec=1", "useinbandfec=1;stereo=1"))


async def test_mono_output_is_coded_as_mono_opus_and_stereo_as_stereo() -> None:
    """RFC 6716 §3.1: bit 2 of an Opus packet's first byte says whether it is stereo."""
    import av

    from flowrtc.adapters.webrtc_tracks import AudioFrameEncoder, AudioOutputTrack

    speech = load_clip(HELLO).slice(2000, 6000)  # 0.5 s of speech at 8 kHz
    for mono in (True, False):
        track = AudioOutputTrack(queue_frames=30)
        track.encode_opus(mono=mono)
        encoder = AudioFrameEncoder(mono=track.mono)
        frames = encoder.push(speech) + encoder.flush()
        assert {frame.layout.name for frame in frames} == {"mono" if mono else "stereo"}
        assert {frame.samples for frame in frames} == {960}
        for frame in frames:
            assert await track.put(frame)
        packets = [await track.recv() for _ in range(len(frames))]
        track.stop()
        assert all(isinstance(packet, av.Packet) for packet in packets)
        stereo_bits = {bytes(packet)[0] & 0x04 for packet in packets[2:]}  # past the encoder's look-ahead
        assert stereo_bits == ({0} if mono else {0x04})


def test_shared_decoder_can_hand_over_samples_made_in_its_thread() -> None:
    """``as_samples``: the codec thread returns each decoded frame as (int16 (channels, n), rate),
    the same samples chunk_from_frame gives (``work`` runs in the thread; called directly here)."""
    import av
    from aiortc.codecs import PCMU_CODEC
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from flowrtc.adapters.webrtc_tracks import _SharedDecoder, chunk_from_frame

    worker: Any = None  # work() never touches it
    decoder = _SharedDecoder(worker, asyncio.Queue(), mono=True, deliver=print, as_samples=True)
    plain = _SharedDecoder(worker, asyncio.Queue(), mono=True)
    payload = bytes(range(160))  # 20 ms of µ-law
    out = decoder.work((PCMU_CODEC, JitterFrame(data=payload, timestamp=0)))
    frames = plain.work((PCMU_CODEC, JitterFrame(data=payload, timestamp=0)))
    assert len(out) == 1 and isinstance(frames[0], av.AudioFrame)
    samples, rate = out[0]
    assert rate == 8000 and samples.shape == (1, 160) and samples.dtype == np.int16 and not samples.flags.writeable
    assert np.array_equal(samples, chunk_from_frame(frames[0], 0, mono=True).samples)
    # Stereo Opus (an offer with sprop-stereo=1): both channels, as (2, 960) at 48 kHz.
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = 48000, "stereo", "s16", 96000
    left = (8000 * np.sin(2 * np.pi * 440 * np.arange(960 * 6) / 48000)).astype(np.int16)
    packets = []
    for i in range(6):
        pair = np.stack([left[960 * i : 960 * (i + 1)], np.zeros(960, np.int16)])
        frame = av.AudioFrame.from_ndarray(pair.T.reshape(1, -1).copy(), format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 960 * i
        packets += [bytes(p) for p in encoder.encode(frame)]
    codec = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    stereo = _SharedDecoder(worker, asyncio.Queue(), mono=False, deliver=print, as_samples=True)
    decoded = [item for p in packets for item in stereo.work((codec, JitterFrame(data=p, timestamp=0)))]
    assert decoded and all(s.shape == (2, 960) and r == 48000 for s, r in decoded)
    last = decoded[-1][0].astype(np.float64)
    assert np.sqrt(np.mean(last[0] ** 2)) > 1000 > np.sqrt(np.mean(last[1] ** 2))  # the tone is in the left channel only


async def test_decode_audio_shared_leaves_a_started_or_video_receiver_alone() -> None:
    class Receiver:
        _RTCRtpReceiver__decoder_queue = None

        def __init__(self, kind: str, started: bool) -> None:
            self._RTCRtpReceiver__decoder_thread = object() if started else None
            self._track = type("Track", (), {"kind": kind, "_queue": asyncio.Queue()})()

    assert decode_audio_shared(Receiver("audio", started=False))
    assert not decode_audio_shared(Receiver("audio", started=True))
    assert not decode_audio_shared(Receiver("video", started=False))
    assert not decode_audio_shared(object())


def test_received_audio_is_decoded_one_packet_later_in_order() -> None:
    """aiortc's audio buffer holds four newer packets (80 ms) before it releases one; with
    ``hold_audio_packets(receiver, 1)`` it holds one (20 ms). Order is kept either way: a
    packet that overtakes another waits for it, and one that comes after its turn is dropped."""
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtp import RtpPacket

    class Receiver:
        def __init__(self) -> None:
            self._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=4)
            self._track = type("Track", (), {"kind": "audio"})()

    def packet(n: int) -> RtpPacket:
        p = RtpPacket(sequence_number=n, timestamp=960 * n)
        p._data = bytes([n])  # type: ignore[attr-defined]
        return p

    def released(buffer: JitterBuffer, order: list[int]) -> list[tuple[int, int | None]]:
        """For each packet added: (its number, the packet released then)."""
        out = []
        for n in order:
            _, frame = buffer.add(packet(n))
            out.append((n, frame.data[0] if frame is not None else None))
        return out

    aiortc_default, ours = Receiver(), Receiver()
    assert hold_audio_packets(ours, 1)
    assert released(aiortc_default._RTCRtpReceiver__jitter_buffer, [100, 101, 102, 103, 104, 105]) == [
        (100, None), (101, None), (102, None), (103, None), (104, 100), (105, 101),
    ]
    assert released(ours._RTCRtpReceiver__jitter_buffer, [100, 101, 103, 102, 104, 101, 105]) == [
        (100, None), (101, 100), (103, None), (102, 101), (104, 102), (101, None), (105, 103),
    ]
    started = Receiver()
    started._RTCRtpReceiver__jitter_buffer.add(packet(7))
    assert not hold_audio_packets(started, 1)  # packets came already: left alone
    video = Receiver()
    video._track.kind = "video"
    assert not hold_audio_packets(video, 1) and not hold_audio_packets(object(), 1)


def test_held_audio_packets_is_checked() -> None:
    from flowrtc.adapters.webrtc import WebRTCOptions
    from flowrtc.errors import ConfigurationError

    assert WebRTCOptions().held_audio_packets == 1
    for bad in (0, 9, 1.5, "2"):
        with pytest.raises(ConfigurationError, match="held_audio_packets"):
            WebRTCOptions(held_audio_packets=bad)  # type: ignore[arg-type]


async def test_output_track_encodes_queued_frames_in_the_codec_thread_and_stops_cleanly() -> None:
    import av
    from aiortc.mediastreams import MediaStreamError

    from flowrtc.adapters.webrtc_tracks import AudioOutputTrack, codec_worker

    t = np.arange(960 * 8) / 48000
    tone = (8000 * np.sin(2 * np.pi * 600 * t)).astype(np.int16)

    def frame(i: int) -> av.AudioFrame:
        out = av.AudioFrame.from_ndarray(tone[None, 960 * i : 960 * (i + 1)].copy(), format="s16", layout="mono")
        out.sample_rate = 48000
        return out

    track = AudioOutputTrack(queue_frames=10)
    track.encode_opus(mono=True)
    first = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.01)  # the sender waits for a frame
    for i in range(6):
        await track.put(frame(i))
    packets = [await first] + [await track.recv() for _ in range(5)]
    # The first frame is due at once: encoded on the loop; the others, due 20 ms apart, mostly in the thread.
    assert track.encoded_on_loop >= 1 and track.encoded_ahead >= 3 and track.encoded_on_loop + track.encoded_ahead == 6
    assert [p.pts for p in packets] == [960 * i for i in range(6)]
    decoder = av.CodecContext.create("libopus", "r")
    decoder.sample_rate, decoder.layout = 48000, "mono"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for p in packets for f in decoder.decode(av.Packet(bytes(p)))])
    spectrum = np.abs(np.fft.rfft(decoded[960 * 2 :].astype(np.float64)))
    assert abs(np.argmax(spectrum) * 48000 / (decoded.size - 1920) - 600) < 30  # the tone comes back
    # Stopped while a frame is in the codec thread: the sender gets MediaStreamError, and the thread ends.
    track._start += 0.2  # frame 6 is not due for 200 ms: it goes to the thread and the track waits
    await track.put(frame(6))
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.02)
    assert track.encoded_on_loop + track.encoded_ahead == 7 and not waiting.done()
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 2)
    assert await wait_for(lambda: not codec_worker().running, 5)


async def test_audio_inlet_feeds_the_session_in_order_and_drops_the_oldest_when_it_lags() -> None:
    """Decoded frames go straight into the session; while the graph is stuck, the newest
    ``input_buffer_frames`` wait and older ones are dropped; the rest arrive in order."""
    import av
    from aiortc.rtcrtpreceiver import RemoteStreamTrack

    from flowrtc.adapters.webrtc import _AudioInlet
    from flowrtc.session import Session

    release = asyncio.Event()

    async def wait_for_release(audio: Any) -> Any:
        await release.wait()
        return audio

    def frame(i: int) -> av.AudioFrame:
        out = av.AudioFrame.from_ndarray(np.full((1, 960), i, np.int16), format="s16", layout="mono")
        out.sample_rate = 48000
        return out

    async def collect(session: Session) -> list[Any]:
        return [item async for item in session]

    track = RemoteStreamTrack(kind="audio")
    inlet = _AudioInlet(mono=True, size=3)
    inlet.push(frame(0))  # before the session starts: kept in the backlog
    async with Session(Graph(audio=handler(wait_for_release)), input_buffer=2, output_buffer=1) as session:
        feeding = asyncio.ensure_future(inlet.run(session, track))
        await wait_for(lambda: session.statistics()["audio_in"] == 0 and not inlet.backlog.queued, 5)
        for i in range(1, 9):
            inlet.push(frame(i))
            await asyncio.sleep(0)
        # 0 in the handler, 1 and 2 in the session, 3 being handed over, 6-8 in the backlog (4 and 5 dropped)
        assert inlet.backlog.dropped == 2 and inlet.backlog.queued == 3
        release.set()
        await track._queue.put(None)  # the receiver stops
        reading = asyncio.ensure_future(collect(session))
        await asyncio.wait_for(feeding, 5)
        await session.end_input()
        out = await asyncio.wait_for(reading, 5)
    values = [int(chunk.samples[0, 0]) for chunk in out]
    assert values == [0, 1, 2, 3, 6, 7, 8]
    assert [chunk.pts for chunk in out] == [960 * v for v in values]  # pts count samples received, dropped ones too


async def test_shared_decoder_keeps_decoding_other_callers_after_one_fails() -> None:
    """One caller whose codec has no decoder, or whose packet is garbage, costs only that
    caller's audio: the thread that decodes everyone's keeps going, in each caller's order."""
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from flowrtc.g711 import pcm16_to_mulaw

    worker = CodecWorker(asyncio.get_running_loop())
    pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    bogus = RTCRtpCodecParameters(mimeType="audio/x-none", clockRate=8000, channels=1, payloadType=99)
    good, broken, unknown = (_SharedDecoder(worker, asyncio.Queue(), mono=True) for _ in range(3))
    ramps = [np.arange(160, dtype=np.int16) * 100 + 1000 * i for i in range(6)]
    for i, ramp in enumerate(ramps):
        unknown.put((bogus, JitterFrame(data=b"\x00" * 160, timestamp=160 * i)))
        broken.put((opus, JitterFrame(data=b"\xff" * 7, timestamp=960 * i)))
        good.put((pcmu, JitterFrame(data=pcm16_to_mulaw(ramp).tobytes(), timestamp=160 * i)))
    assert await wait_for(lambda: good.track_queue.qsize() >= len(ramps), 5)
    decoded = [good.track_queue.get_nowait().to_ndarray().reshape(-1) for _ in ramps]
    # Each caller's frames come back in order (µ-law keeps ~2 % of the level).
    for ramp, frame in zip(ramps, decoded):
        assert np.allclose(frame.astype(float), ramp, atol=0.03 * abs(ramp).max() + 8)
    assert unknown.track_queue.empty() and broken.track_queue.empty()
    for decoder in (good, broken, unknown):
        decoder.put(None)
        assert decoder.stopped.is_set()
    assert await wait_for(lambda: not worker.running, 5)
