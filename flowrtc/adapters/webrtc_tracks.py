"""aiortc tracks that play a session's output, and the conversions around them.

* :class:`AudioOutputTrack` holds a **bounded** queue of 20 ms s16 frames (48 kHz
  stereo; mono when it codes mono Opus; at the output's own rate when that is one
  libopus takes) and hands one to aiortc every
  20 ms of wall-clock time. When the queue is empty it sends nothing, and after a
  pause its RTP timestamps jump by the pause, so they keep pace with real time and the listener's jitter
  buffer never sees a burst of "late" packets when speech resumes.
  :meth:`AudioOutputTrack.flush` drops every queued frame (``Interrupt``).
* :class:`VideoOutputTrack` keeps only the newest frame (latest wins) and
  releases each new frame once, at most ``max_fps`` per second, stamped with
  wall-clock pts.
* :class:`AudioFrameEncoder` converts output AudioChunks (any rate, mono or
  stereo, int16 or float32) to those 20 ms frames; :func:`chunk_from_frame`
  converts aiortc's decoded frames to AudioChunks.

:func:`hold_audio_packets` shortens the wait of an aiortc audio receiver's jitter
buffer (80 ms → 20 ms before a packet is decoded).
:func:`decode_audio_shared` makes an aiortc audio receiver decode in one
thread shared by every peer on the loop (:class:`CodecWorker`), in
batches, instead of in a thread of its own; :class:`AudioOutputTrack` encodes
a frame that is not due yet in the same thread while it waits to be sent.

Importing this module replaces aiortc's per-sample Python loop that computes
the audio level of every sent frame with an equivalent numpy function
(:func:`audio_level_dbov`; same result, ~40x less time on the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import anyio
import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc import rtp as aiortc_rtp
from aiortc.codecs import get_decoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from flowrtc.channel import Channel
from flowrtc.media import AudioChunk, VideoFrame, seal
from flowrtc.operators.rechunk import Rechunker
from flowrtc.operators.resample import Resampler

__all__ = [
    "AUDIO_RATE",
    "AUDIO_PTIME_S",
    "SAMPLES_PER_FRAME",
    "OPUS_INPUT_RATES",
    "AudioFrameEncoder",
    "audio_level_dbov",
    "chunk_from_frame",
    "frame_samples",
    "AudioOutputTrack",
    "VideoOutputTrack",
    "CodecWorker",
    "codec_worker",
    "decode_audio_shared",
    "hold_audio_packets",
]

logger = logging.getLogger("flowrtc.webrtc")

AUDIO_RATE = 48000
AUDIO_PTIME_S = 0.020
SAMPLES_PER_FRAME = int(AUDIO_RATE * AUDIO_PTIME_S)
#: The rates libopus encodes without resampling first (RFC 6716 §2; the RTP clock stays 48 kHz).
OPUS_INPUT_RATES = frozenset({8000, 12000, 16000, 24000, 48000})
VIDEO_CLOCK_RATE = 90000
_AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
_VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
# A late recv() (a busy event loop, a slow encoder thread) is caught up by
# returning the next frames at once: the audio keeps its wall-clock rate, so a
# stall does not turn into latency for every frame queued behind it (re-anchoring
# would push the whole queue back by the stall). Past this much lateness the
# sender was stuck rather than late, and the clock re-anchors instead.
_MAX_AUDIO_LAG_S = 1.0
# Nothing to play for longer than this is a pause (the RTP clock jumps over it);
# shorter waits are a late producer (its frames keep the timeline and catch up).
_MAX_PAUSE_KEPT_S = 0.2
# A frame not yet handed to the codec thread that is due sooner than this is encoded on the
# loop: the hand-over gathers frames for 5 ms before the thread encodes them.
_ENCODE_AHEAD_S = 0.010
OPUS_BIT_RATE = 96000  # what aiortc's own Opus encoder uses
_OPUS_SILENCE = bytes([0xF8, 0xFF, 0xFE])  # an Opus packet of 20 ms of silence (CELT, RFC 6716 §3)
_SILENCE = bytes(SAMPLES_PER_FRAME * 2 * 2)
_LAYOUTS = {1: "mono", 2: "stereo"}


class AudioFrameEncoder:
    """AudioChunks → s16 ``av.AudioFrame`` s of exactly 20 ms, stereo (or ``mono=True``).

    The frames are at 48 kHz, or at the rate of the first chunk when it is one
    of ``native_rates``: a track that codes Opus itself takes any of
    :data:`OPUS_INPUT_RATES`, so a 24 kHz reply is encoded as it is instead of
    being resampled to 48 kHz first. Chunks at the frames' rate are only re-cut
    (numpy); others are resampled first. The chunks' pts are ignored: the track
    plays what it gets in order. A tail shorter than 20 ms waits for the next
    chunk; :meth:`reset` drops it (after an Interrupt), :meth:`flush` pads it to
    a whole frame (at the end).
    """

    __slots__ = ("_native", "_resampler", "_chunker", "_pts", "_mono", "rate")

    def __init__(self, *, mono: bool = False, native_rates: frozenset[int] = frozenset()) -> None:
        self._native = native_rates
        self._resampler: Resampler | None = None
        self._chunker = Rechunker(AUDIO_PTIME_S * 1000)
        self._pts = 0
        self._mono = mono
        #: The frames' sample rate (``None`` until the first chunk sets it).
        self.rate: int | None = None

    def push(self, chunk: AudioChunk) -> list[av.AudioFrame]:
        if self._resampler is None:
            self.rate = chunk.sample_rate if chunk.sample_rate in self._native else AUDIO_RATE
            self._resampler = Resampler(self.rate)
        frames = []
        for resampled in self._resampler.push(chunk):
            # One running timeline, so the re-cutting never leaves a short frame at a pts jump.
            for piece in self._chunker.frames(resampled.with_pts(self._pts)):
                frames.append(_to_frame(piece, self._mono))
            self._pts += resampled.n_samples
        return frames

    def flush(self) -> list[av.AudioFrame]:
        """Everything still buffered, the last frame padded with silence."""
        frames = []
        for resampled in self._resampler.flush() if self._resampler is not None else ():
            frames.extend(_to_frame(piece, self._mono) for piece in self._chunker.push(resampled.with_pts(self._pts)))
            self._pts += resampled.n_samples
        frames.extend(_to_frame(piece, self._mono) for piece in self._chunker.flush())
        return frames

    def reset(self) -> None:
        """Forget buffered samples (they were never going to play)."""
        if self._resampler is not None:
            self._resampler.reset()
        self._chunker.drop()


def _to_frame(chunk: AudioChunk, mono: bool = False) -> av.AudioFrame:
    """One chunk (padded to 20 ms) as a packed s16 frame at its rate, stereo or mono."""
    samples = chunk.to_int16().samples
    if samples.shape[0] == 2 and not mono:
        interleaved = samples.T.reshape(-1)
    else:
        single = samples[0] if samples.shape[0] == 1 else chunk.to_layout("mono").to_int16().samples[0]
        interleaved = single if mono else np.repeat(single, 2)
    size = round(chunk.sample_rate * AUDIO_PTIME_S) * (1 if mono else 2)
    if interleaved.size < size:
        interleaved = np.concatenate([interleaved, np.zeros(size - interleaved.size, np.int16)])
    frame = av.AudioFrame.from_ndarray(interleaved.reshape(1, -1), format="s16", layout="mono" if mono else "stereo")
    frame.sample_rate = chunk.sample_rate
    return frame


def chunk_from_frame(frame: av.AudioFrame, pts: int, *, mono: bool = False) -> AudioChunk:
    """A decoded aiortc frame (packed s16, what its Opus/G.711 decoders give) as an AudioChunk, one copy.

    ``mono``: keep the first channel only (aiortc's Opus decoder always gives two;
    for a mono sender the second is a copy).
    """
    return AudioChunk(frame_samples(frame, mono=mono), frame.sample_rate, pts)


def frame_samples(frame: av.AudioFrame, *, mono: bool = False) -> np.ndarray:
    """A decoded frame's samples as a read-only ``(channels, n)`` int16 array (see :func:`chunk_from_frame`)."""
    channels = frame.layout.nb_channels
    if frame.format.name != "s16" or channels > 2:
        chunk = AudioChunk.from_av(frame).to_int16()
        return (chunk.to_layout("mono") if mono else chunk).samples
    data = np.frombuffer(frame.planes[0], np.int16, frame.samples * channels).reshape(frame.samples, channels)
    if mono or channels == 1:
        return seal(data[:, 0].copy()[None, :])
    return seal(np.ascontiguousarray(data.T))


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """RFC 6465 audio level of a frame, as aiortc computes it (same inputs, same result), with numpy.

    aiortc's own version loops over every sample in Python: ~0.4 ms per 20 ms
    stereo frame on the event loop, about a core for 50 sessions.
    """
    samples = np.frombuffer(frame.planes[0], np.int16)
    energy = float(np.dot(samples.astype(np.float64), samples))
    rms = math.sqrt(energy / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(0.0, max(-127.0, 20 * math.log10(rms))))


