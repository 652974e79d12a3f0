"""Flip a webcam feed upside down: a video function with an additional input.

The handler is a plain function ``frame -> frame``. It gets each frame as a BGR
numpy array plus the stream's extra inputs (here a brightness slider) and runs
in a worker thread, so a slow model never blocks the server.

    python examples/video_flip.py          # run it on synthetic frames and print what came back
    python examples/video_flip.py --serve  # open http://127.0.0.1:8000 and use your webcam
"""

from __future__ import annotations

import sys

import numpy as np

from flowrtc import AdditionalOutputs, Slider, Stream, VideoFrame
from flowrtc.testing import Recording, run


def flip_vertically(image: np.ndarray, brightness: float = 1.0) -> tuple[np.ndarray, AdditionalOutputs]:
    flipped = np.flip(image, axis=0)
    if brightness != 1.0:
        flipped = np.clip(flipped * brightness, 0, 255).astype(np.uint8)
    return flipped, AdditionalOutputs(float(flipped.mean()))  # e.g. for a brightness meter


stream = Stream(
    handler=flip_vertically,
    modality="video",
    mode="send-receive",
    additional_inputs=[Slider(minimum=0.0, maximum=2.0, step=0.1, value=1.0, label="Brightness")],
)


def gradient(index: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A test picture: dark at the top, bright at the bottom, shifting with ``index``."""
    rows = np.linspace(0, 200, height, dtype=np.float32)[:, None] + index
    return np.repeat(np.clip(rows, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2).repeat(width, axis=1)


def main() -> Recording:
    frames = [VideoFrame(gradient(i), pts=3000 * i) for i in range(10)]  # 30 fps
    recording = run(stream.graph(), video=frames, video_buffer=len(frames))
    for original, flipped in zip(frames, recording.video):
        print(
            f"frame at {flipped.media_time_s:.3f} s: top row {original.image[0, 0, 0]:3d} -> "
            f"{flipped.image[0, 0, 0]:3d}, bottom row {original.image[-1, 0, 0]:3d} -> {flipped.image[-1, 0, 0]:3d}"
        )
    means = [outputs.args[0] for outputs in recording.of_type(AdditionalOutputs)]
    print(f"{len(recording.video)} frames flipped; mean brightness {means[0]:.1f} .. {means[-1]:.1f}")
    return recording


if __name__ == "__main__":
    if "--serve" in sys.argv:
        stream.launch()
    else:
        main()
