"""Smart Turn v3.2 as the turn-end rule, in media time: what it gives and what it cuts.

The rule simulated is the one an end-of-turn model allows: when a pause has lasted
``--early`` ms (``vad(early_pause_ms=...)``), ask the model whether the turn so far is
complete; if it says so (probability > ``--threshold``), the turn ends there. Otherwise the
usual 448 ms pause ends it. Everything comes from ``ReplyOnPause(early_pause_ms=...)``'s
own events: each ``PendingUtterance`` is a pause the model is asked about, with the exact
audio the turn would have.

The model is the ONNX file that ships in the ``pipecat-ai`` wheel, with that wheel's numpy
Whisper feature code. Neither is imported as a package (pipecat's ``__init__`` needs its own
dependencies); unpack the wheel and point ``--pipecat`` at it:

    pip download --no-deps pipecat-ai==1.14.0 -d /tmp/pc && unzip -q /tmp/pc/*.whl -d /tmp/pc
    python benchmarks/experiments/smart-turn/smart_turn.py --pipecat /tmp/pc --per-voice 100

Also prints, without the VAD, the model's probability at each held-out prompt's end and at
a point inside it (the quietest 10 ms in its middle third), each followed by 0.2 s of silence.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_heldout as heldout  # noqa: E402
from bench_turns import join, reply_times, sentences, silence, with_noise  # noqa: E402
from flowrtc.events import PendingUtterance, ReplyStarted  # noqa: E402
from flowrtc.media import AudioChunk  # noqa: E402
from flowrtc.operators.resample import Resampler  # noqa: E402

MODEL_RATE = 16000
WINDOW_S = 8  # the model reads the last 8 s, zero-padded in front


class SmartTurn:
    def __init__(self, pipecat: Path) -> None:
        folder = pipecat / "pipecat" / "audio" / "turn" / "smart_turn"
        spec = importlib.util.spec_from_file_location("smart_turn_features", folder / "_whisper_features.py")
        assert spec and spec.loader
        self.features = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.features)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(folder / "data" / "smart-turn-v3.2-cpu.onnx"), sess_options=options)
        self.seconds: list[float] = []

    def __call__(self, audio: AudioChunk) -> float:
        """P(the turn is complete) for mono int16 audio at any rate."""
        if audio.sample_rate != MODEL_RATE:
            converter = Resampler(MODEL_RATE)
            audio = AudioChunk.concat([*converter.push(audio), *converter.flush()], pts=0)
        x = audio.samples[0].astype(np.float32) / 32768
        x = x[-WINDOW_S * MODEL_RATE :]
        x = np.pad(x, (WINDOW_S * MODEL_RATE - len(x), 0))
        began = time.perf_counter()
        mel = self.features.compute_whisper_log_mel_features(x, do_normalize=True)
        p = float(self.session.run(None, {"input_features": mel[None].astype(np.float32)})[0][0, 0])
        self.seconds.append(time.perf_counter() - began)
        return p


async def rule_replies(audio: AudioChunk, model: SmartTurn, early_ms: int, threshold: float) -> list[float]:
    """Turn ends under the rule: a pause the model calls complete, else the pause rule's reply.

    After a pause the model accepted, speech that comes back is a new turn; the pause rule's
    own reply to the accepted pause (the same pause, at most ``pause - early`` later) is dropped.
    """
    recording = await reply_times(audio, early_pause_ms=early_ms)
    ends: list[float] = []
    accepted: list[float] = []
    for item in sorted(recording.of_type(PendingUtterance, ReplyStarted), key=lambda item: item.media_time_s):
        t = item.media_time_s
        if isinstance(item, PendingUtterance):
            if model(item.utterance.audio) > threshold:
                ends.append(t)
                accepted.append(t)
        elif not any(0 <= t - a < 0.3 for a in accepted):
            ends.append(t)
    return ends


def held_out(voices: dict[str, Any], model: SmartTurn, early_ms: int, threshold: float) -> tuple[list[float], int, int]:
    latencies, split, said = [], 0, 0
    for voice, (prompts, _) in voices.items():
        parts, offsets, t = [], [], 0.0
        for p in prompts:
            offsets.append(t)
            parts += [p.audio, silence(heldout.GAP_S)]
            t += p.audio.duration_s + heldout.GAP_S
        ends = anyio.run(rule_replies, join(parts), model, early_ms, threshold)
        for i, (p, t0) in enumerate(zip(prompts, offsets)):
            begin, end = t0 + p.start_s, t0 + p.end_s
            until = offsets[i + 1] + prompts[i + 1].start_s if i + 1 < len(prompts) else float("inf")
            said += 1
            split += any(begin <= e < end for e in ends)
            after = [e for e in ends if end <= e < until]
            if after:
                latencies.append(after[0] - end)
    return latencies, split, said


def pairs_cut(model: SmartTurn, early_ms: int, threshold: float, gap_s: float, noise: float) -> int:
    said = sentences()
    cut = 0
    for first, second in zip(said, said[1:]):
        rate = first.audio.sample_rate
        audio = join([first.audio.slice(0, round(first.end_s * rate)), silence(gap_s), second.audio.slice(round(second.start_s * rate)), silence(1.0)])
        ends = anyio.run(rule_replies, with_noise(audio, level=noise) if noise else audio, model, early_ms, threshold)
        cut += len(ends) > 1
    return cut


def end_and_middle(voices: dict[str, Any], model: SmartTurn) -> None:
    print("| voice | prompts | P(complete) at the end: median, share > 0.5 | inside: median, share > 0.5 |")
    print("| --- | ---: | ---: | ---: |")
    tail = silence(0.2)
    for voice, (prompts, _) in voices.items():
        ends, middles = [], []
        for p in prompts:
            rate = p.audio.sample_rate
            ends.append(model(join([p.audio.slice(0, round(p.end_s * rate)), tail])))
            lo, hi = p.start_s + 0.35 * (p.end_s - p.start_s), p.start_s + 0.65 * (p.end_s - p.start_s)
            frame = rate // 100
            x = p.audio.samples[0, round(lo * rate) : round(hi * rate)].astype(np.float64)
            x = x[: len(x) // frame * frame].reshape(-1, frame)
            cut = round(lo * rate) + int(np.argmin((x**2).mean(axis=1))) * frame + frame // 2
            middles.append(model(join([p.audio.slice(0, cut), tail])))
        e, m = np.array(ends), np.array(middles)
        print(f"| {voice} | {len(prompts)} | {np.median(e):.2f}, {np.mean(e > 0.5):.0%} | {np.median(m):.2f}, {np.mean(m > 0.5):.0%} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipecat", type=Path, required=True, help="an unpacked pipecat-ai wheel")
    parser.add_argument("--per-voice", type=int, default=100)
    parser.add_argument("--early", default="192", help="pauses (ms) at which the model is asked, comma-separated")
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    model = SmartTurn(args.pipecat)
    cache = heldout.heldout_cache()
    voices = {voice: heldout.prompts(cache, voice, args.per_voice) for voice in heldout.VOICES}
    end_and_middle(voices, model)
    print()
    print("| asked at (ms) | held-out turn latency median / p90 (s) | held-out prompts split | "
          + " | ".join(f"tuning pairs cut at {gap:.2f} s: silence / -50 / -40 dBFS" for gap in heldout.PAIR_GAPS_S[:3]) + " |")
    print("| ---: | ---: | ---: |" + " ---: |" * 3)
    for early_ms in [int(v) for v in args.early.split(",")]:
        latencies, split, said = held_out(voices, model, early_ms, args.threshold)
        cells = [" / ".join(f"{pairs_cut(model, early_ms, args.threshold, gap, noise)}/8" for noise in heldout.PAIR_NOISE) for gap in heldout.PAIR_GAPS_S[:3]]
        print(f"| {early_ms} | {heldout.pct(latencies, 50):.3f} / {heldout.pct(latencies, 90):.3f} | {split}/{said} | {' | '.join(cells)} |", flush=True)
    print(f"\nmodel call (features + ONNX, one thread): median {1000 * statistics.median(model.seconds):.0f} ms over {len(model.seconds)} calls")


if __name__ == "__main__":
    main()