if getattr(aiortc_rtp.compute_audio_level_dbov, "__module__", None) == "aiortc.rtp":
    aiortc_audio_level_dbov = aiortc_rtp.compute_audio_level_dbov
    aiortc_rtp.compute_audio_level_dbov = audio_level_dbov


def _opus_encoder(rate: int, mono: bool) -> av.CodecContext:
    """A libopus encoder for s16 frames at ``rate`` (one of :data:`OPUS_INPUT_RATES`), as aiortc sets it up."""
    codec = av.CodecContext.create("libopus", "w")
    codec.bit_rate = OPUS_BIT_RATE
    codec.format = "s16"
    codec.layout = "mono" if mono else "stereo"
    codec.sample_rate = rate
    codec.time_base = Fraction(1, rate)
    codec.options = {"application": "voip"}
    return codec


def _silence_frame() -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES_PER_FRAME)
    frame.planes[0].update(_SILENCE)
    return frame


class AudioOutputTrack(MediaStreamTrack):
    """Plays queued 20 ms frames in real time; sends nothing while there is nothing to play.

    Args:
        queue_frames: most frames queued before :meth:`put` waits (backpressure
            to the session, so a fast producer never builds up a backlog).
    """

    kind = "audio"

    def __init__(self, queue_frames: int = 10) -> None:
        super().__init__()
        # A Channel, not an anyio memory stream: a put or take of a free slot never yields to the
        # loop (anyio's send checkpoints every call), and this runs per 20 ms frame of every peer.
        self._frames = Channel(max(1, queue_frames))
        self._pts = 0
        self._start: float | None = None
        self._held: av.AudioFrame | None = None  # a frame kept back behind a primer (codecs aiortc encodes)
        self.frames_played = 0
        self.primers = 0
        self.frames_flushed = 0
        self.reanchors = 0
        self.idle_s = 0.0
        self._encoder: _SharedEncoder | None = None
        #: whether the frames to :meth:`put` are mono (set by :meth:`encode_opus`)
        self.mono = False
        #: Opus frames encoded in the codec thread (due 10 ms or more ahead) / on the event loop (due sooner)
        self.encoded_ahead = 0
        self.encoded_on_loop = 0

    def encode_opus(self, *, mono: bool = False) -> None:
        """Hand aiortc Opus packets instead of frames (call once Opus is negotiated).

        aiortc would encode each frame in its thread pool (a hop per frame) and
        compute its level in Python. Here a frame due 10 ms or more ahead is
        encoded in the loop's :class:`CodecWorker` while the track waits for its
        time; one due sooner (the first after a pause, a live echo) is encoded on
        the loop, so encoding never delays a frame. The packets carry our pts
        exactly. Call on the event loop.
        ``mono``: the frames put are mono and are coded as mono Opus (what a receiver
        that did not ask for ``stereo=1`` prefers, RFC 7587; ~40 % less encoding work).
        Frames may then be at any of :data:`OPUS_INPUT_RATES` (the RTP clock stays
        48 kHz); the encoder opens at the rate of the first one.
        """
        self.mono = mono
        self._encoder = _SharedEncoder(mono, codec_worker())

    @property
    def codes_opus(self) -> bool:
        """Whether the track encodes Opus itself (:meth:`encode_opus`), so frames may come at any Opus rate."""
        return self._encoder is not None

    @property
    def queued(self) -> int:
        """Frames waiting to play."""
        return self._frames.queued + (self._held is not None)

    async def put(self, frame: av.AudioFrame) -> bool:
        """Queue one 20 ms frame, waiting while the queue is full; ``False`` once the track has stopped."""
        try:
            await self._frames.put(frame)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def flush(self) -> int:
        """Drop every queued, unplayed frame; returns how many."""
        dropped = int(self._held is not None)
        self._held = None
        while True:
            try:
                self._frames.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            dropped += 1
        self.frames_flushed += dropped
        return dropped

    async def drained(self, timeout_s: float) -> bool:
        """Wait until every queued frame has been played (or ``timeout_s`` passed)."""
        with anyio.move_on_after(timeout_s):
            while self.queued and self.readyState == "live":
                await anyio.sleep(AUDIO_PTIME_S)
            return True
        return False

    async def recv(self) -> av.AudioFrame | av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        frame, self._held = self._held, None
        if frame is None:
            try:
                frame = self._frames.receive_nowait()
            except anyio.WouldBlock:
                frame = await self._after_idle()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise MediaStreamError from None
        if self._held is None:  # not a primer
            self.frames_played += 1
        now = time.monotonic()
        if self._start is None:
            self._start = now
        pts = self._pts
        due = self._start + pts / AUDIO_RATE
        if now - due > _MAX_AUDIO_LAG_S:
            self._start = now - pts / AUDIO_RATE
            self.reanchors += 1
            due = now
        rate = frame.sample_rate or AUDIO_RATE
        self._pts += frame.samples * AUDIO_RATE // rate
        if self._encoder is None:  # aiortc encodes: the frame carries the timeline
            frame.pts = pts
            frame.sample_rate = AUDIO_RATE
            frame.time_base = _AUDIO_TIME_BASE
            encoded = None
        else:  # the frame may be in the codec thread now: it is not touched; the packet gets the pts
            encoded = self._encode(frame, rate, due - now)
        if due > now:
            await asyncio.sleep(due - now)
            if self.readyState != "live":  # stopped while waiting: nothing more goes out
                raise MediaStreamError
        if encoded is None:
            return frame
        packets = await encoded.wait()
        packet = packets[0] if packets else av.Packet(_OPUS_SILENCE)
        packet.pts = pts
        packet.time_base = _AUDIO_TIME_BASE
        return packet

    def _encode(self, frame: av.AudioFrame, rate: int, lead_s: float) -> _Encoded:
        """The :class:`_Encoded` holder of ``frame``'s packets (filled at once, or by the codec thread).

        A frame due ``_ENCODE_AHEAD_S`` or more from now goes to the codec thread and
        is encoded while the track waits for its time. One due sooner (the first
        after a pause, a live echo, or the one after a frame the thread returned
        late) is encoded here, on the loop, unless the thread still holds a frame of
        this track: waiting for the thread would make it late, and on a loaded
        server the thread can be slow to get the GIL back between two frames.
        (Handing every frame over one frame ahead was tried: a late frame then made
        every later one wait too, and the output fell behind real time.)
        """
        encoder = self._encoder
        assert encoder is not None
        codec = encoder.codec_at(rate)
        if lead_s < _ENCODE_AHEAD_S and not encoder.busy:
            self.encoded_on_loop += 1
            return _Encoded(codec.encode(frame))
        self.encoded_ahead += 1
        return encoder.submit(codec, frame)

    async def _after_idle(self) -> av.AudioFrame:
        """Wait for the next frame; after a real pause, move the clock to now.

        A short wait (the producer was a little late, or the loop stalled) keeps
        the timeline: the frames then go out at once and catch up. After a longer
        pause the pts jump by the pause, so RTP timestamps follow the wall clock as
        with Opus DTX. aiortc's encoder stamps the first frame after such a jump
        with the old timeline, so a silent "primer" frame goes first and the real
        frame follows 20 ms later.
        """
        waited = time.monotonic()
        try:
            frame = await self._frames.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise MediaStreamError from None
        now = time.monotonic()
        self.idle_s += now - waited
        if self._start is None:
            return frame
        behind_s = now - (self._start + self._pts / AUDIO_RATE)
        if behind_s <= _MAX_PAUSE_KEPT_S:
            return frame
        self._pts += int(behind_s * AUDIO_RATE)
        if self._encoder is not None:  # our packets carry the new pts as they are
            return frame
        self._held = frame
        self.primers += 1
        return _silence_frame()

    def stop(self) -> None:
        super().stop()
        self._frames.close()
        if self._encoder is not None:
            self._encoder.close()


