"""Speed of the bundled speech models: STT real-time factor, TTS time to first audio and real-time factor.

    python benchmarks/bench_models.py [--runs 5]

RTF is processing time divided by audio duration (lower is faster; 0.1 means 10x faster than real
time). Every figure is the median of ``--runs`` runs after one warm-up run; model load time is shown
separately. Needs the ``stt`` and ``tts`` extras.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import wave
from pathlib import Path

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flowrtc.models.stt import get_stt_model  # noqa: E402
from flowrtc.models.tts import HibariTTSOptions, get_tts_model  # noqa: E402

MEDIA = ROOT / "tests" / "media"
CLIPS = ["asterisk_hello-world_8k.wav", "asterisk_demo-thanks_8k.wav", "asterisk_basic-pbx-ivr-main_8k.wav"]
TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "On a cold morning in March, twelve people waited at the station for a train that never came."
)


def load_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path)) as w:
        return w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def bench_stt(runs: int) -> list[tuple[str, ...]]:
    t0 = time.perf_counter()
    model = get_stt_model()
    load = time.perf_counter() - t0
    rows = [("STT load whisper/tiny.en (int8, 1 thread)", "", f"{load * 1e3:.0f} ms", "", "")]
    for name in CLIPS:
        rate, audio = load_wav(MEDIA / name)
        duration = len(audio) / rate
        model.stt((rate, audio))  # warm-up
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model.stt((rate, audio))
            times.append(time.perf_counter() - start)
        t = statistics.median(times)
        rows.append((f"STT {name} @ {rate} Hz", f"{duration:.2f} s", f"{t * 1e3:.0f} ms", "", f"{t / duration:.3f}"))
    return rows


def bench_tts(runs: int) -> list[tuple[str, ...]]:
    t0 = time.perf_counter()
    model = get_tts_model()
    load = time.perf_counter() - t0
    rows = [("TTS load hibari (1 thread, with warm-up)", "", f"{load * 1e3:.0f} ms", "", "")]
    opts = HibariTTSOptions(seed=0)

    def sync_run() -> tuple[float, float, float]:
        start = time.perf_counter()
        first = None
        samples = 0
        for rate, chunk in model.stream_tts_sync(TEXT, opts):
            if first is None:
                first = time.perf_counter() - start
            samples += len(chunk)
        return first or 0.0, time.perf_counter() - start, samples / rate

    async def async_run() -> tuple[float, float, float]:
        start = time.perf_counter()
        first = None
        samples = 0
        async for rate, chunk in model.stream_tts(TEXT, opts):
            if first is None:
                first = time.perf_counter() - start
            samples += len(chunk)
        return first or 0.0, time.perf_counter() - start, samples / rate

    for label, run in (("stream_tts_sync", sync_run), ("stream_tts (async)", lambda: anyio.run(async_run))):
        run()  # warm-up
        results = [run() for _ in range(runs)]
        first = median_ms([r[0] for r in results])
        total = statistics.median(r[1] for r in results)
        duration = results[0][2]
        rows.append(
            (
                f"TTS {label}, 3 sentences",
                f"{duration:.2f} s",
                f"{total * 1e3:.0f} ms",
                f"{first:.0f} ms",
                f"{total / duration:.3f}",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per row (the median is shown)")
    args = parser.parse_args()
    rows = bench_stt(args.runs) + bench_tts(args.runs)
    header = ("what", "audio", "time (median)", "first audio", "RTF")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()


# -- the speech operators (stt, tts) and ReplyOnStopWords -------------------------------------------
# Appended section: runs after the model table above, with the same --runs.


def bench_operators(runs: int) -> list[tuple[str, ...]]:
    """Per-turn latency of the ``stt``/``tts`` operators and the processing speed of stop-word graphs."""
    from flowrtc.events import Utterance
    from flowrtc.handlers.reply_on_stopwords import ReplyOnStopWords
    from flowrtc.media import AudioChunk
    from flowrtc.operators.resample import Resampler
    from flowrtc.operators.speech import stt, tts
    from flowrtc.testing import arun, load_audio

    async def once(items: list, pipe: object) -> tuple[float, float]:
        async def source():  # type: ignore[no-untyped-def]
            for item in items:
                yield item

        start = time.perf_counter()
        first = None
        async for _ in source() | pipe:  # type: ignore[operator]
            if first is None:
                first = time.perf_counter() - start
        return first or 0.0, time.perf_counter() - start

    def timed(items: list, make_pipe: object) -> tuple[float, float]:
        anyio.run(once, items, make_pipe())  # type: ignore[operator]  # warm-up
        results = [anyio.run(once, items, make_pipe()) for _ in range(runs)]  # type: ignore[operator]
        return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)

    rows: list[tuple[str, ...]] = []
    hello = load_audio(MEDIA / CLIPS[0], sample_rate=48000)
    utterance = Utterance(audio=hello, start_s=0.0, end_s=hello.duration_s, media_time_s=hello.duration_s)
    _, total = timed([utterance], stt)
    rows.append(("stt operator, one utterance @ 48000 Hz", f"{hello.duration_s:.2f} s", f"{total * 1e3:.0f} ms", "", f"{total / hello.duration_s:.3f}"))
    duration = get_tts_model().tts(TEXT, HibariTTSOptions(seed=0))[1].size / get_tts_model().sample_rate
    first, total = timed([TEXT], tts)
    rows.append(("tts operator, 3 sentences", f"{duration:.2f} s", f"{total * 1e3:.0f} ms", f"{first * 1e3:.0f} ms", f"{total / duration:.3f}"))

    rate = 16000
    tts_rate, samples = get_tts_model().tts("Computer.", HibariTTSOptions(seed=1))
    converter = Resampler(rate)
    computer = AudioChunk.from_tuple((tts_rate, samples)).to_int16()
    computer = AudioChunk.concat([*converter.push(computer), *converter.flush()])
    pieces = [AudioChunk.silence(0.5, rate), computer, AudioChunk.silence(1.0, rate)]
    for name in CLIPS:  # a pause after each, so each is its own turn (only the first is addressed)
        pieces += [load_audio(MEDIA / name, sample_rate=rate), AudioChunk.silence(1.0, rate)]
    talk = AudioChunk.concat([p.with_pts(0) for p in pieces])

    def reply(audio):  # type: ignore[no-untyped-def]
        yield 24000, np.zeros(12000, np.float32)

    handler = ReplyOnStopWords(reply, ["computer"], input_sample_rate=rate)
    times = []
    for _ in range(max(1, runs // 2)):
        start = time.perf_counter()
        anyio.run(lambda: arun(handler, audio=talk, trailing_silence_s=1.0))
        times.append(time.perf_counter() - start)
    total = statistics.median(times)
    rows.append(("ReplyOnStopWords graph, 'Computer.' + 3 prompts, 1 s apart", f"{talk.duration_s:.2f} s", f"{total * 1e3:.0f} ms", "", f"{total / talk.duration_s:.3f}"))
    return rows


if __name__ == "__main__":
    _parser = argparse.ArgumentParser()
    _parser.add_argument("--runs", type=int, default=5)
    _runs = _parser.parse_known_args()[0].runs
    _rows = bench_operators(_runs)
    _header = ("operator", "audio", "time (median)", "first audio", "RTF")
    _widths = [max(len(r[i]) for r in [_header, *_rows]) for i in range(len(_header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(_header, _widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in _widths) + "|")
    for _r in _rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(_r, _widths, strict=True)) + " |")
