"""Shared fixtures: the asyncio backend for anyio tests and the recorded clips in tests/media."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from flowrtc.media import AudioChunk
from flowrtc.testing import load_audio

MEDIA_DIR = Path(__file__).parent / "media"

# Real recordings (see tests/media/LICENSE.md): mono 16-bit PCM at 8 kHz.
HELLO = "asterisk_hello-world_8k.wav"  # 1.40 s, "Hello world."
THANKS = "asterisk_demo-thanks_8k.wav"  # 5.52 s, two phrases
IVR = "asterisk_basic-pbx-ivr-main_8k.wav"  # 25.39 s IVR prompt
MONKEYS = "asterisk_tt-monkeys_8k_nonspeech.wav"  # 16.18 s, no speech
CLIPS = (HELLO, THANKS, IVR, MONKEYS)


@functools.lru_cache(maxsize=None)
def load_clip(name: str, sample_rate: int | None = None) -> AudioChunk:
    """A clip from tests/media as one int16 AudioChunk (cached: chunks are immutable)."""
    return load_audio(MEDIA_DIR / name, sample_rate=sample_rate)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def media_dir() -> Path:
    """The folder of real recordings used by the tests."""
    return MEDIA_DIR


@pytest.fixture(scope="session")
def clip() -> Callable[..., AudioChunk]:
    """``clip(name, sample_rate=None)`` loads a recording from tests/media."""
    return load_clip


@pytest.fixture(scope="session")
def hello() -> AudioChunk:
    """The clip "Hello world.": 1.40 s at 8 kHz."""
    return load_clip(HELLO)


@pytest.fixture(scope="session")
def thanks() -> AudioChunk:
    """The 5.52 s "Goodbye. Thank you for trying out..." prompt at 8 kHz."""
    return load_clip(THANKS)


def junk(rng: np.random.Generator, depth: int = 0) -> Any:
    """A random JSON value: the wrong type wherever a client can put one."""
    kind = int(rng.integers(0, 8 if depth < 2 else 5))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(0, 2))
    if kind == 2:
        return [int(rng.integers(-(2**40), 2**40)), -1, 0, 10**30, 1e308, -0.5][int(rng.integers(0, 6))]
    if kind == 3:
        return ["", "x" * int(rng.integers(1, 300)), "é\u0000\ud7ff", "start", "media", "A" * 4 + "=" * 3][int(rng.integers(0, 6))]
    if kind == 4:
        return float(rng.normal())
    if kind == 5:
        return [junk(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    return {str(junk(rng, depth + 1))[:20]: junk(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))}
