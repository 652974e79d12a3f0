"""Turn-taking: latency, sentence gaps, barge-in, CPU per session and concurrency.

Run: ``python benchmarks/bench_turns.py [--only turns,bargein,cpu,concurrency] [--runs 3] [--rise-db off] [--tail-db off]``

Everything is measured on the real recordings in tests/media, with the
ground-truth speech segments of tests/media/LICENSE.md, cut into sentences and
joined with silences of chosen lengths:

* **turns** (media time, deterministic): turn latency = the reply's start
  (the Utterance's media time) - the end of the ground-truth speech; replies to
  the IVR prompt (sentence gaps 0.10-0.25 s); extra replies when two sentences are
  joined by a gap of g seconds; replies to monkeys, silence and white noise.
  Each at 8, 16 and 48 kHz input, at default settings.
* **bargein** (media time): a 6 s reply is playing; the user starts a sentence:
  latency = ``Interrupt.media_time_s`` - the ground-truth start of that sentence.
* **cpu**: CPU seconds (``time.process_time``, all threads) per second of audio
  per session, for the whole ``ReplyOnPause`` graph with an echo reply, over N
  concurrent sessions fed as fast as they take it; median of ``--runs``.
* **concurrency**: N sessions each fed one 20 ms frame every 20 ms of wall time
  for ``--seconds`` (starts spread over the first second, each at a random place
  in the conversation); lag = wall time a frame reaches the pause gate - its due time,
  over the steady part (1 s to ``--seconds``, every session connected). A session
  count keeps up when the mean lag is < 20 ms and the lag of the last quarter is
  no more than 20 ms above the first.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterable, AsyncIterator, Callable

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowrtc.events import Interrupt, ReplyStarted, Utterance  # noqa: E402
from flowrtc.graph import Graph  # noqa: E402
from flowrtc.handlers.reply_on_pause import ReplyOnPause  # noqa: E402
from flowrtc.media import AudioChunk  # noqa: E402
from flowrtc.operators import decode, encode, interrupt, operator, pause_gate, reply, scoped, vad  # noqa: E402
from flowrtc.operators.pause_gate import turn_settings  # noqa: E402
from flowrtc.runtime import tune_gc_for_serving  # noqa: E402
from flowrtc.session import Session  # noqa: E402
from flowrtc.testing import arun, audio_frames, load_audio  # noqa: E402

MEDIA = ROOT / "tests" / "media"
RATE = 8000
#: Ground-truth speech (s), from tests/media/LICENSE.md (Silero v6 on the original clips).
GROUND_TRUTH = {
    "asterisk_hello-world_8k.wav": [(0.19, 1.40)],
    "asterisk_demo-thanks_8k.wav": [(0.26, 1.12), (1.25, 5.37)],
    "asterisk_basic-pbx-ivr-main_8k.wav": [
        (0.10, 6.43), (6.63, 13.63), (13.73, 16.48), (16.61, 19.97), (20.10, 22.65), (22.82, 25.15),
    ],
}
IVR = "asterisk_basic-pbx-ivr-main_8k.wav"
MONKEYS = "asterisk_tt-monkeys_8k_nonspeech.wav"
RATES = (8000, 16000, 48000)
DEBUG_SECONDS = False
GAPS_S = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.75, 1.00)


class Sentence:
    """One ground-truth speech segment, cut at the middle of the gaps around it."""

    def __init__(self, name: str, audio: AudioChunk, speech: tuple[float, float]) -> None:
        self.name = name
        self.audio = audio  # at 8 kHz
        self.start_s, self.end_s = speech  # within ``audio``


def sentences() -> list[Sentence]:
    out = []
    for file, segments in GROUND_TRUTH.items():
        clip = load_audio(MEDIA / file)
        for i, (start, end) in enumerate(segments):
            lo = 0.0 if i == 0 else (segments[i - 1][1] + start) / 2
            hi = clip.duration_s if i == len(segments) - 1 else (end + segments[i + 1][0]) / 2
            piece = clip.slice(round(lo * RATE), round(hi * RATE))
            out.append(Sentence(f"{file.split('_')[1]}#{i}", piece.with_pts(0), (start - lo, end - lo)))
    return out


def silence(seconds: float) -> AudioChunk:
    return AudioChunk.silence(seconds, RATE)


def join(parts: list[AudioChunk]) -> AudioChunk:
    return AudioChunk.concat(parts, pts=0)


def at_rate(audio: AudioChunk, rate: int) -> AudioChunk:
    if rate == audio.sample_rate:
        return audio
    from flowrtc.operators.resample import Resampler

    converter = Resampler(rate)
    return AudioChunk.concat([*converter.push(audio), *converter.flush()], pts=0)


def with_noise(audio: AudioChunk, level: float = 100.0, seed: int = 0) -> AudioChunk:
    """Add a white-noise floor (``level`` int16 rms, about -50 dBFS): a room, not digital silence."""
    noise = np.random.default_rng(seed).normal(0, level, audio.samples.shape)
    mixed = np.clip(audio.samples.astype(np.float64) + noise, -32768, 32767).astype(np.int16)
    return AudioChunk(mixed, audio.sample_rate, audio.pts)


def quiet(audio: tuple[int, np.ndarray]) -> Any:
    """A reply that says nothing (its ReplyStarted marks the turn)."""
    return None


def long_reply(audio: tuple[int, np.ndarray]) -> Any:
    for _ in range(12):
        yield 24000, np.full(12000, 3000, np.int16)  # 6 s in all


#: Options every ``vad`` this benchmark builds gets (``set_vad_options``).
VAD_OPTIONS: dict[str, Any] = {}


def set_vad_options(**options: Any) -> None:
    """Make every ``ReplyOnPause`` and ``vad`` of this process use these ``vad`` options
    (``rise_db``: the resume hold; ``tail_db``: the pause counted from where the sound died away)."""
    import functools

    import flowrtc.handlers.reply_on_pause as module
    from flowrtc.operators import turn_taking

    VAD_OPTIONS.update(options)
    module.turn_taking = functools.partial(turn_taking, **VAD_OPTIONS)  # type: ignore[attr-defined]
    print("vad options: " + ", ".join(f"{k}={'off' if v is None else v}" for k, v in VAD_OPTIONS.items()), flush=True)


def vad_option_args(parser: Any) -> None:
    """``--rise-db`` and ``--tail-db``: dB, or ``off``; by default the library's."""
    parser.add_argument("--rise-db", default="", help="vad's resume hold for this run: dB, or 'off' (default: the library's)")
    parser.add_argument("--tail-db", default="", help="vad's pause counted from the sound's fall by this many dB, or 'off' (default: the library's)")


