"""The data commands: info, preview, pack, export and demo, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkle_video import VideoReader, load_sparkle
from sparkle_video.cli import main


def test_info_json(train_folder, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = train_folder
    assert main(["info", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 6
    assert stats["themes"]["location"] == {"count": 3, "subthemes": {"rural": 1, "urban": 2}}
    assert stats["themes"]["openve3m"]["subthemes"] == {"-": 1}
    assert main(["info", str(root)]) == 0
    assert "total" in capsys.readouterr().out


def test_preview_png_and_mp4(train_folder, tmp_path: Path) -> None:
    root, _ = train_folder
    sid = "Sparkle_season_000001"
    assert main(["preview", str(root), "--id", sid, "--out", str(tmp_path / "p.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "p.png"))
    assert sheet.shape[0] > 2 * 160 and sheet.shape[2] == 3  # banner + a row per video
    assert main(["preview", str(root), "--id", sid, "--out", str(tmp_path / "p.mp4")]) == 0
    r = VideoReader(tmp_path / "p.mp4")
    assert r.num_frames == 9 and r.width > 2 * r.height * 0.9
    assert main(["preview", str(root), "--id", "Sparkle_season_999999", "--out", str(tmp_path / "x.png")]) == 1


def test_missing_source_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nowhere")]) == 1
    assert "source is neither" in capsys.readouterr().err


def test_demo_pack_export(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-theme", "1", "--frames", "9"]) == 0
    ds = load_sparkle(out / "sparkle")
    assert len(ds) == 4 and sorted(p.name for p in (out / "previews").glob("*.mp4")) == sorted(
        f"{i}.mp4" for i in ds["id"]
    )
    assert (out / "previews" / f"{ds[0]['id']}.png").exists()
    assert main(["pack", str(out / "sparkle"), str(tmp_path / "packed"), "--themes", "time"]) == 0
    assert sorted(p.name for p in (tmp_path / "packed").glob("*.tar")) == [
        "time_edited_video_part00.tar", "time_source_video_part00.tar"
    ]
    assert main(["export", str(out / "sparkle"), str(tmp_path / "k.csv"), "--format", "kiwi-csv"]) == 0
    assert (tmp_path / "k.csv").read_text().splitlines()[0] == "src_video,tgt_video,prompt"