class VideoOutputTrack(MediaStreamTrack):
    """Sends the newest output frame once; older unsent frames are dropped.

    Args:
        max_fps: most frames released per second (a producer running faster
            only costs the frames it overwrites).
    """

    kind = "video"

    def __init__(self, max_fps: float = 60.0) -> None:
        super().__init__()
        self._frame: VideoFrame | None = None
        self._fresh = asyncio.Event()
        self._min_interval_s = 1.0 / max_fps
        self._start: float | None = None
        self._last_sent_s = 0.0
        self._last_pts = -1
        self.frames_sent = 0
        self.frames_dropped = 0

    def put(self, frame: VideoFrame) -> None:
        """Offer a frame; it replaces any frame not yet sent."""
        if self._frame is not None:
            self.frames_dropped += 1
        self._frame = frame
        self._fresh.set()

    async def recv(self) -> av.VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._frame is not None:
                break
            self._fresh.clear()
            await self._fresh.wait()
        wait = self._last_sent_s + self._min_interval_s - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        item = self._frame
        if item is None or self.readyState != "live":
            raise MediaStreamError
        self._frame = None
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._last_sent_s = now
        frame = item.to_av()
        self._last_pts = max(self._last_pts + 1, int((now - self._start) * VIDEO_CLOCK_RATE))
        frame.pts = self._last_pts
        frame.time_base = _VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        self._fresh.set()


