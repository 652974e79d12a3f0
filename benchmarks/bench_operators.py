"""Cost of flowrtc's media operators and of the operator algebra itself.

Run: ``python benchmarks/bench_operators.py [--runs 7] [--frames 1000]``

Every figure is the median of ``--runs`` runs over real speech (the Asterisk
"demo-thanks" prompt in tests/media, resampled to 48 kHz and cut into 20 ms
frames). Operator rows are *net* costs: the time to drain
``source | operator`` minus the time to drain the bare source, divided by the
number of 20 ms frames. The ``x hop`` column is that cost as a multiple of one
bare async-generator hop measured in the same run (the baseline), so the ratios
stay comparable across machines.

Targets (a 2-core machine):

* µ-law encode+decode >= 50 M samples/s (vectorised G.711);
* resample 48 kHz -> 16 kHz >= 20,000 frames/s (20 ms frames);
* the algebra's own cost <= 5 µs per item per stage: a 10-stage chain of
  ``identity`` operators against 10 bare async generators.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowrtc.events import Interrupt  # noqa: E402
from flowrtc.g711 import mulaw_to_pcm16, pcm16_to_mulaw  # noqa: E402
from flowrtc.media import AudioChunk  # noqa: E402
from flowrtc.operators import (  # noqa: E402
    decode,
    encode,
    handler,
    identity,
    mulaw_decode,
    mulaw_encode,
    pace,
    rechunk,
    resample,
)
from flowrtc.operators.resample import Resampler  # noqa: E402
from flowrtc.testing import audio_frames, load_audio  # noqa: E402

CLIP = ROOT / "tests" / "media" / "asterisk_demo-thanks_8k.wav"
FRAME_MS = 20

MULAW_TARGET_MSPS = 50.0
RESAMPLE_TARGET_FPS = 20_000.0
CORE_TARGET_US = 5.0
CHAIN_STAGES = 10


# -- sources -------------------------------------------------------------------------------
async def source(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def bare_hop(upstream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for item in upstream:
        yield item


async def drain(stream: Any) -> int:
    count = 0
    async for _ in stream:
        count += 1
    return count


def measure(make: Callable[[], Any], runs: int) -> float:
    """Median wall seconds to drain the stream ``make()`` builds (fresh each run)."""
    times = []
    for _ in range(runs):
        stream = make()
        start = time.perf_counter()
        _LOOP.run_until_complete(drain(stream))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_sync(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_LOOP = asyncio.new_event_loop()


# -- the table ---------------------------------------------------------------------------------
class Table:
    def __init__(self, baseline_us: float) -> None:
        self.baseline_us = baseline_us
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, name: str, per_frame_us: float, extra: str = "") -> None:
        ratio = per_frame_us / self.baseline_us if self.baseline_us > 0 else float("nan")
        self.rows.append((name, f"{per_frame_us:.2f}", f"{ratio:.1f}", extra))

    def print(self) -> None:
        header = ("operator (net cost per 20 ms frame)", "µs/frame", "x hop", "")
        widths = [max(len(row[i]) for row in [header, *self.rows]) for i in range(4)]
        line = "  ".join(h.ljust(w) if i in (0, 3) else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
        print(line.rstrip())
        print("-" * len(line))
        for row in self.rows:
            print("  ".join(cell.ljust(w) if i in (0, 3) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (median is reported; >= 5)")
    parser.add_argument("--frames", type=int, default=1000, help="20 ms frames per run")
    args = parser.parse_args(list(argv) if argv is not None else None)
    runs = max(5, args.runs)

    speech = load_audio(CLIP, sample_rate=48000)
    base_frames = audio_frames(speech, frame_ms=FRAME_MS)
    base_frames = [f for f in base_frames if f.n_samples == base_frames[0].n_samples]
    reps = -(-args.frames // len(base_frames))
    frames48 = [f.with_pts(i * f.n_samples) for i, f in enumerate((base_frames * reps)[: args.frames])]
    n = len(frames48)
    frames16 = [AudioChunk(np.ascontiguousarray(f.samples[:, ::3]), 16000, f.pts // 3) for f in frames48]
    frames8 = [AudioChunk(np.ascontiguousarray(f.samples[:, ::6]), 8000, f.pts // 6) for f in frames48]
    pcm48 = [f.to_pcm() for f in frames48]
    mulaw8 = [f.to_mulaw() for f in frames8]
    tuples48 = [(48000, np.array(f.samples[0])) for f in frames48]
    av48 = [f.to_av("s16") for f in frames48]
    halves48 = [piece for f in frames48 for piece in (f.slice(0, 480), f.slice(480))]

    # Baseline: one bare async-generator hop, same items, same loop.
    t_source = measure(lambda: source(frames48), runs)
    t_hop = measure(lambda: bare_hop(source(frames48)), runs)
    hop_us = max(t_hop - t_source, 1e-9) / n * 1e6
    table = Table(hop_us)
    table.add("bare async-generator hop (baseline)", hop_us)

    def net(make: Callable[[], Any], items: list[Any], count: int | None = None) -> float:
        t_src = measure(lambda: source(items), runs)
        t_op = measure(make, runs)
        return max(t_op - t_src, 0.0) / (count or n) * 1e6

    table.add("identity", net(lambda: source(frames48) | identity(), frames48))
    table.add("decode (48 kHz PCM bytes)", net(lambda: source(pcm48) | decode(sample_rate=48000), pcm48))
    table.add("decode (av.AudioFrame)", net(lambda: source(av48) | decode(), av48))
    table.add("decode ((rate, ndarray) tuple)", net(lambda: source(tuples48) | decode(), tuples48))
    resample_us = net(lambda: source(frames48) | resample(16000), frames48)
    table.add("resample 48 kHz -> 16 kHz", resample_us, f"{1e6 / resample_us:,.0f} frames/s")
    table.add("resample 16 kHz -> 48 kHz", net(lambda: source(frames16) | resample(48000), frames16))
    table.add("resample 48 kHz stereo -> mono", net(lambda: source([f.to_layout(2) for f in frames48]) | resample(layout="mono"), frames48))
    table.add("rechunk 20 ms -> 20 ms", net(lambda: source(frames48) | rechunk(duration_ms=20), frames48))
    table.add("rechunk 2 x 10 ms -> 20 ms", net(lambda: source(halves48) | rechunk(duration_ms=20), halves48))
    table.add("encode (48 kHz -> 16 kHz, 20 ms chunks)", net(lambda: source(frames48) | encode(sample_rate=16000), frames48))
    table.add("encode (to 48 kHz PCM bytes)", net(lambda: source(frames48) | encode(to="pcm"), frames48))
    table.add("encode (to av.AudioFrame)", net(lambda: source(frames48) | encode(to="av"), frames48))
    table.add("mulaw_encode (8 kHz)", net(lambda: source(frames8) | mulaw_encode(), frames8))
    table.add("mulaw_decode (8 kHz)", net(lambda: source(mulaw8) | mulaw_decode(), mulaw8))

    fake_now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        fake_now[0] += seconds

    table.add(
        "pace (injected clock)",
        net(lambda: source(frames48) | pace(clock=lambda: fake_now[0], sleep=fake_sleep), frames48),
    )

    async def async_echo(audio: Any) -> Any:
        return audio

    def sync_echo(audio: Any) -> Any:
        return audio

    table.add("handler (async def)", net(lambda: source(frames48) | handler(async_echo), frames48))
    table.add("handler (plain def, worker thread)", net(lambda: source(frames48) | handler(sync_echo), frames48))
    chain_us = net(
        lambda: source(pcm48) | decode(sample_rate=48000) | resample(16000) | encode(sample_rate=48000, to="pcm"),
        pcm48,
    )
    table.add("chain decode -> resample(16k) -> encode(48k pcm)", chain_us)
    interrupted = frames48[: n // 2] + [Interrupt(media_time_s=0.0)] + frames48[n // 2 :]
    table.add("encode(16 kHz) with an Interrupt mid-stream", net(lambda: source(interrupted) | encode(sample_rate=16000), interrupted, n))

    # -- targets ------------------------------------------------------------------------------
    samples = np.concatenate([f.samples[0] for f in frames48])
    mulaw_s = measure_sync(lambda: mulaw_to_pcm16(pcm16_to_mulaw(samples)), runs)
    mulaw_msps = samples.size / mulaw_s / 1e6

    def resample_frames() -> None:
        resampler = Resampler(16000)
        for frame in frames48:
            resampler.push(frame)
        resampler.flush()

    resample_fps = n / measure_sync(resample_frames, runs)

    def bare_chain() -> Any:
        stream: Any = source(frames48)
        for _ in range(CHAIN_STAGES):
            stream = bare_hop(stream)
        return stream

    def identity_chain() -> Any:
        stream: Any = source(frames48)
        for _ in range(CHAIN_STAGES):
            stream = stream | identity()
        return stream

    t_bare = measure(bare_chain, runs)
    t_identity = measure(identity_chain, runs)
    core_us = max(t_identity - t_bare, 0.0) / (n * CHAIN_STAGES) * 1e6
    bare_stage_us = max(t_bare - t_source, 0.0) / (n * CHAIN_STAGES) * 1e6

    print(f"flowrtc operator benchmark: {n} frames of 20 ms (48 kHz mono speech), median of {runs} runs")
    print()
    table.print()
    print()
    targets = [
        ("µ-law encode+decode, vectorised", f"{mulaw_msps:,.1f} M samples/s", f">= {MULAW_TARGET_MSPS:.0f} M samples/s", mulaw_msps >= MULAW_TARGET_MSPS),
        ("resample 48 -> 16 kHz, 20 ms frames", f"{resample_fps:,.0f} frames/s", f">= {RESAMPLE_TARGET_FPS:,.0f} frames/s", resample_fps >= RESAMPLE_TARGET_FPS),
        (
            f"core cost per item per stage ({CHAIN_STAGES} x identity vs {CHAIN_STAGES} bare async generators)",
            f"{core_us:.3f} µs",
            f"<= {CORE_TARGET_US:.0f} µs",
            core_us <= CORE_TARGET_US,
        ),
    ]
    header = ("target", "measured", "wanted", "verdict")
    rows = [(name, measured, wanted, verdict(ok)) for name, measured, wanted, ok in targets]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    print(f"(a bare async-generator stage costs {bare_stage_us:.3f} µs per item; an identity operator {bare_stage_us + core_us:.3f} µs)")
    ok = mulaw_msps >= MULAW_TARGET_MSPS and resample_fps >= RESAMPLE_TARGET_FPS and core_us <= CORE_TARGET_US
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