def apply_vad_option_args(args: Any) -> None:
    for name in ("rise_db", "tail_db"):
        value = getattr(args, name)
        if value:
            set_vad_options(**{name: None if value == "off" else float(value)})


async def reply_times(audio: AudioChunk, fn: Callable[..., Any] = quiet, **options: Any) -> Any:
    return await arun(ReplyOnPause(fn, **options), audio=audio)


# -- turns -----------------------------------------------------------------------------------


async def bench_turns() -> dict[str, Any]:
    said = sentences()
    rows: dict[str, Any] = {}
    latencies: list[float] = []
    extra_in_short_gaps = 0
    for rate in RATES:
        for noisy in (False, True):
            parts, ends = [], []
            t = 0.0
            for s in said:
                parts += [s.audio, silence(1.2)]
                ends.append(t + s.end_s)
                t += s.audio.duration_s + 1.2
            audio = join(parts)
            if noisy:
                audio = with_noise(audio)
            recording = await reply_times(at_rate(audio, rate))
            started = recording.times(ReplyStarted)
            assert len(started) == len(ends), (rate, noisy, started)
            latencies += [s - e for s, e in zip(started, ends)]
        ivr = await reply_times(at_rate(join([load_audio(MEDIA / IVR), silence(1.0)]), rate))
        rows[f"ivr replies @{rate}"] = len(ivr.times(ReplyStarted))
        for name, audio in (
            ("monkeys", load_audio(MEDIA / MONKEYS)),
            ("silence", silence(10.0)),
            ("noise", AudioChunk(np.random.default_rng(1).normal(0, 3000, (1, RATE * 10)).astype(np.int16), RATE)),
        ):
            rows[f"{name} replies @{rate}"] = len((await reply_times(at_rate(audio, rate))).times(ReplyStarted))
        for gap in GAPS_S:
            extra = 0
            for first, second in zip(said, said[1:]):
                a = first.audio.slice(0, round(first.end_s * RATE))
                b = second.audio.slice(round(second.start_s * RATE))
                recording = await reply_times(at_rate(join([a, silence(gap), b, silence(1.0)]), rate))
                extra += len(recording.times(ReplyStarted)) - 1
            rows[f"extra replies, gap {gap:.2f} s @{rate}"] = extra
            if gap <= 0.25:
                extra_in_short_gaps += extra
    rows["turn latency median s"] = statistics.median(latencies)
    rows["turn latency p90 s"] = float(np.percentile(latencies, 90))
    rows["turn latency max s"] = max(latencies)
    rows["turns measured"] = len(latencies)
    rows["extra replies in gaps <= 0.25 s"] = extra_in_short_gaps
    return rows


