"""Tuning sentence pairs cut at the 448 ms pause over quiet white-noise floors (-70 to -50 dBFS).

Needs ``tail-rule.diff`` applied (it adds ``set_vad_options`` and ``vad(tail_db=)``).
Run from the repository root: ``python benchmarks/experiments/tail-rule/floors.py 40|off``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/

import bench_heldout  # noqa: E402
from bench_turns import set_vad_options  # noqa: E402

FLOORS = {-70: 10.4, -65: 18.4, -60: 32.8, -55: 58.3, -50: 100.0}  # dBFS: int16 rms of the noise


def main() -> None:
    set_vad_options(tail_db=None if sys.argv[1] == "off" else float(sys.argv[1]))
    print("gap | pairs cut (of 8) over " + " / ".join(f"{db} dBFS" for db in FLOORS))
    for gap in (0.25, 0.30, 0.35):
        cuts = [anyio.run(bench_heldout.gap_splits, 448, gap, rms) for rms in FLOORS.values()]
        print(f"{gap:.2f} s | {' / '.join(str(n) for n in cuts)}", flush=True)


if __name__ == "__main__":
    main()
