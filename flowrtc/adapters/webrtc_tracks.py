"""aiortc tracks that play a session's output, and the conversions around them.

* :class:`AudioOutputTrack` holds a **bounded** queue of 20 ms, 48 kHz stereo
  s16 frames and hands one to aiortc every 20 ms of wall-clock time, with pts
  running on continuously. When the queue is empty it sends a silent frame:
  the RTP timestamps then keep pace with real time, so the listener's jitter
  buffer never sees a burst of "late" packets when speech resumes (which is
  what happens when a track simply stops producing, as FastRTC's does).
  :meth:`AudioOutputTrack.flush` drops every queued frame (``Interrupt``).
* :class:`VideoOutputTrack` keeps only the newest frame (latest wins) and
  releases each new frame once, at most ``max_fps`` per second, stamped with
  wall-clock pts.
* :class:`AudioFrameEncoder` converts output AudioChunks (any rate, mono or
  stereo, int16 or float32) to those 20 ms frames.
"""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import anyio
import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from flowrtc.media import AudioChunk, VideoFrame

__all__ = [
    "AUDIO_RATE",
    "AUDIO_PTIME_S",
    "SAMPLES_PER_FRAME",
    "AudioFrameEncoder",
    "AudioOutputTrack",
    "VideoOutputTrack",
]

AUDIO_RATE = 48000
AUDIO_PTIME_S = 0.020
SAMPLES_PER_FRAME = int(AUDIO_RATE * AUDIO_PTIME_S)
VIDEO_CLOCK_RATE = 90000
_AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
_VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
# Past this much lateness the audio clock re-anchors instead of sending a burst
# (the event loop stalled, or the sender started late).
_MAX_AUDIO_LAG_S = 0.1
_SILENCE = bytes(SAMPLES_PER_FRAME * 2 * 2)
_LAYOUTS = {1: "mono", 2: "stereo"}


class AudioFrameEncoder:
    """AudioChunks → 48 kHz stereo s16 ``av.AudioFrame`` s of exactly 20 ms.

    A tail shorter than 20 ms waits for the next chunk; :meth:`reset` drops it
    (after an Interrupt), :meth:`flush` pads it to a whole frame (at the end).
    """

    __slots__ = ("_resampler", "_key")

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[int, int, np.dtype] | None = None

    def push(self, chunk: AudioChunk) -> list[av.AudioFrame]:
        if chunk.channels not in _LAYOUTS:
            chunk = chunk.to_layout("stereo")
        key = (chunk.sample_rate, chunk.channels, chunk.samples.dtype)
        frames: list[av.AudioFrame] = []
        if key != self._key:
            frames = self.flush()
            self._key = key
            self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE, frame_size=SAMPLES_PER_FRAME)
        fmt = "s16p" if chunk.samples.dtype == np.int16 else "fltp"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.samples), format=fmt, layout=_LAYOUTS[chunk.channels])
        frame.sample_rate = chunk.sample_rate
        assert self._resampler is not None
        frames.extend(self._resampler.resample(frame))
        return frames

    def flush(self) -> list[av.AudioFrame]:
        """The buffered tail, padded with silence to one whole frame."""
        if self._resampler is None:
            return []
        tail = list(self._resampler.resample(None))
        self._resampler = None
        self._key = None
        frames = []
        for frame in tail:
            if frame.samples == SAMPLES_PER_FRAME:
                frames.append(frame)
                continue
            padded = np.zeros((1, SAMPLES_PER_FRAME * 2), np.int16)
            data = frame.to_ndarray().reshape(1, -1)
            padded[:, : data.shape[1]] = data
            whole = av.AudioFrame.from_ndarray(padded, format="s16", layout="stereo")
            whole.sample_rate = AUDIO_RATE
            frames.append(whole)
        return frames

    def reset(self) -> None:
        """Forget buffered samples (they were never going to play)."""
        self._resampler = None
        self._key = None


def _silence_frame() -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="stereo", samples=SAMPLES_PER_FRAME)
    frame.planes[0].update(_SILENCE)
    return frame


class AudioOutputTrack(MediaStreamTrack):
    """Plays queued 20 ms frames in real time; silence when the queue is empty.

    Args:
        queue_frames: most frames queued before :meth:`put` waits (backpressure
            to the session, so a fast producer never builds up a backlog).
    """

    kind = "audio"

    def __init__(self, queue_frames: int = 10) -> None:
        super().__init__()
        self._send, self._receive = anyio.create_memory_object_stream[av.AudioFrame](max(1, queue_frames))
        self._pts = 0
        self._start: float | None = None
        self.frames_played = 0
        self.silent_frames = 0
        self.frames_flushed = 0
        self.reanchors = 0

    @property
    def queued(self) -> int:
        """Frames waiting to play."""
        return self._send.statistics().current_buffer_used

    async def put(self, frame: av.AudioFrame) -> bool:
        """Queue one 20 ms frame, waiting while the queue is full; ``False`` once the track has stopped."""
        try:
            await self._send.send(frame)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True

    def flush(self) -> int:
        """Drop every queued, unplayed frame; returns how many."""
        dropped = 0
        while True:
            try:
                self._receive.receive_nowait()
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

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._pts / AUDIO_RATE
            if now - due > _MAX_AUDIO_LAG_S:
                self._start = now - self._pts / AUDIO_RATE
                self.reanchors += 1
            elif due > now:
                await asyncio.sleep(due - now)
        try:
            frame = self._receive.receive_nowait()
            self.frames_played += 1
        except anyio.WouldBlock:
            frame = _silence_frame()
            self.silent_frames += 1
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise MediaStreamError from None
        frame.pts = self._pts
        frame.sample_rate = AUDIO_RATE
        frame.time_base = _AUDIO_TIME_BASE
        self._pts += frame.samples
        return frame

    def stop(self) -> None:
        super().stop()
        self._send.close()
        self._receive.close()


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