async def bench_bargein() -> dict[str, Any]:
    said = sentences()
    hello = load_audio(MEDIA / "asterisk_hello-world_8k.wav")
    latencies: list[float] = []
    uninterrupted = 0
    for rate in RATES:
        for s in said:
            lead = join([hello, silence(1.6)])  # the 6 s reply starts ~1.85 s in
            audio = join([lead, s.audio, silence(1.0)])
            start = lead.duration_s + s.start_s
            recording = await reply_times(at_rate(audio, rate), long_reply)
            (cut,) = recording.times(Interrupt)
            latencies.append(cut - start)
            calm = await reply_times(at_rate(audio, rate), long_reply, can_interrupt=False)
            uninterrupted += not calm.times(Interrupt)
    return {
        "barge-in latency median s": statistics.median(latencies),
        "barge-in latency max s": max(latencies),
        "barge-ins measured": len(latencies),
        "can_interrupt=False runs without Interrupt": f"{uninterrupted}/{len(latencies)}",
    }


# -- sweep: how the defaults were chosen ---------------------------------------------------------


async def _detect(audio: AudioChunk, min_speech_ms: float, min_silence_ms: float) -> list[Any]:
    async def frames() -> AsyncIterator[AudioChunk]:
        for frame in audio_frames(audio):
            yield frame

    gate = pause_gate(min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms)
    return [item async for item in (vad(min_speech_ms=min_speech_ms, min_silence_ms=min_silence_ms, **VAD_OPTIONS) | gate)(frames())]


async def bench_sweep() -> list[dict[str, Any]]:
    """Candidate (min_speech_ms, min_silence_ms) on the same inputs as ``turns``, 8 kHz."""
    from flowrtc.events import SpeechStarted

    said = sentences()
    parts, starts, ends = [], [], []
    t = 0.0
    for s in said:
        parts += [s.audio, silence(1.2)]
        starts.append(t + s.start_s)
        ends.append(t + s.end_s)
        t += s.audio.duration_s + 1.2
    talks = [join(parts), with_noise(join(parts))]
    pairs = {
        gap: [
            join([a.audio.slice(0, round(a.end_s * RATE)), silence(gap), b.audio.slice(round(b.start_s * RATE)), silence(1.0)])
            for a, b in zip(said, said[1:])
        ]
        for gap in (0.25, 0.30, 0.35)
    }
    monkeys = {rate: at_rate(load_audio(MEDIA / MONKEYS), rate) for rate in (8000, 48000)}
    rows = []
    for speech_ms in (128, 160, 192):
        for silence_ms in (352, 384, 416, 448, 480, 512):
            turn_lat, start_lat = [], []
            for talk in talks:
                items = await _detect(talk, speech_ms, silence_ms)
                turn_lat += [u.media_time_s - e for u, e in zip([i for i in items if isinstance(i, Utterance)], ends)]
                start_lat += [x.media_time_s - b for x, b in zip([i for i in items if isinstance(i, SpeechStarted)], starts)]
            extra = {}
            for gap, inputs in pairs.items():
                extra[gap] = 0
                for audio in inputs:
                    found = await _detect(audio, speech_ms, silence_ms)
                    extra[gap] += len([i for i in found if isinstance(i, Utterance)]) - 1
            false_starts = {}
            for rate, audio in monkeys.items():
                found = await _detect(audio, speech_ms, silence_ms)
                false_starts[rate] = len([i for i in found if isinstance(i, SpeechStarted)])
            rows.append(
                {
                    "min_speech_ms": speech_ms,
                    "min_silence_ms": silence_ms,
                    "turn median": statistics.median(turn_lat),
                    "turn max": max(turn_lat),
                    "start median": statistics.median(start_lat),
                    "extra@0.25": extra[0.25],
                    "extra@0.30": extra[0.30],
                    "extra@0.35": extra[0.35],
                    "monkeys@8k": false_starts[8000],
                    "monkeys@48k": false_starts[48000],
                }
            )
    return rows


