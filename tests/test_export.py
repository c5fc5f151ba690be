"""Kiwi-Edit CSVs and Hub-ready folders that plain ``datasets.load_dataset`` loads with playable videos."""

from __future__ import annotations

import csv
from pathlib import Path

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard

from sparkle_video import VideoReader
from sparkle_video.export import export_hub_folder, export_kiwi_csv
from sparkle_video.synthetic import make_demo_records
from sparkle_video.writer import write_sparkle


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-src")
    recs = make_demo_records(num_per_theme=2, themes=("location", "time"), num_frames=9, height=64, width=96,
                             intermediates=False)
    write_sparkle(recs, root, overwrite=True, progress=False)
    return root


def test_kiwi_csv(dataset_root: Path, tmp_path: Path) -> None:
    n = export_kiwi_csv(dataset_root, tmp_path / "train.csv")
    rows = list(csv.DictReader((tmp_path / "train.csv").read_text().splitlines()))
    assert n == 4 and list(rows[0]) == ["src_video", "tgt_video", "prompt"]
    assert rows[0]["src_video"] == "location/source_video/Sparkle_location_000000.mp4"
    export_kiwi_csv(dataset_root, tmp_path / "rel.csv", base_path=dataset_root.parent, themes=["time"])
    rows = list(csv.DictReader((tmp_path / "rel.csv").read_text().splitlines()))
    assert len(rows) == 2
    assert rows[1]["tgt_video"] == f"{dataset_root.name}/time/edited_video/Sparkle_time_000001.mp4"
    assert (dataset_root.parent / rows[1]["tgt_video"]).exists()


def test_hub_folder_loads_with_plain_load_dataset(dataset_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "hub"
    export_hub_folder(dataset_root, out)
    card = DatasetCard.load(out / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["location", "time", "all"]
    ds = datasets.load_dataset(str(out), "location", split="train")
    assert ds["id"] == ["Sparkle_location_000000", "Sparkle_location_000001"]
    assert ds[0]["subtheme"] == "urban" and ds[0]["theme"] == "location"
    row = ds[1]
    original = VideoReader(dataset_root / "location/edited_video/Sparkle_location_000001.mp4")
    played = VideoReader(row["edited_video"])
    assert isinstance(row["edited_video"], bytes)
    np.testing.assert_array_equal(played.get_frames(None), original.get_frames(None))
    everything = datasets.load_dataset(str(out), "all", split="train")
    assert sorted(everything["theme"]) == ["location", "location", "time", "time"]
