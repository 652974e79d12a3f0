"""Turn-taking on speech the defaults were not chosen on: four more speakers, four more languages.

Run: ``python benchmarks/bench_heldout.py [--per-voice 60] [--rates 8000,16000] [--cache DIR]``

The defaults of ``ReplyOnPause`` (pause 448 ms, 160 ms of speech to start a turn) were
chosen on three recordings of one speaker (tests/media). This benchmark measures the
same things on prompts none of that tuning saw, from Debian's Asterisk sound packages
(CC-BY-SA-3.0 / GPL, fetched once with ``apt-get download`` into ``--cache``; nothing
else is downloaded):

=========================== ======================================
voice                        package
=========================== ======================================
en_US Allison (other prompts) asterisk-core-sounds-en-wav
es_MX Allison (Spanish)       asterisk-core-sounds-es-wav
fr_CA June                    asterisk-core-sounds-fr-wav
it_IT Carlo (male)            asterisk-core-sounds-it-wav
it_IT Menardi                 asterisk-prompt-it-menardi-wav
ru_RU (IVR voice)             asterisk-core-sounds-ru-wav
music on hold (no speech)     asterisk-moh-opsound-wav
=========================== ======================================

Ground truth comes from **energy**, not from the VAD under test: 10 ms frames of the
8 kHz prompt; speech is a frame louder than both 35 dB under the prompt's loudest frame
and 10 dB over its noise floor (5th percentile); prompts without a clean floor
(5th percentile over -45 dBFS) are left out and counted. Each voice's prompts
(0.6-8 s long, every k-th in name order, tuning clips and tones excluded) are played one after
another with 1.5 s of silence between them, through ``ReplyOnPause`` at its defaults,
in media time (deterministic):

* **turn latency**: first reply after the prompt's last speech frame - the end of that frame;
* **missed**: prompts with no reply after their speech ended;
* **split**: replies while the prompt was still speaking, by the prompt's longest inner
  pause (a pause of 0.45 s or more is a turn by design; shorter ones should not split);
* **barge-in**: a 6 s reply plays, then the prompt: ``Interrupt`` - the prompt's first
  speech frame; prompts that never interrupted are counted;
* **music**: replies per minute of music on hold.

The nine tuning sentences are measured the same way (energy ground truth) for comparison.

``--pauses 352,384,416,448`` measures instead, for each turn-end pause, the held-out turn
latency and splits against the tuning sentence pairs joined by 0.25/0.30/0.35/0.40 s gaps, in
digital silence and over -50 and -40 dBFS noise floors: what a shorter pause costs.

``--early 128,192,256`` measures ``ReplyOnPause(early_pause_ms=...)`` instead: how long
before the turn's end the reply function gets the turn (the head start a slow function
gains), how many early calls are withdrawn because the pause was inside the turn, and
that every reply comes at the same media time as without it; held-out prompts and the
tuning sentence pairs (0.25-0.40 s gaps), in silence and over -50 and -40 dBFS floors.

``--pairs`` measures cut turns over pairs of consecutive held-out prompts joined by
0.25-0.40 s of silence (counted from the first's energy end to the second's energy start), at
the default pause or at each of ``--pauses``, over the floors of ``--floors`` (int16 rms;
default digital silence, -50 and -40 dBFS).

``--rise-db off`` (or a number of dB) sets ``vad``'s resume hold for the whole run
(default: the library's default, 3 dB), to measure what the hold does; ``--tail-db off``
(or a number of dB) the same for the pause counted from where the sound died away
(default: 40 dB).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_turns import MEDIA, apply_vad_option_args, at_rate, join, long_reply, reply_times, sentences, silence, vad_option_args, with_noise  # noqa: E402
from flowrtc.events import Interrupt, PendingUtterance, ReplyStarted  # noqa: E402
from flowrtc.handlers.options import AlgoOptions  # noqa: E402
from flowrtc.media import AudioChunk  # noqa: E402
from flowrtc.testing import load_audio  # noqa: E402

RATE = 8000
FRAME = 80  # 10 ms at 8 kHz
GAP_S = 1.5
VOICES = {
    "en_US Allison": ("asterisk-core-sounds-en-wav", "en_US_f_Allison"),
    "es_MX Allison": ("asterisk-core-sounds-es-wav", "es_MX_f_Allison"),
    "fr_CA June": ("asterisk-core-sounds-fr-wav", "fr_CA_f_June"),
    "it_IT Carlo": ("asterisk-core-sounds-it-wav", "it_IT_m_Carlo"),
    "it_IT Menardi": ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi"),
    "ru_RU": ("asterisk-core-sounds-ru-wav", "ru_RU_f_IvrvoiceRU"),
}
MUSIC = "asterisk-moh-opsound-wav"
TUNING_CLIPS = {"hello-world.wav", "demo-thanks.wav", "basic-pbx-ivr-main.wav"}
#: prompts that are tones, not speech (no reply is the right answer)
NOT_SPEECH = {"beep.wav", "beeperr.wav", "confbridge-join.wav", "confbridge-leave.wav"}


@dataclass
class Prompt:
    name: str
    audio: AudioChunk  # 8 kHz mono
    start_s: float  # first speech frame
    end_s: float  # end of the last speech frame
    longest_pause_s: float  # longest run of non-speech frames inside the speech


def heldout_cache() -> Path:
    """Where the packages are unpacked: ``$FLOWRTC_HELDOUT`` or ``~/.cache/flowrtc-heldout``."""
    return Path(os.environ.get("FLOWRTC_HELDOUT", str(Path.home() / ".cache" / "flowrtc-heldout")))


def fetch(cache: Path, package: str) -> Path:
    """The unpacked package under ``cache`` (downloaded from the apt mirror on first use)."""
    root = cache / package
    if root.is_dir():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
    deb = next(cache.glob(f"{package}_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    deb.unlink()
    return root


def speech_bounds(samples: np.ndarray) -> tuple[float, float, float] | None:
    """(start, end, longest inner pause) in seconds from energy, or None without a clean floor."""
    n = len(samples) // FRAME
    frames = samples[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    level = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) / 32768 + 1e-9)
    floor = float(np.percentile(level, 5))
    if floor > -45:
        return None
    loud = np.flatnonzero(level > max(level.max() - 35, floor + 10))
    if len(loud) == 0:
        return None
    gaps = np.diff(loud) - 1
    return loud[0] * FRAME / RATE, (loud[-1] + 1) * FRAME / RATE, float(gaps.max(initial=0)) * FRAME / RATE


def duration_s(path: Path) -> float:
    with wave.open(str(path)) as file:
        return file.getnframes() / file.getframerate()


def prompts(cache: Path, voice: str, count: int) -> tuple[list[Prompt], int]:
    package, folder = VOICES[voice]
    files = sorted((fetch(cache, package) / "usr/share/asterisk/sounds" / folder).glob("*.wav"))
    chosen, unclean = [], 0
    usable = [f for f in files if f.name not in TUNING_CLIPS | NOT_SPEECH and 0.6 <= duration_s(f) <= 8.0]
    step = max(1, len(usable) // count)
    for file in usable[::step][:count]:
        audio = load_audio(file, sample_rate=RATE)
        bounds = speech_bounds(audio.samples[0])
        if bounds is None:
            unclean += 1
            continue
        chosen.append(Prompt(file.stem, audio.with_pts(0), *bounds))
    return chosen, unclean


def tuning_prompts() -> list[Prompt]:
    out = []
    for s in sentences():
        bounds = speech_bounds(s.audio.samples[0])
        assert bounds is not None
        out.append(Prompt(s.name, s.audio, *bounds))
    return out


async def turns(said: list[Prompt], rate: int, **options: Any) -> dict[str, Any]:
    parts, offsets = [], []
    t = 0.0
    for p in said:
        offsets.append(t)
        parts += [p.audio, silence(GAP_S)]
        t += p.audio.duration_s + GAP_S
    recording = await reply_times(at_rate(join(parts), rate), **options)
    replies = recording.times(ReplyStarted)
    latencies, missed, splits = [], [], {"< 0.30 s": [0, 0], "0.30-0.45 s": [0, 0], ">= 0.45 s": [0, 0]}
    for i, (p, t0) in enumerate(zip(said, offsets)):
        begin, end = t0 + p.start_s, t0 + p.end_s
        until = offsets[i + 1] + said[i + 1].start_s if i + 1 < len(said) else float("inf")
        during = [r for r in replies if begin <= r < end]
        after = [r for r in replies if end <= r < until]
        bucket = "< 0.30 s" if p.longest_pause_s < 0.30 else "0.30-0.45 s" if p.longest_pause_s < 0.45 else ">= 0.45 s"
        splits[bucket][0] += 1
        splits[bucket][1] += bool(during)
        if after:
            latencies.append(after[0] - end)
        else:
            missed.append(p.name)
    return {"latencies": latencies, "missed": missed, "splits": splits}


async def bargein(said: list[Prompt], rate: int) -> tuple[list[float], list[str]]:
    hello = load_audio(MEDIA / "asterisk_hello-world_8k.wav")
    lead = join([hello, silence(1.6)])  # the 6 s reply starts ~1.85 s in
    latencies, missed = [], []
    for p in said:
        recording = await reply_times(at_rate(join([lead, p.audio, silence(1.0)]), rate), long_reply)
        cuts = recording.times(Interrupt)
        if cuts:
            latencies.append(cuts[0] - (lead.duration_s + p.start_s))
        else:
            missed.append(p.name)
    return latencies, missed


async def music(cache: Path, seconds: float = 60.0) -> tuple[int, float]:
    tracks = sorted((fetch(cache, MUSIC) / "usr/share/asterisk/moh").glob("*.wav"))
    replies, total = 0, 0.0
    for track in tracks:
        audio = load_audio(track, sample_rate=RATE)
        audio = audio.slice(0, min(audio.n_samples, round(seconds * RATE))).with_pts(0)
        replies += len((await reply_times(audio)).times(ReplyStarted))
        total += audio.duration_s
    return replies, total


async def pair_replies(pairs: list[tuple[Any, Any]], gap_s: float, noise: float, **options: Any) -> list[int]:
    """Replies to each pair: the first cut at its ``end_s``, ``gap_s`` of silence, the second
    from its ``start_s``, 1 s more, plus ``noise`` (int16 rms; 0: none). One reply: one turn."""
    counts = []
    for first, second in pairs:
        audio = join([first.audio.slice(0, round(first.end_s * RATE)), silence(gap_s), second.audio.slice(round(second.start_s * RATE)), silence(1.0)])
        recording = await reply_times(with_noise(audio, level=noise) if noise else audio, **options)
        counts.append(len(recording.times(ReplyStarted)))
    return counts


async def gap_splits(pause_ms: int, gap_s: float, noise: float) -> int:
    """Extra replies over the 8 pairs of tuning sentences joined by ``gap_s`` of silence, plus ``noise``."""
    said = sentences()
    counts = await pair_replies(list(zip(said, said[1:])), gap_s, noise, algo_options=pause_options(pause_ms))
    return sum(n - 1 for n in counts)


PAIR_GAPS_S = (0.25, 0.30, 0.35, 0.40)
PAIR_NOISE = (0.0, 100.0, 300.0)  # int16 rms: digital silence, about -50 and -40 dBFS


def pause_options(pause_ms: int) -> AlgoOptions:
    """``AlgoOptions`` whose turn-end pause is ``pause_ms`` (a multiple of the 32 ms window)."""
    return AlgoOptions(audio_chunk_duration=0.1 + pause_ms / 1000)


def floor_names(floors: list[float]) -> str:
    return " / ".join("silence" if not rms else f"{20 * np.log10(rms / 32768):.0f} dBFS" for rms in floors)


def pause_sweep(voices: dict[str, tuple[list[Prompt], int]], pauses: list[int], floors: list[float]) -> None:
    """Turn latency against split turns for each turn-end pause, 8 kHz, media time."""
    buckets = ("< 0.30 s", "0.30-0.45 s", ">= 0.45 s")
    print("| pause (ms) | held-out turn latency median / p90 (s) | held-out prompts split, inner pause < 0.30 s / 0.30-0.45 s / >= 0.45 s | "
          + " | ".join(f"pairs split at a {gap:.2f} s gap: {floor_names(floors)}" for gap in PAIR_GAPS_S) + " |")
    print("| ---: | ---: | ---: |" + " ---: |" * len(PAIR_GAPS_S))
    for pause_ms in pauses:
        latencies: list[float] = []
        split = {bucket: [0, 0] for bucket in buckets}
        for voice, (said, _) in voices.items():
            if voice.startswith("tuning"):
                continue
            result = anyio.run(lambda: turns(said, RATE, algo_options=pause_options(pause_ms)))  # noqa: B023
            latencies += result["latencies"]
            for bucket in buckets:
                split[bucket][0] += result["splits"][bucket][1]
                split[bucket][1] += result["splits"][bucket][0]
        pairs = [" / ".join(f"{anyio.run(gap_splits, pause_ms, gap, rms)}/8" for rms in floors) for gap in PAIR_GAPS_S]
        print(f"| {pause_ms} | {pct(latencies, 50):.3f} / {pct(latencies, 90):.3f} | {' / '.join(f'{a}/{b}' for a, b in split.values())} | "
              f"{' | '.join(pairs)} |", flush=True)


async def early_calls(audio: AudioChunk, early_ms: int) -> tuple[list[float], int, int, bool]:
    """Head starts (decision - the early call that became the reply), early calls, replies,
    and whether the replies came at the same media times as without early calls."""
    plain = await reply_times(audio)
    early = await reply_times(audio, early_pause_ms=early_ms)
    replies = early.times(ReplyStarted)
    pending = early.times(PendingUtterance)
    heads = []
    for reply in replies:
        before = [t for t in pending if t <= reply]
        if before:
            heads.append(reply - before[-1])
    return heads, len(pending), len(replies), replies == plain.times(ReplyStarted)


def early_sweep(voices: dict[str, tuple[list[Prompt], int]], earlies: list[int]) -> None:
    """What ``early_pause_ms`` gives (head start) and costs (withdrawn early calls), 8 kHz, media time."""
    heldout = [p for voice, (said, _) in voices.items() if not voice.startswith("tuning") for p in said]
    said = sentences()
    print("| early_pause_ms | floor | head start median / p10 (s) | held-out prompts: early calls withdrawn per reply | "
          "tuning pairs: withdrawn per pair at a 0.25 / 0.30 / 0.35 / 0.40 s gap | replies at the same times |")
    print("| ---: | ---: | ---: | ---: | ---: | :---: |")
    for early_ms in earlies:
        for noise in PAIR_NOISE:
            label = {0.0: "silence", 100.0: "-50 dBFS", 300.0: "-40 dBFS"}[noise]
            heads: list[float] = []
            withdrawn, answered, same = 0, 0, True
            for voice, (prompts_, _) in voices.items():
                if voice.startswith("tuning"):
                    continue
                audio = join([part for p in prompts_ for part in (p.audio, silence(GAP_S))])
                h, calls, replies, identical = anyio.run(early_calls, with_noise(audio, level=noise) if noise else audio, early_ms)
                heads += h
                withdrawn += calls - replies
                answered += replies
                same = same and identical
            per_gap = []
            for gap in PAIR_GAPS_S:
                extra = 0
                for first, second in zip(said, said[1:]):
                    audio = join([first.audio.slice(0, round(first.end_s * RATE)), silence(gap), second.audio.slice(round(second.start_s * RATE)), silence(1.0)])
                    h, calls, replies, identical = anyio.run(early_calls, with_noise(audio, level=noise) if noise else audio, early_ms)
                    extra += calls - replies
                    same = same and identical
                per_gap.append(f"{extra / 8:.2f}")
            print(f"| {early_ms} | {label} | {pct(heads, 50):.3f} / {pct(heads, 10):.3f} | {withdrawn / answered:.3f} ({withdrawn} of {answered} prompts, {len(heldout)} said) | "
                  f"{' / '.join(per_gap)} | {'yes' if same else 'NO'} |", flush=True)


def heldout_pairs(voices: dict[str, tuple[list[Prompt], int]], pauses: list[int | None], floors: list[float]) -> None:
    """Cut turns over pairs of held-out prompts, for each turn-end pause (``None``: the default) and floor, 8 kHz, media time."""
    pairs = [(said[i], said[i + 1]) for voice, (said, _) in voices.items() if not voice.startswith("tuning") for i in range(0, len(said) - 1, 2)]
    print(f"| pause (ms) | gap | held-out pairs cut in two, {floor_names(floors)} (of {len(pairs)}) |")
    print("| ---: | ---: | ---: |")
    for pause_ms in pauses:
        options = {} if pause_ms is None else {"algo_options": pause_options(pause_ms)}
        for gap in PAIR_GAPS_S:
            cuts = [sum(n > 1 for n in anyio.run(lambda: pair_replies(pairs, gap, rms, **options))) for rms in floors]  # noqa: B023
            print(f"| {pause_ms or 'default'} | {gap:.2f} s | {' / '.join(str(n) for n in cuts)} |", flush=True)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-voice", type=int, default=60, help="prompts per voice")
    parser.add_argument("--bargein-per-voice", type=int, default=20, help="prompts per voice for the barge-in runs")
    parser.add_argument("--rates", default="8000,16000")
    parser.add_argument("--cache", default=str(heldout_cache()), help="where the sound packages are unpacked (default $FLOWRTC_HELDOUT or ~/.cache/flowrtc-heldout)")
    parser.add_argument("--pauses", default="", help="instead: turn latency against split turns for these turn-end pauses (ms, multiples of 32)")
    parser.add_argument("--pairs", action="store_true", help="instead: cut turns over pairs of held-out prompts joined by short gaps (at each of --pauses)")
    parser.add_argument("--floors", default=",".join(str(rms) for rms in PAIR_NOISE), help="--pairs and --pauses: white-noise floors, int16 rms (0: digital silence)")
    parser.add_argument("--early", default="", help="instead: what starting replies early (early_pause_ms, comma-separated) gives and costs")
    vad_option_args(parser)
    args = parser.parse_args()
    apply_vad_option_args(args)
    cache = Path(args.cache)
    rates = [int(r) for r in args.rates.split(",")]
    voices: dict[str, tuple[list[Prompt], int]] = {"tuning sentences (reference)": (tuning_prompts(), 0)}
    for voice in VOICES:
        voices[voice] = prompts(cache, voice, args.per_voice)
    pauses = [int(p) for p in args.pauses.split(",")] if args.pauses else []
    floors = [float(rms) for rms in args.floors.split(",")]
    if args.pairs:
        heldout_pairs(voices, pauses or [None], floors)  # type: ignore[list-item]
        return
    if pauses:
        pause_sweep(voices, pauses, floors)
        return
    if args.early:
        early_sweep(voices, [int(e) for e in args.early.split(",")])
        return

    print("| voice | rate | prompts (left out) | turn latency median / p90 / max (s) | missed | split, inner pause < 0.30 s | 0.30-0.45 s | >= 0.45 s | barge-in median / max (s) | no barge-in |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    every: dict[int, list[float]] = {rate: [] for rate in rates}
    every_cut: dict[int, list[float]] = {rate: [] for rate in rates}
    for voice, (said, unclean) in voices.items():
        for rate in rates:
            result = anyio.run(turns, said, rate)
            cuts, no_cut = anyio.run(bargein, said[:: max(1, len(said) // args.bargein_per_voice)][: args.bargein_per_voice], rate)
            lat = result["latencies"]
            if not voice.startswith("tuning"):
                every[rate] += lat
                every_cut[rate] += cuts
            s = result["splits"]
            print(
                f"| {voice} | {rate // 1000} kHz | {len(said)} ({unclean}) | {pct(lat, 50):.3f} / {pct(lat, 90):.3f} / {max(lat, default=float('nan')):.3f} | "
                f"{len(result['missed'])} | {s['< 0.30 s'][1]}/{s['< 0.30 s'][0]} | {s['0.30-0.45 s'][1]}/{s['0.30-0.45 s'][0]} | {s['>= 0.45 s'][1]}/{s['>= 0.45 s'][0]} | "
                f"{pct(cuts, 50):.3f} / {max(cuts, default=float('nan')):.3f} | {len(no_cut)}/{len(cuts) + len(no_cut)} |",
                flush=True,
            )
            if result["missed"] or no_cut:
                print(f"<!-- {voice} @{rate}: missed {result['missed']}, no barge-in {no_cut} -->", flush=True)
    for rate in rates:
        print(f"\nall held-out voices @{rate // 1000} kHz: turn latency median {pct(every[rate], 50):.3f} s, p90 {pct(every[rate], 90):.3f} s "
              f"over {len(every[rate])} turns; barge-in median {pct(every_cut[rate], 50):.3f} s, p90 {pct(every_cut[rate], 90):.3f} s over {len(every_cut[rate])}")
    replies, seconds = anyio.run(music, cache)
    print(f"music on hold: {replies} replies in {seconds:.0f} s ({60 * replies / seconds:.1f} per minute)")


if __name__ == "__main__":
    main()
