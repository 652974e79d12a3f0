"""Silero VAD cost: unbatched vs batched, per window and per second of audio.

Run: ``python benchmarks/bench_vad.py [--rate 16000] [--runs 5]``

For each batch size B (number of concurrent streams) it measures, as the
median over ``--runs`` runs on real speech (the Asterisk IVR prompt in
tests/media, upsampled to 16 kHz by linear interpolation when ``--rate 16000``):

* unbatched: B :class:`VADStream` objects scored one window per call;
* infer: raw :meth:`SileroVAD.infer` on ``[B, ctx + win]`` batches;
* engine: B :class:`EngineStream` tasks on one :class:`VADEngine`, each pushing
  20 ms frames, end to end (event loop, windowing, worker thread).

Columns: µs of wall time per window, µs of process CPU (all threads) per window,
and CPU seconds per second of audio per stream (CPU per window x windows per s).

Last, the cost of ``vad``'s resume hold: reading the level of every window the model
scored (``_Levels``, on the rows ``VADStream.prepare`` cut; the detector only reads a
pause's), against unbatched Silero on the same windows in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowrtc.models.vad import (  # noqa: E402
    WINDOW_SAMPLES,
    VADEngine,
    VADStream,
    get_silero_vad,
)

CLIP = ROOT / "tests" / "media" / "asterisk_basic-pbx-ivr-main_8k.wav"
TOTAL_WINDOWS = 4096  # windows scored per run, over all streams


def load(rate: int) -> np.ndarray:
    """The clip as float32 at ``rate`` Hz."""
    with wave.open(str(CLIP)) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
        sr = w.getframerate()
    if rate == sr:
        return audio
    t_out = np.arange(int(len(audio) * rate / sr)) / rate
    return np.interp(t_out, np.arange(len(audio)) / sr, audio).astype(np.float32)


def timed(fn) -> tuple[float, float]:
    """Run ``fn`` and return (wall seconds, process CPU seconds)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def streams_audio(audio: np.ndarray, b: int, n_windows: int, win: int) -> list[np.ndarray]:
    """``b`` different slices of ``n_windows`` windows each."""
    need = n_windows * win
    step = max(1, (len(audio) - need) // max(1, b))
    return [np.resize(audio[(i * step) % len(audio) :], need) for i in range(b)]


def run_unbatched(clips: list[np.ndarray], rate: int) -> None:
    for c in clips:
        VADStream(rate).push(c)


def run_infer(clips: list[np.ndarray], rate: int) -> None:
    model = get_silero_vad()
    rows = [VADStream(rate).prepare(c) for c in clips]
    windows = np.stack(rows, axis=1)  # [n, B, ctx + win]
    state = np.zeros((2, len(clips), 128), np.float32)
    for batch in windows:
        _, state = model.infer(batch, state, rate)


def run_engine(clips: list[np.ndarray], rate: int) -> VADEngine:
    frame = rate // 50  # 20 ms

    async def one(stream, audio):
        for pos in range(0, len(audio), frame):
            await stream.push(audio[pos : pos + frame])
        await stream.aclose()

    async def main() -> VADEngine:
        engine = VADEngine()
        await asyncio.gather(*(one(engine.stream(rate), c) for c in clips))
        return engine

    return asyncio.run(main())


def run_levels(clips: list[np.ndarray], rate: int) -> None:
    from flowrtc.operators.vad import _Levels

    win = WINDOW_SAMPLES[rate]
    for c in clips:
        stream = VADStream(rate)
        windows = stream.prepare(c)  # the rows the model scores (one vectorised cut of the clip)
        levels = _Levels(windows, win)
        for i in range(len(levels)):
            levels[i]  # each level read, as the detector reads a pause's windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=16000, choices=[8000, 16000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32, 128])
    args = parser.parse_args()
    rate, win = args.rate, WINDOW_SAMPLES[args.rate]
    per_second = rate / win
    audio = load(rate)
    get_silero_vad()
    run_infer(streams_audio(audio, 8, 20, win), rate)  # warm up

    print(f"Silero VAD v6, {rate} Hz, {win}-sample windows ({per_second:.2f} per s of audio), "
          f"median of {args.runs} runs, {TOTAL_WINDOWS} windows per run")
    head = (f"{'B':>4} | {'mode':<9} | {'wall us/win':>11} | {'CPU us/win':>10} | "
            f"{'CPU s per audio s/stream':>24} | {'mean batch':>10}")
    print(head)
    print("-" * len(head))
    for b in args.sizes:
        n = max(16, TOTAL_WINDOWS // b)
        clips = streams_audio(audio, b, n, win)
        for mode in ("unbatched", "infer", "engine"):
            walls, cpus, mean_batch = [], [], float(b if mode != "unbatched" else 1)
            for _ in range(args.runs):
                if mode == "unbatched":
                    wall, cpu = timed(lambda: run_unbatched(clips, rate))
                elif mode == "infer":
                    wall, cpu = timed(lambda: run_infer(clips, rate))
                else:
                    box = []
                    wall, cpu = timed(lambda: box.append(run_engine(clips, rate)))
                    mean_batch = box[0].windows / box[0].batches
                walls.append(wall / (n * b))
                cpus.append(cpu / (n * b))
            w, c = statistics.median(walls), statistics.median(cpus)
            print(f"{b:>4} | {mode:<9} | {w * 1e6:>11.1f} | {c * 1e6:>10.1f} | "
                  f"{c * per_second:>24.5f} | {mean_batch:>10.1f}")

    clips = streams_audio(audio, 8, TOTAL_WINDOWS // 8, win)
    runs = {"Silero, unbatched": lambda: run_unbatched(clips, rate), "levels": lambda: run_levels(clips, rate)}
    costs = {name: statistics.median(timed(fn)[1] for _ in range(args.runs)) / TOTAL_WINDOWS for name, fn in runs.items()}
    silero = costs["Silero, unbatched"]
    print(f"\nresume hold: reading a window's level {costs['levels'] * 1e6:.1f} µs, "
          f"{costs['levels'] / silero:.1%} of unbatched Silero's {silero * 1e6:.1f} µs per window; "
          f"the detector reads only a pause's windows")


if __name__ == "__main__":
    main()
