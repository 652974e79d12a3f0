"""Echo the caller's voice back: FastRTC's StreamHandler, sync and async.

A StreamHandler gets every 20 ms input frame in ``receive`` and is asked for
output with ``emit``, which returns ``None`` while nothing is ready. flowrtc calls
``emit`` right after each ``receive`` and otherwise polls it slowly, so an idle
connection costs next to no CPU. Sync methods run in worker threads; the async
handler's methods run on the event loop.

    python examples/stream_handler_echo.py          # echo a recording and compare
    python examples/stream_handler_echo.py --serve  # talk to it at http://127.0.0.1:8000
"""

from __future__ import annotations

import asyncio
import queue
import sys
from importlib.resources import files

import numpy as np

from flowrtc import AsyncStreamHandler, Stream, StreamHandler, wait_for_item
from flowrtc.testing import Recording, load_audio, run


class EchoHandler(StreamHandler):
    """Sends back what it hears, 20 ms at a time."""

    def __init__(self) -> None:
        super().__init__(input_sample_rate=24000, output_sample_rate=24000)
        self.queue: queue.Queue[tuple[int, np.ndarray]] = queue.Queue()

    def receive(self, frame: tuple[int, np.ndarray]) -> None:
        self.queue.put(frame)  # (24000, int16 array of shape (1, 480))

    def emit(self) -> tuple[int, np.ndarray] | None:
        try:
            return self.queue.get_nowait()
        except queue.Empty:
            return None  # nothing to send yet

    def copy(self) -> EchoHandler:
        return EchoHandler()  # one fresh handler per connection


class AsyncEchoHandler(AsyncStreamHandler):
    """The same with coroutines: ``emit`` may simply wait (briefly) for the next frame."""

    def __init__(self) -> None:
        super().__init__(input_sample_rate=24000, output_sample_rate=24000)
        self.queue: asyncio.Queue[tuple[int, np.ndarray]] = asyncio.Queue()

    async def receive(self, frame: tuple[int, np.ndarray]) -> None:
        await self.queue.put(frame)

    async def emit(self) -> tuple[int, np.ndarray] | None:
        return await wait_for_item(self.queue)  # None after 0.1 s without input

    def copy(self) -> AsyncEchoHandler:
        return AsyncEchoHandler()


stream = Stream(handler=EchoHandler(), modality="audio", mode="send-receive")
async_stream = Stream(handler=AsyncEchoHandler(), modality="audio", mode="send-receive")


def main() -> dict[str, Recording]:
    voice = load_audio(files("flowrtc.static") / "hello-world_8k.wav")  # 8 kHz: resampled to 24 kHz for receive
    recordings = {}
    for name, echo in (("EchoHandler", stream), ("AsyncEchoHandler", async_stream)):
        recording = run(echo.graph(), audio=voice)
        heard = sum(chunk.n_samples for chunk in recording.audio_chunks) / 24000
        print(f"{name}: {voice.duration_s:.2f} s in at {voice.sample_rate} Hz, {heard:.2f} s echoed at 24000 Hz")
        recordings[name] = recording
    return recordings


if __name__ == "__main__":
    if "--serve" in sys.argv:
        stream.launch()
    else:
        main()
