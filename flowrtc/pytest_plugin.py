"""pytest plugin: fixtures for testing graphs with recorded media.

Loaded automatically when flowrtc is installed (entry point ``pytest11``).

Fixtures:
    record: :func:`flowrtc.testing.arun`, to await in an async test
        (``recording = await record(graph, audio="talk.wav")``).
    record_sync: :func:`flowrtc.testing.run`, for plain tests.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from flowrtc import testing


@pytest.fixture
def record() -> Callable[..., Any]:
    """Play media through a graph faster than real time and return its Recording (async)."""
    return testing.arun


@pytest.fixture
def record_sync() -> Callable[..., Any]:
    """Play media through a graph faster than real time and return its Recording."""
    return testing.run