#: How long frames gather before they go to the codec thread as one batch.
HAND_OVER_S = 0.005


class _CodecThread:
    """One worker thread and the batches handed to it (see :class:`CodecWorker`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deliver: Any) -> None:
        self.batches: deque[list[tuple[Any, object]]] = deque()
        self.wake = threading.Event()
        self.stopping = False
        self._loop = loop
        self._deliver = deliver
        threading.Thread(target=self._run, name="flowrtc-codec", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.batches:
                batch = self.batches.popleft()
                results = [(job, job.work(item)) for job, item in batch]
                try:
                    self._loop.call_soon_threadsafe(self._deliver, results)
                except RuntimeError:  # the loop is closed: nobody is left to hear it
                    return
            if self.stopping:
                return


class CodecWorker:
    """Decodes and encodes the audio of every WebRTC peer on one event loop, in one thread.

    aiortc gives each receiver a decoding thread of its own that hands back every
    20 ms frame with ``run_coroutine_threadsafe``: a thread wake-up, a GIL hand-over
    and a new task per frame and peer. Coding on the event loop instead costs it
    ~40 µs of libopus per frame decoded and ~100 µs per frame encoded, the largest
    items on a busy server's loop. This worker takes the middle way: the frames
    that arrive within ``HAND_OVER_S`` (5 ms) go to one shared thread as **one
    batch**; libopus runs there without the GIL, and the results of the whole
    batch come back in one ``call_soon_threadsafe``.

    A *job* is one peer's decoder (:func:`decode_audio_shared`) or encoder
    (:class:`AudioOutputTrack`): ``job.work(item)`` runs in the thread (and
    never raises), ``job.done(result)`` on the loop unless ``job.stopped`` is
    set by then. Each job's items are worked in order. The thread runs while
    some job is live and ends with the last one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[Any, object]] = []
        self._scheduled = False
        self._live: set[Any] = set()
        self._worker: _CodecThread | None = None
        #: batches handed to the thread so far, and items in them (for benchmarks and tests)
        self.batches = 0
        self.frames = 0

    @property
    def running(self) -> bool:
        """Whether the thread is running."""
        return self._worker is not None

    def submit(self, job: Any, item: object) -> None:
        """Queue ``item`` for ``job``; call on the loop."""
        self._live.add(job)
        self._pending.append((job, item))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_later(HAND_OVER_S, self._hand_over)

    def retire(self, job: Any) -> None:
        """``job`` is done: results still to come for it are dropped."""
        self._live.discard(job)
        self._stop_when_idle()

    def _stop_when_idle(self) -> None:
        if not self._live and not self._pending and self._worker is not None:
            self._worker.stopping = True  # it finishes the batches it holds, then ends
            self._worker.wake.set()
            self._worker = None

    def _hand_over(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        if self._worker is None:
            self._worker = _CodecThread(self._loop, self._deliver)
        self.batches += 1
        self.frames += len(batch)
        self._worker.batches.append(batch)
        self._worker.wake.set()

    def _deliver(self, results: list[tuple[Any, Any]]) -> None:
        for job, result in results:
            if not job.stopped.is_set():
                job.done(result)
        self._stop_when_idle()


_workers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CodecWorker] = weakref.WeakKeyDictionary()