# -- cpu ---------------------------------------------------------------------------------------


def echo(audio: tuple[int, np.ndarray]) -> Any:
    yield audio


def conversation(rate: int) -> AudioChunk:
    parts: list[AudioChunk] = []
    for file in ("asterisk_hello-world_8k.wav", "asterisk_demo-thanks_8k.wav", IVR):
        parts += [load_audio(MEDIA / file), silence(1.0)]
    return at_rate(join(parts), rate)


async def _one_session(graph: Graph, frames: list[AudioChunk]) -> None:
    async with Session(graph) as session:

        async def feed() -> None:
            for frame in frames:
                await session.send(frame)
            await session.end_input()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            async for _ in session:
                pass


async def _cpu_run(make_graph: Callable[[], Graph], frames: list[AudioChunk], sessions: int) -> float:
    await _one_session(make_graph(), frames[:200])  # load the model, warm the engine
    tune_gc_for_serving()  # as Stream.launch and flowrtc run do before serving
    cpu = time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(sessions):
            tg.start_soon(_one_session, make_graph(), frames)
    return time.process_time() - cpu


def bench_cpu(runs: int, sessions: int) -> list[tuple[str, float]]:
    phone = ReplyOnPause(echo, input_sample_rate=8000, output_sample_rate=8000)
    configs: list[tuple[str, int, Callable[[], Graph]]] = [
        ("8 kHz in, fn at 8 kHz, out 8 kHz (phone)", 8000, lambda: phone.copy().graph()),
        ("the same graph, VAD inline (batched=False)", 8000, lambda: phone_graph(batched=False)),
        ("48 kHz in, defaults (fn 48 kHz, out 24 kHz)", 48000, lambda: ReplyOnPause(echo).graph()),
        ("8 kHz in, defaults (fn 48 kHz, out 24 kHz)", 8000, lambda: ReplyOnPause(echo).graph()),
    ]
    rows = []
    for label, rate, make_graph in configs:
        audio = conversation(rate)
        frames = audio_frames(audio)
        results = []
        for _ in range(runs):
            cpu = run_async(_cpu_run(make_graph, frames, sessions))
            results.append(cpu / (sessions * audio.duration_s))
        rows.append((label, statistics.median(results)))
    return rows


# -- concurrency -------------------------------------------------------------------------------


@operator
async def _probe(source: AsyncIterable[Any], *, clock: Callable[[], float], lags: list[float]) -> AsyncIterator[Any]:
    """Record how late each audio frame reaches this point (wall time - due time)."""
    async with scoped(source) as items:
        async for item in items:
            if isinstance(item, AudioChunk):
                lags.append(clock() - item.pts / item.sample_rate)
            yield item


