"""Composable async stream operators.

Every operator is an async generator made pipeable with :func:`operator`:
``source | decode() | resample(16000) | encode(sample_rate=48000)``.
"""

from flowrtc.operators.codec import decode, encode, mulaw_decode, mulaw_encode
from flowrtc.operators.core import Flow, Pipe, identity, operator, scoped
from flowrtc.operators.handler import handler, iterate_call, normalize_output
from flowrtc.operators.interrupt import interrupt
from flowrtc.operators.pace import pace
from flowrtc.operators.pause_gate import pause_gate, turn_settings, turn_taking
from flowrtc.operators.rechunk import rechunk
from flowrtc.operators.reply import Reply, reply
from flowrtc.operators.resample import resample
from flowrtc.operators.vad import vad

__all__ = [
    "Flow",
    "Pipe",
    "Reply",
    "decode",
    "encode",
    "handler",
    "identity",
    "interrupt",
    "iterate_call",
    "mulaw_decode",
    "mulaw_encode",
    "normalize_output",
    "operator",
    "pace",
    "pause_gate",
    "rechunk",
    "reply",
    "resample",
    "scoped",
    "turn_settings",
    "turn_taking",
    "vad",
]
