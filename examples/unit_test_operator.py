"""Unit-test a custom operator with a real recording.

The operator, ``energy_activity``, marks where the signal is loud enough to be
speech: it passes every item through and adds ``SpeechStarted`` /
``SpeechStopped`` events in band, timed by sample counts (media time), never
by the wall clock. Because of that, the same recording gives the same events
on every run, at any speed, and the tests below can assert exact times.

Run it either way (from the repository root):

    python examples/unit_test_operator.py      # runs the tests, prints the timeline
    python -m pytest examples/unit_test_operator.py -q

The recording is tests/media/asterisk_demo-thanks_8k.wav ("Goodbye. Thank you
for trying out the Asterisk Open Source PBX."). Silero VAD puts its speech at
0.26-1.12 s and 1.25-5.37 s (tests/media/LICENSE.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator

import anyio
import numpy as np

from flowrtc import AudioChunk, Graph, SpeechStarted, SpeechStopped, decode, operator
from flowrtc.operators import scoped
from flowrtc.testing import audio_frames, load_audio, run

RECORDING = Path(__file__).resolve().parent.parent / "tests" / "media" / "asterisk_demo-thanks_8k.wav"


# -- the operator under test ---------------------------------------------------------------------
@operator
async def energy_activity(
    source: AsyncIterable[Any], *, threshold_db: float = -45.0, hold_ms: float = 200.0
) -> AsyncIterator[Any]:
    """Add SpeechStarted/SpeechStopped events from the energy of each audio chunk.

    Options:
        threshold_db: RMS level (dBFS) above which a chunk counts as speech.
        hold_ms: how long the level must stay below the threshold to end speech.

    ``SpeechStarted`` comes just before the first loud chunk, timed at its start;
    ``SpeechStopped`` comes once the quiet has lasted ``hold_ms``, timed where the
    quiet began. Every item passes through unchanged.
    """
    speaking = False
    quiet_since: float | None = None
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                samples = item.to_float32().samples
                rms = float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0
                loud = 20 * np.log10(max(rms, 1e-9)) > threshold_db
                if loud:
                    quiet_since = None
                    if not speaking:
                        speaking = True
                        yield SpeechStarted(media_time_s=item.media_time_s)
                elif speaking:
                    if quiet_since is None:
                        quiet_since = item.media_time_s
                    if item.media_time_s + item.duration_s - quiet_since >= hold_ms / 1000:
                        speaking = False
                        yield SpeechStopped(media_time_s=quiet_since)
            yield item


# -- tests: feed frames straight in ------------------------------------------------------------------
async def collect(flow: Any) -> list[Any]:
    return [item async for item in flow]


async def frames_of(chunk: AudioChunk) -> AsyncIterator[AudioChunk]:
    for frame in audio_frames(chunk, frame_ms=20):
        yield frame


def test_passes_every_frame_through_and_times_events_by_samples() -> None:
    speech = load_audio(RECORDING)
    out = anyio.run(collect, frames_of(speech) | energy_activity())
    frames = [item for item in out if isinstance(item, AudioChunk)]
    assert AudioChunk.concat(frames).samples.tobytes() == speech.samples.tobytes()
    starts = [e.media_time_s for e in out if isinstance(e, SpeechStarted)]
    stops = [e.media_time_s for e in out if isinstance(e, SpeechStopped)]
    # Exact, because time is counted in samples: 13 frames of 20 ms before the first word.
    assert starts[0] == 0.26 and stops[0] == 1.0
    assert starts[1] == 1.28
    # Within 0.15 s of what Silero VAD says about the same recording.
    assert abs(starts[0] - 0.26) <= 0.15 and abs(stops[0] - 1.12) <= 0.15 and abs(starts[1] - 1.25) <= 0.15


def test_silence_gives_no_events() -> None:
    out = anyio.run(collect, frames_of(AudioChunk.silence(1.0, 8000)) | energy_activity())
    assert [type(item) for item in out] == [AudioChunk] * 50


# -- tests: a whole graph on the recording, with flowrtc.testing.run ---------------------------------
def test_in_a_graph_with_run() -> None:
    graph = Graph(audio=decode() | energy_activity(hold_ms=300))
    recording = run(graph, audio=RECORDING, trailing_silence_s=0.5)
    assert recording.times(SpeechStarted)[0] == 0.26
    assert len(recording.times(SpeechStarted)) == len(recording.times(SpeechStopped))
    # The timeline is in input media time: the last stop is before the recording (5.52 s) ends.
    assert recording.times(SpeechStopped)[-1] <= recording.input_duration_s
    assert recording.audio.n_samples == load_audio(RECORDING).n_samples + 4000  # audio passed through


if __name__ == "__main__":
    tests = [test_passes_every_frame_through_and_times_events_by_samples, test_silence_gives_no_events, test_in_a_graph_with_run]
    for test in tests:
        test()
        print(f"ok  {test.__name__}")
    recording = run(Graph(audio=decode() | energy_activity()), audio=RECORDING)
    for at, event in recording.timeline:
        if not isinstance(event, AudioChunk):
            print(f"{at:6.2f} s  {type(event).__name__}")
    sys.exit(0)