def phone_graph(*, batched: bool, lags: list[float] | None = None, clock: Callable[[], float] | None = None, engine: Any = None) -> Graph:
    """ReplyOnPause's graph at 8 kHz phone settings, with an optional lag probe after the VAD."""  # mirrors ReplyOnPause.graph
    s = turn_settings()
    detector = vad(threshold=s.threshold, min_speech_ms=s.min_speech_ms, min_silence_ms=s.min_silence_ms, batched=batched, engine=engine, **VAD_OPTIONS)
    if lags is not None and clock is not None:
        detector = detector | _probe(clock=clock, lags=lags)
    pipe = (
        decode()
        | detector
        | pause_gate(speech_pad_ms=s.speech_pad_ms, min_speech_ms=s.min_speech_ms, min_silence_ms=s.min_silence_ms)
        | reply(echo, sample_rate=8000, output_sample_rate=8000, layout="mono")
        | interrupt()
        | encode(sample_rate=8000, frame_ms=20)
    )
    return Graph(audio=pipe)


async def _realtime(sessions: int, seconds: float, batched: bool, engine: Any = None) -> tuple[float, float, float, float]:
    """Run ``sessions`` phone graphs in real time; return mean lag, p99 lag, lag growth, cores used.

    Like callers on a real server, sessions start at random moments within the
    first second and at random places in the conversation (so their turns do not
    all end at once); their output is taken as it comes, as a transport takes
    it into its own playout queue. Lags count over the steady part of the run,
    while every session is connected (from 1 s to ``seconds``): not the ramp-up,
    and not the end, where every session's last turn is answered at once.
    """
    frames = audio_frames(conversation(8000))
    frame_s = frames[0].duration_s
    n_frames = round(seconds / frame_s)
    runs: list[tuple[float, list[float]]] = []  # (start offset, lag of each frame) per session
    loop = asyncio.get_running_loop()

    async def one(offset_s: float, first: int) -> None:
        await asyncio.sleep(offset_s)
        t0 = loop.time()
        lags: list[float] = []
        runs.append((t0 - start, lags))
        graph = phone_graph(batched=batched, lags=lags, clock=lambda: loop.time() - t0, engine=engine)
        async with Session(graph) as session:

            async def feed() -> None:
                for k in range(n_frames):
                    delay = t0 + k * frame_s - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    frame = frames[(first + k) % len(frames)]
                    await session.send(frame.with_pts(k * frame.n_samples))
                await session.end_input()

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                async for _ in session:  # a transport takes output at once into its own playout queue
                    pass

    await _one_session(ReplyOnPause(echo, input_sample_rate=8000, output_sample_rate=8000).graph(), frames[:100])  # load the model
    tune_gc_for_serving()  # as Stream.launch and flowrtc run do before serving
    cpu = time.process_time()
    wall = time.perf_counter()
    start = loop.time()
    async with anyio.create_task_group() as tg:
        for _ in range(sessions):
            tg.start_soon(one, random.random(), random.randrange(len(frames)))
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    # (due time in the run, lag) of every frame due while all sessions were connected
    steady = sorted(
        (offset + k * frame_s, lag)
        for offset, lags in runs
        for k, lag in enumerate(lags[:n_frames])
        if 1.0 <= offset + k * frame_s < seconds
    )
    lags = [lag for _, lag in steady]
    quarter = max(1, len(steady) // 4)
    first = statistics.mean(lags[:quarter])
    last = statistics.mean(lags[-quarter:])
    if DEBUG_SECONDS:
        per_second = [statistics.mean(lag for due, lag in steady if t <= due < t + 1) * 1000 for t in range(1, int(seconds))]
        print("    mean lag per second (ms):", " ".join(f"{x:.0f}" for x in per_second))
    return statistics.mean(lags), float(np.percentile(lags, 99)), last - first, cpu_share


LOOP = "uvloop"


def run_async(coro: Any) -> Any:
    """Run ``coro`` on the event loop named by ``LOOP`` (``uvloop``, what uvicorn picks, or ``asyncio``)."""
    if LOOP == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def cpu_available(seconds: float = 0.5) -> float:
    """Share of one core a busy thread of this process gets now (other processes compete on a shared box)."""
    wall, cpu = time.perf_counter(), time.thread_time()
    while time.perf_counter() - wall < seconds:
        sum(range(1000))
    return (time.thread_time() - cpu) / (time.perf_counter() - wall)


def bench_concurrency(counts: list[int], seconds: float, batched: bool, runs: int) -> list[tuple[int, float, float, float, float, bool]]:
    rows = []
    for count in counts:
        share = cpu_available()
        results = [run_async(_realtime(count, seconds, batched)) for _ in range(runs)]
        mean = statistics.median(r[0] for r in results)
        p99 = statistics.median(r[1] for r in results)
        growth = statistics.median(r[2] for r in results)
        cores = statistics.median(r[3] for r in results)
        keeps_up = mean < 0.020 and growth < 0.020
        rows.append((count, mean, p99, growth, cores, keeps_up))
        print(f"  {LOOP:7s} {'batched' if batched else 'inline '} N={count:4d}: mean lag {mean * 1000:7.1f} ms, p99 {p99 * 1000:7.1f} ms, "
              f"growth {growth * 1000:+7.1f} ms, CPU used {cores:.2f} cores (a busy thread got {share:.2f} of a core) "
              f"-> {'keeps up' if keeps_up else 'falls behind'}", flush=True)
        if not keeps_up and growth > 1.0:
            break
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="turns,bargein,cpu,concurrency", help="any of sweep,turns,bargein,cpu,concurrency")
    vad_option_args(parser)
    parser.add_argument("--runs", type=int, default=3, help="runs per CPU / concurrency point (median)")
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions for the CPU runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="wall seconds per concurrency point")
    parser.add_argument("--counts", default="200,300,400,500,600,700,800")
    parser.add_argument("--inline-counts", default="25,50,100,150,200")
    parser.add_argument("--loop", default="uvloop,asyncio", help="event loops to measure cpu and concurrency on")
    args = parser.parse_args()
    apply_vad_option_args(args)
    global LOOP
    only = set(args.only.split(","))
    if "sweep" in only:
        print("sweep (8 kHz, vad | pause_gate; latencies in s; extra replies over 8 sentence pairs):")
        rows = anyio.run(bench_sweep)
        print("  " + " | ".join(f"{key:>13s}" for key in rows[0]))
        for row in rows:
            print("  " + " | ".join(f"{v:13.3f}" if isinstance(v, float) else f"{v:13d}" for v in row.values()))
    if "turns" in only:
        print("turns (media time, default settings, inputs at 8/16/48 kHz, silence and -50 dBFS noise floor):")
        for key, value in anyio.run(bench_turns).items():
            print(f"  {key:42s} {value:.3f}" if isinstance(value, float) else f"  {key:42s} {value}")
    if "bargein" in only:
        print("barge-in (media time, 6 s reply playing, sentences at 8/16/48 kHz):")
        for key, value in anyio.run(bench_bargein).items():
            print(f"  {key:42s} {value:.3f}" if isinstance(value, float) else f"  {key:42s} {value}")
    for LOOP in args.loop.split(","):
        if "cpu" in only:
            print(f"CPU per session ({args.sessions} concurrent sessions, echo reply, {LOOP}, median of {args.runs} runs):")
            for label, value in bench_cpu(args.runs, args.sessions):
                print(f"  {label:46s} {value:.5f} CPU s per audio s")
        if "concurrency" in only:
            print(f"concurrency (20 ms frames in real time, {args.seconds:.0f} s, 8 kHz phone graph, {LOOP}, median of {args.runs} runs):")
            batched = bench_concurrency([int(c) for c in args.counts.split(",")], args.seconds, True, args.runs)
            inline = bench_concurrency([int(c) for c in args.inline_counts.split(",")], args.seconds, False, args.runs)
            best = max((row[0] for row in batched if row[5]), default=0)
            best_inline = max((row[0] for row in inline if row[5]), default=0)
            print(f"  {LOOP}: sessions that keep up: batched {best}, inline {best_inline}")


if __name__ == "__main__":
    main()
