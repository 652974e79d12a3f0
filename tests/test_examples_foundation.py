"""The runnable example and the Python blocks of docs/architecture.md and docs/testing.md work as written."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "unit_test_operator.py"
DOCS = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "testing.md"]
EXTERNAL = "<!-- requires: external -->"


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line, code)`` of every ```python block not marked as needing something external."""
    lines = path.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            end = lines.index("```", index + 1)
            if not (index and lines[index - 1].strip() == EXTERNAL):
                blocks.append((index + 1, "\n".join(lines[index + 1 : end]) + "\n"))
            index = end
        index += 1
    return blocks


DOC_BLOCKS = [(path, line, code) for path in DOCS for line, code in python_blocks(path)]


def test_the_docs_have_python_blocks() -> None:
    assert {path.name for path, _, _ in DOC_BLOCKS} == {"architecture.md", "testing.md"}
    assert len(DOC_BLOCKS) >= 8


@pytest.mark.parametrize(("path", "line", "code"), DOC_BLOCKS, ids=[f"{p.name}:{line}" for p, line, _ in DOC_BLOCKS])
def test_doc_block_runs_as_is(path: Path, line: int, code: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exec(compile(code, f"{path}:{line}", "exec"), {"__name__": "__main__"})


def test_example_runs_as_a_script() -> None:
    result = subprocess.run([sys.executable, "-W", "error", str(EXAMPLE)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok  test_") == 3
    assert "  0.26 s  SpeechStarted" in result.stdout and "  1.00 s  SpeechStopped" in result.stdout


def test_example_tests_pass_when_imported() -> None:
    spec = importlib.util.spec_from_file_location("unit_test_operator", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tests = [getattr(module, name) for name in dir(module) if name.startswith("test_")]
    assert len(tests) == 3
    for test in tests:
        test()