def codec_worker(loop: asyncio.AbstractEventLoop | None = None) -> CodecWorker:
    """The :class:`CodecWorker` of ``loop`` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    worker = _workers.get(loop)
    if worker is None:
        worker = _workers[loop] = CodecWorker(loop)
    return worker


class _Encoded:
    """The packets of one frame: given at once, or set by the codec thread when encoded.

    The track reads ``packets`` when the frame is due, so a frame encoded in time never
    waits for the loop to run the batch's callback; only a frame still in the thread
    then gets a ``waiter``, resolved by that callback.
    """

    __slots__ = ("packets", "waiter")

    def __init__(self, packets: list[av.Packet] | None = None) -> None:
        self.packets = packets
        self.waiter: asyncio.Future[None] | None = None

    async def wait(self) -> list[av.Packet]:
        """The packets, once encoded (at once if they are)."""
        if self.packets is None:
            self.waiter = asyncio.get_running_loop().create_future()
            if self.packets is None:  # (the thread may have finished in between)
                await self.waiter
        assert self.packets is not None
        return self.packets


class _SharedEncoder:
    """An :class:`AudioOutputTrack`'s Opus encoder, run as a job of the loop's :class:`CodecWorker`."""

    def __init__(self, mono: bool, worker: CodecWorker) -> None:
        self.mono = mono
        #: the encoder of the frames now coming, and their rate (made at the first frame)
        self.codec: av.CodecContext | None = None
        self.rate = 0
        self.worker = worker
        self.stopped = threading.Event()
        self._in_thread: deque[_Encoded] = deque()  # submitted, in order; the oldest are done first

    def codec_at(self, rate: int) -> av.CodecContext:
        """The encoder for frames at ``rate``: made for the first frame, and made again when the
        rate changes (the output changed rate; frames still in the thread finish on the old one)."""
        if rate != self.rate or self.codec is None:
            self.codec, self.rate = _opus_encoder(rate, self.mono), rate
        return self.codec

    def submit(self, codec: av.CodecContext, frame: av.AudioFrame) -> _Encoded:
        """Encode ``frame`` with ``codec`` in the worker's thread, after every frame submitted before it."""
        encoded = _Encoded()
        self._in_thread.append(encoded)
        self.worker.submit(self, (codec, frame, encoded))
        return encoded

    @property
    def busy(self) -> bool:
        """Whether the thread may still be encoding a frame of this track (the codec is not free)."""
        while self._in_thread and self._in_thread[0].packets is not None:
            self._in_thread.popleft()
        return bool(self._in_thread)

    def work(self, item: Any) -> Any:
        codec, frame, encoded = item
        try:
            packets = codec.encode(frame)
        except Exception:  # noqa: BLE001 - never let one track stop the thread; this frame goes out as silence
            logger.warning("audio frame not encoded", exc_info=True)
            packets = []
        encoded.packets = packets
        return encoded

    def done(self, encoded: Any) -> None:
        waiter = encoded.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The track stopped: whoever waits for a packet gets ``MediaStreamError``."""
        self.stopped.set()
        self.worker.retire(self)
        for encoded in self._in_thread:
            waiter = encoded.waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(MediaStreamError())
                waiter.exception()  # retrieved: nobody may be waiting for it
        self._in_thread.clear()


class _SharedDecoder:
    """Stands in for the queue between an aiortc receiver and its decoder thread.

    ``put`` (called by the receiver on the event loop, one encoded frame at a time,
    as it leaves the jitter buffer) passes the frame to the loop's
    :class:`CodecWorker`; the decoded frames land on the receiver's track,
    or go to ``deliver`` when one is given.
    The thread aiortc still starts finds nothing in ``get`` until the receiver
    stops, and then ends the track as it always does.
    """

    def __init__(
        self,
        worker: CodecWorker,
        track_queue: asyncio.Queue[object],
        mono: bool,
        deliver: Callable[[Any], None] | None = None,
        as_samples: bool = False,
    ) -> None:
        self.worker = worker
        self.track_queue = track_queue
        self.deliver = deliver
        self.as_samples = as_samples
        self.mono = mono
        self.stopped = threading.Event()
        self._decoder: object | None = None  # used by the worker's thread only
        self._codec_name: str | None = None

    def put(self, item: object) -> None:
        if item is None:
            # The receiver stops, and aiortc joins its thread right after this call, on the
            # loop: release that thread now (it then ends the track); frames of this peer
            # still being decoded are dropped.
            self.stopped.set()
            self.worker.retire(self)
            return
        self.worker.submit(self, item)

    def work(self, item: object) -> Any:
        """Decode one encoded frame (in the worker's thread)."""
        codec, encoded_frame = item  # type: ignore[misc]
        if codec.name != self._codec_name:
            self._codec_name = codec.name
            try:
                self._decoder = get_decoder(codec)
            except Exception:  # noqa: BLE001 - this caller's audio only: the thread decodes every caller's
                logger.warning("no decoder for %s: this caller's audio is dropped", getattr(codec, "mimeType", codec.name), exc_info=True)
                self._decoder = None
            context = getattr(self._decoder, "codec", None)
            if self.mono and codec.name.lower() == "opus" and isinstance(context, av.CodecContext):
                context.layout = "mono"  # libopus mixes down itself: a quarter less work than two channels
        if self._decoder is None:
            return ()
        try:
            frames = self._decoder.decode(encoded_frame)  # type: ignore[attr-defined]
            if self.as_samples:  # converted here rather than on the loop
                return [(frame_samples(frame, mono=self.mono), frame.sample_rate) for frame in frames]
            return frames
        except av.FFmpegError as exc:  # a damaged packet: skip it, keep the decoder's state
            logger.debug("audio frame not decoded: %s", exc)
        except Exception:  # noqa: BLE001 - same: never let one caller stop the thread
            logger.warning("audio frame not decoded", exc_info=True)
        return ()

    def done(self, frames: Any) -> None:
        """Hand the decoded frames on (on the loop)."""
        deliver = self.deliver
        if deliver is None:
            for frame in frames:
                self.track_queue.put_nowait(frame)
        else:
            for frame in frames:
                deliver(frame)

    def get(self, *args: object, **kwargs: object) -> None:
        self.stopped.wait()


def hold_audio_packets(receiver: object, packets: int) -> bool:
    """Make an aiortc audio ``RTCRtpReceiver`` hold ``packets`` newer packets before decoding one.

    aiortc's audio jitter buffer waits for four newer packets (80 ms of Opus) before it
    releases a packet, which smooths playback. A server reads speech, it does not play
    it, so the wait only delays every turn's end; ordering does not need it (the buffer
    releases only a consecutive run, whatever the count). One packet (20 ms) is the
    least aiortc's buffer can hold. Call it before the receiver starts; returns ``False``
    and leaves the receiver alone if it has received packets already or this aiortc
    version is laid out differently.
    """
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    if not isinstance(buffer, JitterBuffer) or getattr(buffer, "_origin", 0) is not None or getattr(receiver, "_track", None) is None:
        return False
    if receiver._track.kind != "audio":  # type: ignore[attr-defined]
        return False
    receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=buffer.capacity, prefetch=packets)  # type: ignore[attr-defined]
    return True


