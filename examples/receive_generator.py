"""Stream from the server to the client: receive-mode generators.

In ``mode="receive"`` the handler is a generator function (sync or async). It is
called once per connection with the stream's extra inputs and yields audio as
``(sample_rate, array)``, video frames as arrays, ``AdditionalOutputs``, or pairs
of them. The session ends when the generator does. Video frames go out at the
``fps`` of a ``VideoStreamHandler``.

    python examples/receive_generator.py          # run both streams and print what they sent
    python examples/receive_generator.py --serve  # listen at http://127.0.0.1:8000
"""

from __future__ import annotations

import sys
from typing import Any, AsyncIterator, Iterator

import numpy as np

from flowrtc import AdditionalOutputs, Number, Stream, VideoStreamHandler
from flowrtc.testing import Recording, run

RATE = 24000


def beeps(count: int = 3) -> Iterator[Any]:
    """``count`` short beeps, rising in pitch, each announced as an additional output."""
    t = np.arange(int(0.2 * RATE)) / RATE
    for i in range(int(count)):
        tone = (np.sin(2 * np.pi * 440 * (1 + i / 4) * t) * 8000).astype(np.int16)
        yield (RATE, tone.reshape(1, -1)), AdditionalOutputs(f"beep {i + 1} of {count}")
        yield RATE, np.zeros((1, int(0.1 * RATE)), np.int16)  # a short gap


async def color_bars(frames: int = 15) -> AsyncIterator[np.ndarray]:
    """An async generator of frames: a bar sweeping across the picture."""
    for i in range(frames):
        picture = np.zeros((48, 64, 3), np.uint8)
        picture[:, (i * 4) % 64 : (i * 4) % 64 + 8] = (0, 200, 255)
        yield picture


audio_stream = Stream(
    handler=beeps,
    modality="audio",
    mode="receive",
    additional_inputs=[Number(value=3, label="Beeps", minimum=1, maximum=10)],
)
video_stream = Stream(handler=VideoStreamHandler(color_bars, fps=15), modality="video", mode="receive")


def main() -> dict[str, Recording]:
    audio = run(audio_stream.graph())
    print(f"audio: {sum(c.duration_s for c in audio.audio_chunks):.2f} s at {RATE} Hz;", ", ".join(o.args[0] for o in audio.of_type(AdditionalOutputs)))
    video = run(video_stream.graph())
    print(f"video: {len(video.video)} frames, {video.video[-1].media_time_s:.3f} s of video at 15 fps")
    return {"audio": audio, "video": video}


if __name__ == "__main__":
    if "--serve" in sys.argv:
        audio_stream.launch()
    else:
        main()
