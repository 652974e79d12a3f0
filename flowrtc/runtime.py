"""Process-wide settings for a server that runs many real-time sessions.

A busy flowrtc process makes and drops tens of thousands of small objects a
second (frames, futures, events). CPython's cyclic garbage collector then runs
a young-generation pass every 700 net allocations and, now and then, a full
pass over every object in the process, libraries included: on a 500-session
phone server that was about 12 % of the event loop's time, with full passes of
up to 170 ms that every session heard as a stall.

:func:`tune_gc_for_serving` is what flowrtc's own entry points (``Stream.launch``,
``flowrtc run``, ``flowrtc demo``) call before they serve; call it yourself when
you run the ASGI app under your own server. Nothing here is done on import.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc_for_serving", "GC_YOUNG_THRESHOLD"]

#: Net allocations between young-generation collections while serving (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc_for_serving(young_threshold: int = GC_YOUNG_THRESHOLD) -> None:
    """Set the garbage collector up for a long-running media server.

    * ``gc.freeze()``: every object alive now (modules, the app, the loaded
      models) moves to a permanent generation that full collections skip; a
      server's startup objects live as long as the process anyway.
    * a young-generation threshold of ``young_threshold`` net allocations
      (never lowered): a frame's objects usually die before a collection sees
      them, so fewer survive into the older generations that cost most to scan.

    Reference cycles are still collected. Safe to call more than once.
    """
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, young_threshold), middle, old)