def decode_audio_shared(
    receiver: object, *, mono: bool = False, deliver: Callable[[Any], None] | None = None, as_samples: bool = False
) -> bool:
    """Make an aiortc audio ``RTCRtpReceiver`` decode in the loop's shared :class:`CodecWorker`.

    Call it on the event loop, before the connection is established (before
    aiortc starts the receiver). ``mono``: decode Opus to one channel (the peer
    sends mono). ``deliver``: called on the loop with each decoded frame, in
    order, instead of queueing it on the receiver's track (whose ``recv`` then
    only reports the end); that saves a consumer task's wake-up per frame.
    ``as_samples``: ``deliver`` gets each frame as ``(samples, sample_rate)``, the
    samples a read-only ``(channels, n)`` int16 array (:func:`frame_samples`),
    converted in the codec thread instead of on the loop.
    Returns ``False`` and leaves the receiver alone if it has started already or
    this aiortc version is laid out differently.
    """
    track = getattr(receiver, "_track", None)
    if getattr(receiver, "_RTCRtpReceiver__decoder_thread", True) is not None or track is None or track.kind != "audio":
        return False
    if not isinstance(getattr(track, "_queue", None), asyncio.Queue) or not hasattr(receiver, "_RTCRtpReceiver__decoder_queue"):
        return False
    receiver._RTCRtpReceiver__decoder_queue = _SharedDecoder(codec_worker(), track._queue, mono, deliver, as_samples and deliver is not None)  # type: ignore[attr-defined]
    return True
