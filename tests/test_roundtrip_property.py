"""What the library writes, it reads back: arbitrary Unicode text through every writer and reader.

Prompts, keywords and artefact records hold every line-separator code point, NUL, RTL marks, emoji
(surrogate pairs once JSON-escaped), 10 KB strings and arbitrary text. A fast test checks the JSONL/CSV
text round trip on many examples; an end-to-end one writes datasets (``write_sparkle``, which the
generation pipeline writes through, ``write_sparkle_bench``, ``pack_shards``, ``export_kiwi_csv``,
``export_hub_folder``) and reads them back with ``load_sparkle``, ``load_sparkle_bench`` and
``SparkleArtifacts``. Derandomized, so every CI run checks the same examples.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from conftest import clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparkle_video import load_sparkle, load_sparkle_bench, write_video
from sparkle_video.data.artifacts import SparkleArtifacts
from sparkle_video.data.export import export_hub_folder, export_kiwi_csv
from sparkle_video.data.layout import TRAIN_CSV_COLUMNS
from sparkle_video.data.records import read_csv_rows, read_jsonl
from sparkle_video.data.writer import (
    SampleRecord,
    _csv_text,
    _jsonl_text,
    pack_shards,
    write_sparkle,
    write_sparkle_bench,
)

#: Every code point some line splitter treats as a line end, plus NUL, RTL/LTR marks and a BOM.
SPECIAL = [
    "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
    "\x00", "\u200f", "\u200e", "\u202e", "\ufeff", "\U0001f389", "\U0001f468\u200d\U0001f469", '"', ",", "\\",
]  # fmt: skip

piece = st.one_of(
    st.sampled_from(SPECIAL),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),  # any code point but lone surrogates
)
text = st.lists(piece, max_size=10).map("".join)
long_text = st.one_of(text, st.builds(lambda t: (t or "x") * (10_000 // max(1, len(t or "x"))), text))


def keyword_part(core: str) -> str:
    """A keyword half that survives ``"subtheme: scene"`` parsing: no ``": "`` and no edge whitespace."""
    return "k" + core.replace(": ", ":") + "k"


SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
}


@settings(max_examples=300, **SETTINGS)
@given(prompts=st.lists(long_text, min_size=1, max_size=4))
def test_jsonl_and_csv_text_round_trip(prompts: list[str]) -> None:
    records = [
        {"id": f"id{i}", "prompt": p, "metadata": {"original_scene": p[::-1]}} for i, p in enumerate(prompts)
    ]
    assert read_jsonl(_jsonl_text(records), "m.jsonl") == {r["id"]: r for r in records}
    for line in _jsonl_text(records).split("\n")[:-1]:
        assert line.splitlines() == [line]  # escaped: even a splitlines() reader sees one record per line
    rows = [
        {"prompt": p, "src_video": "a", "tgt_video": "b", "task": f"id{i}"} for i, p in enumerate(prompts)
    ]
    assert read_csv_rows(_csv_text(TRAIN_CSV_COLUMNS, rows), "p.csv", TRAIN_CSV_COLUMNS) == rows


@pytest.fixture(scope="module")
def mp4() -> bytes:
    buf = io.BytesIO()
    write_video(clip(3, 2, 16, 16), buf, fps=16)
    return buf.getvalue()


def test_streaming_reads_back_every_special_code_point(mp4: bytes, tmp_path: Path) -> None:
    """Streaming shares the readers above; one dataset with every special code point checks it too."""
    prompts = ["".join(SPECIAL), "\r", "\u2028" * 3, "x\x85y" * 2000]
    records = [
        SampleRecord(
            id=f"Sparkle_time_{n:06d}",
            theme="time",
            prompt=p,
            source=mp4,
            edited=mp4,
            chosen_keyword="k: a\u2029s",
        )
        for n, p in enumerate(prompts)
    ]
    write_sparkle(records, tmp_path / "f", progress=False)
    pack_shards(tmp_path / "f", tmp_path / "s", progress=False)
    got = {r["id"]: (r["prompt"], r["scene"]) for r in load_sparkle(tmp_path / "s", streaming=True)}
    assert got == {r.id: (r.prompt, "a\u2029s") for r in records}


@settings(max_examples=20, **SETTINGS)
@given(
    prompts=st.lists(long_text, min_size=1, max_size=3),
    subtheme=text.map(keyword_part),
    scene=text.map(keyword_part),
    scene_text=text,
)
def test_every_writer_reads_back(
    mp4: bytes, prompts: list[str], subtheme: str, scene: str, scene_text: str
) -> None:
    keyword = f"{subtheme}: {scene}"
    score = {"editscore": {"O_score": 9.0}, "note": scene_text}
    records = [
        SampleRecord(
            id=f"Sparkle_location_{n:06d}",
            theme="location",
            prompt=p,
            source=mp4,
            edited=mp4,
            chosen_keyword=keyword,
            original_scene=scene_text,
            scores={"edited_video_score": score},
        )
        for n, p in enumerate(prompts)
    ]
    expected = {r.id: (r.prompt, subtheme, scene, scene_text) for r in records}

    def rows(ds) -> dict[str, tuple]:
        return {r["id"]: (r["prompt"], r["subtheme"], r["scene"], r["original_scene"]) for r in ds}

    with tempfile.TemporaryDirectory() as tmp:
        folder, shards, hub = Path(tmp, "folder"), Path(tmp, "shards"), Path(tmp, "hub")
        write_sparkle(records, folder, progress=False)
        assert rows(load_sparkle(folder, progress=False)) == expected
        pack_shards(folder, shards, progress=False, include_intermediates=True)
        assert rows(load_sparkle(shards, progress=False)) == expected
        export_hub_folder(folder, hub, progress=False)
        assert rows(load_sparkle(hub, progress=False)) == expected
        for root in (folder, shards):
            arts = SparkleArtifacts(root)
            assert arts.get(records[0].id, "edited_video_score") == {"id": records[0].id, **score}
        kiwi = Path(tmp, "kiwi.csv")
        assert export_kiwi_csv(folder, kiwi) == len(records)
        with open(kiwi, newline="", encoding="utf-8") as f:
            assert [r["prompt"] for r in csv.DictReader(f)] == [r.prompt for r in records]

        bench = [
            SampleRecord(
                id=f"Sparkle_style_{10_000 + n:06d}",
                theme="style",
                prompt=p,
                source=mp4,
                chosen_keyword=keyword,
                original_scene=scene_text,
            )
            for n, p in enumerate(prompts)
        ]
        write_sparkle_bench(bench, Path(tmp, "bench"), progress=False)
        got = rows(load_sparkle_bench(Path(tmp, "bench"), progress=False))
        assert got == {r.id: (r.prompt, subtheme, scene, scene_text) for r in bench}
