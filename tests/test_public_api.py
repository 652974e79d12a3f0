"""The public surface is what docs/api.md says: every name resolves and is documented."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import flowrtc

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
ENTRY = re.compile(r"^- `([A-Za-z_][A-Za-z0-9_]*)`")


def documented_names() -> list[str]:
    return [match.group(1) for line in API_DOC.read_text().splitlines() if (match := ENTRY.match(line))]


def test_all_is_exactly_the_documented_surface() -> None:
    documented = documented_names()
    assert len(documented) == len(set(documented)), "a name is listed twice in docs/api.md"
    missing_from_docs = set(flowrtc.__all__) - set(documented)
    missing_from_all = set(documented) - set(flowrtc.__all__)
    assert not missing_from_docs, f"exported but not in docs/api.md: {sorted(missing_from_docs)}"
    assert not missing_from_all, f"in docs/api.md but not exported: {sorted(missing_from_all)}"


def test_all_is_sorted_and_unique() -> None:
    assert flowrtc.__all__ == sorted(set(flowrtc.__all__))


@pytest.mark.parametrize("name", sorted(flowrtc.__all__))
def test_every_public_name_resolves_and_has_a_docstring(name: str) -> None:
    value = getattr(flowrtc, name)
    doc = inspect.getdoc(value)
    assert doc and doc.strip(), f"flowrtc.{name} has no docstring"


def test_star_import_gives_the_surface() -> None:
    namespace: dict[str, object] = {}
    exec("from flowrtc import *", namespace)
    assert set(flowrtc.__all__) <= set(namespace)


def test_fastrtc_names_are_all_there() -> None:
    # Every name FastRTC's documentation imports that flowrtc serves (Gradio's WebRTC component,
    # fastphone and TURN helpers excepted).
    fastrtc = {
        "Stream", "StreamHandler", "AsyncStreamHandler", "AudioVideoStreamHandler", "AsyncAudioVideoStreamHandler",
        "StreamHandlerBase", "VideoStreamHandler", "ReplyOnPause", "ReplyOnStopWords", "AlgoOptions", "SileroVadOptions",
        "AdditionalOutputs", "CloseStream", "WebRTCError", "wait_for_item", "audio_to_bytes", "audio_to_file",
        "aggregate_bytes_to_16bit", "async_aggregate_bytes_to_16bit", "get_current_context", "get_stt_model", "get_tts_model",
    }
    assert fastrtc <= set(flowrtc.__all__)
