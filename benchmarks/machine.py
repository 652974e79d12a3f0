"""How fast this (shared) machine runs Python right now: a probe to print beside every benchmark row.

The machine the benchmarks run on is shared, and its speed changes by the hour with
nothing visible inside it: the same server held 70 WebRTC peers in one spell and
fewer than 50 an hour later. :func:`speed_probe_ms` times a fixed pure-Python loop
(the median of three runs), so a row from a slow spell can be told from a slow
build. Around 125 ms is the machine at full speed; 170-200 ms is a slow spell.
"""

from __future__ import annotations

import statistics
import time

__all__ = ["speed_probe_ms"]


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def speed_probe_ms(runs: int = 3, n: int = 2_000_000) -> float:
    """Median wall time (ms) of ``runs`` runs of a fixed loop of ``n`` steps: lower is faster."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        _spin(n)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)
