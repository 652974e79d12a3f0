"""``flowrtc.runtime.tune_gc_for_serving``: what flowrtc's own servers do to the garbage collector."""

from __future__ import annotations

import gc

from flowrtc.runtime import GC_YOUNG_THRESHOLD, tune_gc_for_serving


def test_tuning_freezes_the_startup_heap_and_raises_the_young_threshold_only() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, before[1], before[2])
        tune_gc_for_serving()
        assert gc.get_freeze_count() > 1000  # modules, the app, loaded libraries
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        gc.set_threshold(50_000, before[1], before[2])
        tune_gc_for_serving()
        assert gc.get_threshold()[0] == 50_000  # never lowered

        class Node:
            def __init__(self) -> None:
                self.me = self

        Node()  # a reference cycle made after the freeze is still collected
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
