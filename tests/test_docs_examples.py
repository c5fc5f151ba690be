"""Every ```python block of README.md and docs/*.md runs, offline, against what the demo writes.

Each block runs in its own subprocess, in a fresh folder holding a copy of ``demo_output/`` (made once per
module by ``sparkle-video demo``), so blocks must be self-contained. A block that needs weights, the
network, a GPU or an API key is preceded by the line ``<!-- no-test: REASON -->`` and is skipped here;
the reason is required.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*no-test:(?P<reason>.*?)-->\s*$")
FENCE = re.compile(r"^\s*```(?P<lang>[\w+-]*)")
#: The smallest demo that the examples need: two samples per theme (two subthemes each), short clips.
#: Examples must read clip lengths from the data rather than assume the demo's default 33 frames.
DEMO_ARGS = ["--per-theme", "2", "--frames", "17"]
BLOCK_TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    path: Path
    rel: str  # the file, relative to the repository root
    line: int  # 1-based line of the opening fence
    code: str
    skip_reason: str | None  # None: run it; otherwise the no-test marker's reason (may be empty: an error)

    @property
    def id(self) -> str:
        return f"{self.rel}:{self.line}"


def parse(path: Path, root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The python blocks of a Markdown file, and problems with its no-test markers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a marker waiting for its block
    fence: tuple[int, str, list[str]] | None = None
    rel = path.relative_to(root).as_posix()
    for number, line in enumerate(lines, start=1):
        if fence is not None:
            if line.strip() == "```":
                start, lang, body = fence
                if lang == "python":
                    reason = pending[1] if pending else None
                    blocks.append(Block(path, rel, start, "\n".join(body) + "\n", reason))
                    pending = None
                fence = None
            else:
                fence[2].append(line)
            continue
        match = FENCE.match(line)
        if match:
            if pending is not None and match["lang"] != "python":
                pending = None  # a marker before a block that never runs (bash...) changes nothing
            fence = (number, match["lang"], [])
            continue
        marker = MARKER.match(line.strip())
        if marker:
            if pending is not None:
                problems.append(f"{rel}:{pending[0]}: no-test marker not followed by a python block")
            pending = (number, marker["reason"].strip())
            if not pending[1]:
                problems.append(f"{rel}:{number}: no-test marker without a reason")
        elif "no-test" in line and line.strip().startswith("<!--"):
            problems.append(f"{rel}:{number}: malformed no-test marker (use `<!-- no-test: REASON -->`)")
        elif line.strip() and pending is not None:
            problems.append(f"{rel}:{pending[0]}: no-test marker not directly before a python block")
            pending = None
    if fence is not None:
        problems.append(f"{rel}:{fence[0]}: code block never closed")
    if pending is not None:
        problems.append(f"{rel}:{pending[0]}: no-test marker at the end of the file")
    return blocks, problems


def all_blocks() -> list[Block]:
    return [block for path in DOC_FILES for block in parse(path)[0]]


def test_parser_finds_blocks_and_markers(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n```python\na = 1\n```\n\n<!-- no-test: needs weights -->\n```python\nb = 2\n```\n"
        "```bash\n```python\n```\n<!-- no-test: -->\n```python\nc = 3\n```\n<!-- no-test: stray -->\nprose\n"
    )
    blocks, problems = parse(doc, root=tmp_path)
    assert [(b.line, b.code, b.skip_reason) for b in blocks] == [
        (2, "a = 1\n", None),
        (7, "b = 2\n", "needs weights"),
        (14, "c = 3\n", ""),
    ]
    assert problems == [
        "x.md:13: no-test marker without a reason",
        "x.md:17: no-test marker not directly before a python block",
    ]


def test_no_test_markers_are_well_formed() -> None:
    problems = [p for path in DOC_FILES for p in parse(path)[1]]
    assert problems == []


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("docs-demo") / "demo_output"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "sparkle_video.cli", "demo", "--out", str(out), *DEMO_ARGS]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=BLOCK_TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("block", all_blocks(), ids=lambda b: b.id)
def test_docs_example_runs(block: Block, demo_output: Path, tmp_path: Path) -> None:
    if block.skip_reason is not None:
        assert block.skip_reason, f"{block.id}: a no-test marker needs a reason"
        pytest.skip(f"no-test: {block.skip_reason}")
    shutil.copytree(demo_output, tmp_path / "demo_output")
    script = tmp_path / "example.py"
    script.write_text(block.code, encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    env.pop("HF_TOKEN", None)
    result = subprocess.run(
        [sys.executable, script.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=BLOCK_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"the example at {block.id} failed (line numbers below count from the block's first line):\n"
        f"{result.stderr[-4000:]}"
    )
