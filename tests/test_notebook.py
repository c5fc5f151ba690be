"""Notebook use: inline HTML for readers and rows (bounded, lazy), readable reprs, quiet loading, exports."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import pack, write_bench

from sparkle_video import VideoReader, load_sparkle, load_sparkle_bench, write_video
from sparkle_video.data.export import export_hub_folder
from sparkle_video.data.display import HTML_MAX_BYTES
from sparkle_video.data.preview import show

DATA_URI = re.compile(r'src="data:(video/mp4|image/png|image/jpeg);base64,([A-Za-z0-9+/=]+)"')


def payloads(html: str) -> list[tuple[str, bytes]]:
    return [(kind, base64.b64decode(data)) for kind, data in DATA_URI.findall(html)]


def test_reader_html_is_a_playable_small_video(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(81, 360, 640, 3), dtype=np.uint8)  # worst case for the encoder
    write_video(noise, tmp_path / "noise.mp4", fps=16, crf=10, preset="ultrafast")
    reader = VideoReader(tmp_path / "noise.mp4")
    assert (tmp_path / "noise.mp4").stat().st_size > 2 * HTML_MAX_BYTES
    html = reader._repr_html_()
    assert len(html) < HTML_MAX_BYTES + 1000
    (kind, data), *_ = payloads(html)
    if kind == "video/mp4":
        inline = VideoReader(data)
        assert inline.num_frames >= 8 and inline.height <= 144 and inline.get_frames([0]).shape[-1] == 3
    else:
        from io import BytesIO

        from PIL import Image

        assert Image.open(BytesIO(data)).height <= 144


def test_row_html_shows_prompt_and_both_videos_lazily(train_folder) -> None:
    root, info = train_folder
    ds = load_sparkle(root, progress=False)
    row = ds[0]
    preview = show(row)
    assert row["source_video"].frames_decoded == 0 and row["edited_video"].frames_decoded == 0
    html = preview._repr_html_()
    assert info[row["id"]]["prompt"] in html and row["id"] in html
    kinds = [kind for kind, _ in payloads(html)]
    assert kinds == ["video/mp4", "video/mp4"] and len(html) < 2 * HTML_MAX_BYTES + 2000
    assert "source video" in html and "edited video" in html


def test_bench_row_html_has_the_reference_image(tmp_path: Path) -> None:
    write_bench(tmp_path, {"style": 1})
    row = load_sparkle_bench(tmp_path, progress=False)[0]
    assert [kind for kind, _ in payloads(show(row)._repr_html_())] == ["video/mp4", "image/jpeg"]


@pytest.mark.parametrize("streaming", [False, True])
def test_tar_member_repr_names_member_and_id(train_folder, tmp_path: Path, streaming: bool) -> None:
    root, _ = train_folder
    pack(root, tmp_path, per_shard=5)
    row = next(r for r in load_sparkle(tmp_path, streaming=streaming) if r["id"] == "Sparkle_location_000001")
    text = repr(row["edited_video"])
    assert "location_edited_video_part00.tar" in text
    assert "location/edited_video/Sparkle_location_000001.mp4" in text


def test_progress_false_silences_datasets_bars(train_folder, capfd: pytest.CaptureFixture[str]) -> None:
    root, _ = train_folder
    capfd.readouterr()
    load_sparkle(root, progress=False)
    assert "Generating train split" not in capfd.readouterr().err
    load_sparkle(root)
    assert "Generating train split" in capfd.readouterr().err


def test_load_sparkle_reads_a_hub_export(train_folder, tmp_path: Path) -> None:
    root, _ = train_folder
    export_hub_folder(root, tmp_path / "hub", progress=False)
    original = load_sparkle(root, progress=False)
    exported = load_sparkle(tmp_path / "hub", progress=False)
    assert exported.column_names == original.column_names
    assert sorted(exported["id"]) == sorted(original["id"])
    by_id = {r["id"]: r for r in exported}
    for row in original:
        got = by_id[row["id"]]
        assert {k: got[k] for k in ("prompt", "subtheme", "scene", "original_scene")} == {
            k: row[k] for k in ("prompt", "subtheme", "scene", "original_scene")
        }
        assert got["source_video"].read_bytes() == row["source_video"].read_bytes()
    assert load_sparkle(tmp_path / "hub", themes="season", progress=False)["id"][:] == [
        "Sparkle_season_000000",
        "Sparkle_season_000001",
    ]
    streamed = list(load_sparkle(tmp_path / "hub", streaming=True, ids=["Sparkle_location_000002"]))
    assert [r["id"] for r in streamed] == ["Sparkle_location_000002"]
    assert streamed[0]["edited_video"].get_frames([0]).shape == (1, 48, 64, 3)
